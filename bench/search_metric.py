"""Does a search on a panel choose better models ranking its trials by validation rank IC or by validation log loss?
(issue 38 item 3: `tune --metric val_rank_ic` becomes the panel default only if it measures better.)

For each seed: the universe's bars with a weak planted signal that the features must find (``--signal volume`` or
``momentum``, as bench/detection_power.py plants them, so the truth is known), then one search per ``--metrics``
entry with everything else equal (seed, trials, epochs, ASHA, the universe's own window and top-K as the first
trial). The best trial's registered model is scored on the untouched test days: its daily rank IC's t against the
planted signal's own t on the same days (efficiency), and its test rank IC.

    python bench/search_metric.py --signal volume --rho 0.05 --seeds 1,2,3        # lstm, 6 trials x <= 4 epochs

Prints one line per search and a median table. Runs under $STOCKTREND_HOME (default ~/stocktrend-bench-search).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--universe", default="us29")
    ap.add_argument("--signal", default="volume", choices=("volume", "momentum"))
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=4)
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--epoch-windows", type=int, default=16384, help="training windows per trial epoch (0 = all)")
    ap.add_argument("--metrics", default="val_loss,val_rank_ic")
    args = ap.parse_args()
    os.environ.setdefault("STOCKTREND_HOME", os.path.expanduser("~/stocktrend-bench-search"))
    import logging
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import pandas as pd

    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.universes import data_defaults, load_universe
    from stocktrend.platform.evaluation.cross_section import daily_ic, ic_summary, prediction_frame
    from stocktrend.platform.evaluation.power import plant_raw_signal
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.distributed import shutdown_ray
    from stocktrend.models.rank_ic import score_from_output
    from stocktrend.tune.options import SearchOptions
    from stocktrend.tune.search import run_search

    d = data_defaults(args.universe)
    cfg = DataConfig(universe=args.universe, label_kind="excess", features=d["features"],
                     sequence_length=d["sequence_length"], top_k=d["top_k"], fractions=tuple(d["fractions"]))
    raw = load_universe(None, None, universe=args.universe)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows_out = []
    try:
        for seed in [int(s) for s in args.seeds.split(",")]:
            planted, oracle_frame, realised = plant_raw_signal(raw, args.signal, args.rho, seed=seed,
                                                               horizon=cfg.horizon)
            panel = load_or_build_panel(planted, feature_set(cfg.features))
            lookup = oracle_frame.stack()
            for metric in args.metrics.split(","):
                t0 = time.perf_counter()
                opts = SearchOptions(name=f"sm-{stamp}-{args.signal}-{seed}-{metric}", preset=args.preset,
                                     model=args.model, num_samples=args.trials, max_epochs=args.max_epochs,
                                     grace_period=args.grace_period, epoch_windows=args.epoch_windows, metric=metric,
                                     seed=seed, universe=args.universe, label_kind="excess",
                                     model_name=f"sm-{metric.replace('_', '-')}")
                res = run_search(opts, panel=panel, data_config=cfg)
                pred = Predictor.load(registry.download(opts.model_name, str(res["version"]))[0])
                data = build_dataset(replace(cfg, sequence_length=pred.seq_len), universe=planted, use_cache=False,
                                     n_jobs=2).with_transforms(pred.transforms)
                test = data.samples["test"]
                out = pred.predict_proba(data.windows(test))[0]
                score = np.asarray(score_from_output(out, 0 if pred.task.is_regression else len(pred.class_names)))
                keys = pd.MultiIndex.from_arrays([pd.DatetimeIndex(data.dates[test]), data.ticker_of(test)])
                oracle = lookup.reindex(keys).to_numpy(dtype=np.float64)
                ic = ic_summary(daily_ic(prediction_frame(data, test, score)), cfg.horizon)
                ic_o = ic_summary(daily_ic(prediction_frame(data, test, oracle)), cfg.horizon)
                best = res["best_config"]
                row = {"seed": seed, "metric": metric, "realised": realised, "rank_ic": ic["rank_ic_mean"],
                       "t": ic["rank_ic_t"], "oracle_t": ic_o["rank_ic_t"],
                       "efficiency": ic["rank_ic_t"] / ic_o["rank_ic_t"], "days": int(ic["days"]),
                       "seq_len": best.get("sequence_length"), "top_k": best.get("top_k"),
                       "seconds": time.perf_counter() - t0}
                rows_out.append(row)
                print(f"  seed {seed} {metric:<12} best {best.get('sequence_length')} days x top "
                      f"{best.get('top_k')}: test rank IC {row['rank_ic']:+.4f} t {row['t']:+.2f} (oracle t "
                      f"{row['oracle_t']:+.2f}) efficiency {row['efficiency']:.2f} ({row['seconds']:.0f} s)",
                      flush=True)
    finally:
        shutdown_ray()
    table = pd.DataFrame(rows_out)
    print(f"\n{args.universe}, {args.signal} rho {args.rho}, {args.model} ({args.preset}), {args.trials} trials x <= "
          f"{args.max_epochs} epochs; median over seeds:")
    print(table.groupby("metric")[["efficiency", "rank_ic", "t", "oracle_t", "seconds"]].median().to_string(
        float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
