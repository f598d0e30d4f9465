"""Search quality and cost on the embedded universe: ASHA + TPE vs an equal-trial random search without early stopping,
and the tuned config vs the preset default on validation and on the untouched test segment (with baselines).

    python bench/tune_search.py [--preset small] [--trials 6] [--max-epochs 8] [--grace-period 2]

Prints: trials per hour, trial-epochs used and the share saved by ASHA, the epochs ASHA + TPE needed to reach the
random search's best validation loss, and val/test scores of default vs tuned next to the majority class and gradient
boosting. Each search runs one trial at a time with one Ray Train worker (2-core machine).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np


def run(opts):
    from stocktrend.tune.search import run_search
    t0 = time.perf_counter()
    res = run_search(opts)
    return res, time.perf_counter() - t0


def epochs_to_reach(table, metric: str, target: float) -> int | None:
    """Trial-epochs spent, in the order trials were created (one at a time here), until a trial's best <= target."""
    spent = 0
    for _, row in table.sort_values("order").iterrows():
        spent += int(row["epochs"])
        if row[f"best_{metric}"] <= target + 1e-12:
            return spent
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=8)
    ap.add_argument("--grace-period", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import logging
    logging.basicConfig(level=logging.WARNING)
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.evaluation.metrics import baseline_probabilities, classification_scores
    from stocktrend.platform.training.local import TrainConfig, fit
    from stocktrend.tune.search import SearchOptions
    from stocktrend.models import hybrid
    from stocktrend.platform.training.local import model_config_for
    from stocktrend.tune.space import search_defaults

    stamp = int(time.time())
    base = SearchOptions(preset=args.preset, num_samples=args.trials, max_epochs=args.max_epochs,
                         grace_period=args.grace_period, register=False)
    asha, t_asha = run(replace(base, name=f"bench-asha-{stamp}"))
    rand, t_rand = run(replace(base, name=f"bench-random-{stamp}", searcher="random", scheduler="fifo"))
    full = args.trials * args.max_epochs
    print(f"\n== search cost ({args.trials} trials, max {args.max_epochs} epochs, grace {args.grace_period}) ==")
    for name, res, wall in (("ASHA + TPE", asha, t_asha), ("random, no early stop", rand, t_rand)):
        t = res["table"]
        used = int(t["epochs"].sum())
        print(f"{name:<22}: best val_loss {t['best_val_loss'].min():.4f}, trial-epochs {used}/{full} "
              f"({1 - used / full:.0%} saved), {wall:.0f} s, {len(t) / wall * 3600:.0f} trials/hour, "
              f"{int(t['stopped_early'].sum())} stopped early")
    target = rand["table"]["best_val_loss"].min()
    reach = epochs_to_reach(asha["table"], "val_loss", target)
    rand_epochs = int(rand["table"]["epochs"].sum())
    print(f"ASHA + TPE reached the random search's best ({target:.4f}): "
          + (f"after {reach} trial-epochs = {reach / rand_epochs:.2f} of random's {rand_epochs}" if reach
             else "no (its best is worse)"))

    print("\n== default vs tuned (retrained locally, same epochs) on validation and test ==")
    rows = {}
    default = search_defaults([hybrid.SPEC], args.preset)[0]
    for label, params in (("preset default", default), ("tuned (ASHA+TPE best)", asha["best_config"])):
        data = build_dataset(DataConfig(sequence_length=int(params["sequence_length"]), top_k=int(params["top_k"])))
        mcfg = hybrid.SPEC.from_params(model_config_for(data, args.preset, hybrid.SPEC), params)
        tcfg = TrainConfig(preset=args.preset, epochs=args.max_epochs, batch_size=int(params["batch_size"]),
                           lr=float(params["lr"]), max_lr=float(params["lr"]) * 5,
                           weight_decay=float(params["weight_decay"]), accumulate=1, patience=args.max_epochs,
                           progress=False)
        r = fit(data, tcfg, mcfg, run_test=False)
        import torch
        for seg in ("val", "test"):
            rows_ = data.samples[seg]
            with torch.no_grad():
                p = torch.softmax(r.module.model.eval()(torch.from_numpy(data.windows(rows_))).float(), -1).numpy()
            s = classification_scores(data.targets(rows_), p, list(data.kind.class_names), bootstrap=0)
            rows[(label, seg)] = (s["accuracy"], s["auc"], r.best_score)
        if label == "preset default":
            b = baseline_probabilities(data)
            y = data.targets(data.samples["test"])
            for k in ("majority", "gradient_boosting"):
                s = classification_scores(y, b[k], list(data.kind.class_names), bootstrap=0)
                rows[(k, "test")] = (s["accuracy"], s["auc"], float("nan"))
    for (label, seg), (acc, auc, vl) in rows.items():
        extra = f", best val_loss {vl:.4f}" if not np.isnan(vl) and seg == "val" else ""
        print(f"{label:<24} {seg:<5}: accuracy {acc:.3f}, AUC {auc:.3f}{extra}")


if __name__ == "__main__":
    main()
