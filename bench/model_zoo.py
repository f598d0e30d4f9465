"""Every model of the zoo on the same data: size, training speed, and walk-forward test metrics next to the baselines.

    python bench/model_zoo.py [--universe msft] [--folds 3] [--epochs 8] [--models hybrid,lstm,...]

Small preset of each model; labels as each model needs them (binary 5-day direction; lstm_transformer regresses the
5-day return). Seconds per epoch: one fit on the default split, wall time / epochs run (2 torch threads; rf / gbm: the
one fit). Walk-forward: ``--folds`` expanding folds, each model retrained from scratch per fold (early stopping on the
fold's validation block, patience 3) and scored on its test block with the baselines of its task; mean over folds.
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import pandas as pd


def main() -> None:
    from stocktrend.models import zoo
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", default="msft")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--models", default=",".join(zoo.KINDS))
    args = ap.parse_args()
    os.environ.setdefault("STOCKTREND_HOME", tempfile.mkdtemp(prefix="model-zoo-"))
    import logging
    logging.basicConfig(level=logging.WARNING)
    import torch

    from stocktrend.platform.data.dataset import DataConfig, build_dataset, prepare
    from stocktrend.platform.data.splits import walk_forward_boundaries
    from stocktrend.platform.evaluation.regression import score_returns
    from stocktrend.platform.evaluation.report import EvalOptions, score_all
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for

    torch.set_num_threads(2)
    rows = []
    for kind in args.models.split(","):
        spec = zoo.get(kind)
        cfg = DataConfig(universe=args.universe)
        cfg = replace(cfg, label_kind=spec.label_for(cfg.label_kind))
        data = build_dataset(cfg)
        tcfg = TrainConfig(preset="small", model=kind, epochs=args.epochs, patience=3, progress=False)
        mcfg = model_config_for(data, "small", spec)
        t0 = time.perf_counter()
        r = fit(data, tcfg, mcfg, run_test=False)
        s_epoch = (time.perf_counter() - t0) / max(r.epochs_run, 1)
        params = zoo.count_parameters(r.module.model) if not spec.is_sklearn else None
        folds = []
        for b in walk_forward_boundaries(pd.DatetimeIndex(data.dates), n_folds=args.folds):
            fold = prepare(data.panel, data.config, b)
            f = fit(fold, tcfg, model_config_for(fold, "small", spec), run_test=False)
            pred = Predictor(make_checkpoint(f.module.model, f.model_config, fold, kind=spec))
            out, _ = pred.predict_proba(fold.windows(fold.samples["test"]))
            if pred.task == "regression":
                reg = score_returns(fold, out[:, 0])
                folds.append({n: s for n, s in reg["scores"].items()})
            else:
                scores, tests, _ = score_all(fold, out[:, :len(pred.class_names)], EvalOptions(bootstrap=0))
                folds.append({n: {**s, "sharpe": tests[n].sharpe} for n, s in scores.items()})
        keys = ("mae", "corr", "hit_rate") if spec.task(cfg.label_kind) == "regression" else \
            ("accuracy", "auc", "sharpe")
        for who in folds[0]:
            rows.append({"model": kind, "who": who, "params": params if who == "model" else None,
                         "s_per_epoch": s_epoch if who == "model" else None,
                         **{k: float(np.mean([f[who][k] for f in folds])) for k in keys}})
        print(pd.DataFrame([r for r in rows if r["model"] == kind]).to_string(index=False), flush=True)
    out = pd.DataFrame(rows)
    print("\n" + out.to_string(index=False))


if __name__ == "__main__":
    main()
