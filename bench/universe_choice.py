"""Which universe should the quickstart use? The quickstart's own search on each, then walk-forward folds.

    python bench/universe_choice.py [--universes msft,tech] [--folds 3] [--epochs 10] [--trials 6] [--epoch-windows N]

For each universe: the quickstart's search (small preset, ``--trials`` trials x <= 6 epochs of ``--epoch-windows``
training windows (default: the quickstart's), ASHA, Optuna TPE, two 1-CPU trials at a time), then the best
configuration retrained from scratch on ``--folds`` expanding walk-forward folds (early stopping on each fold's
validation block). The choice is made on the mean **validation** AUC of the folds (the blocks right before each test
block), never on test. Test figures are printed next to it, pooled over the folds' test blocks: the model and the
baselines (majority, momentum, logistic regression, gradient boosting) with a bootstrap AUC interval, the backtest
Sharpe after 5 bps, and for panels the rank IC (Newey-West t) and the long-short Sharpe after costs. Takes ~2-11
minutes per universe on 2 cores.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universes", default="msft,tech")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epoch-windows", type=int, default=None,
                    help="training windows per search-trial epoch (default: the quickstart's; 0 = all)")
    args = ap.parse_args()
    os.environ.setdefault("STOCKTREND_HOME", tempfile.mkdtemp(prefix="universe-choice-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import logging
    logging.basicConfig(level=logging.WARNING)

    from stocktrend.platform.data.dataset import DataConfig, build_dataset, prepare
    from stocktrend.platform.data.universes import default_label
    from stocktrend.platform.data.splits import walk_forward_boundaries
    from stocktrend.platform.evaluation.cross_section import evaluate_panel
    from stocktrend.platform.evaluation.metrics import classification_scores
    from stocktrend.platform.evaluation.report import EvalOptions, score_all
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
    from stocktrend.platform.training.distributed import init_ray, shutdown_ray
    from stocktrend.platform.training.local import TrainConfig, fit
    from stocktrend.tune.search import SearchOptions, run_search
    from stocktrend.models import hybrid
    from stocktrend.tune.space import trial_model_config

    from stocktrend.quickstart import SEARCH_EPOCH_WINDOWS
    epoch_windows = SEARCH_EPOCH_WINDOWS if args.epoch_windows is None else args.epoch_windows
    print(f"search trials: {args.trials} x <= 6 epochs of {epoch_windows or 'all'} training windows")
    summary = {}
    for universe in args.universes.split(","):
        t0 = time.perf_counter()
        init_ray(num_cpus=None, verbose=False)
        label = default_label(universe)  # as the quickstart: excess on a panel, binary on msft
        res = run_search(SearchOptions(name=f"choice-{universe}", preset="small", num_samples=args.trials,
                                       max_epochs=6, grace_period=2, universe=universe, register=False,
                                       epoch_windows=epoch_windows, label_kind=label))
        shutdown_ray()
        best = res["best_config"]
        t_search = time.perf_counter() - t0
        base = build_dataset(DataConfig(universe=universe, sequence_length=int(best["sequence_length"]),
                                        top_k=int(best["top_k"]), label_kind=label))
        lr = float(best["lr"])
        tcfg = TrainConfig(preset="small", epochs=args.epochs, batch_size=int(best["batch_size"]), lr=lr, max_lr=lr * 5,
                           weight_decay=float(best["weight_decay"]), patience=3, progress=False)
        rows, pooled = [], {}
        for k, b in enumerate(walk_forward_boundaries(pd.DatetimeIndex(base.dates), n_folds=args.folds)):
            fold = prepare(base.panel, base.config, b)
            _, mcfg = trial_model_config(fold, "small", best, [hybrid.SPEC])
            r = fit(fold, tcfg, mcfg, run_test=False)
            h = pd.DataFrame(r.history)
            val_auc = float(h.loc[h["val_loss"].idxmin(), "val_auc"])
            pred = Predictor(make_checkpoint(r.module.model, mcfg, fold))
            p, _ = pred.predict_proba(fold.windows(fold.samples["test"]))
            scores, tests, probs = score_all(fold, p, EvalOptions(bootstrap=0))
            cs = evaluate_panel(fold, probs) if len(fold.tickers) >= 3 else None
            rows.append({"fold": k + 1, "test": "..".join(fold.date_range("test")), "val_auc": val_auc,
                         "test_auc": scores["model"]["auc"], "epochs": r.epochs_run,
                         **({"rank_ic": cs["ic"]["model"]["rank_ic_mean"]} if cs else {})})
            y = fold.targets(fold.samples["test"])
            for name, pr in probs.items():
                pooled.setdefault(name, {"y": [], "p": [], "sharpe": [], "ic": [], "ls": []})
                pooled[name]["y"].append(y)
                pooled[name]["p"].append(pr)
                pooled[name]["sharpe"].append(tests[name].sharpe)
                if cs:
                    pooled[name]["ic"].append(cs["ic"][name])
                    pooled[name]["ls"].append(cs["long_short"][name].sharpe)
        folds = pd.DataFrame(rows)
        print(f"\n== universe {universe}: search {t_search:.0f} s, best {best}", flush=True)
        print(folds.to_string(index=False))
        print(f"mean walk-forward validation AUC {folds['val_auc'].mean():.3f} (the choice); "
              f"total {time.perf_counter() - t0:.0f} s")
        print("pooled test blocks of the folds:")
        for name, d in pooled.items():
            s = classification_scores(np.concatenate(d["y"]), np.concatenate(d["p"]), list(base.kind.class_names),
                                      1000)
            line = (f"  {name:<20} acc {s['accuracy']:.3f}  AUC {s['auc']:.3f} ({s['auc_ci'][0]:.3f}-"
                    f"{s['auc_ci'][1]:.3f})  backtest Sharpe {np.mean(d['sharpe']):.2f} ± {np.std(d['sharpe']):.2f}")
            if d["ic"]:
                ric = [c["rank_ic_mean"] for c in d["ic"]]
                tt = [c["rank_ic_t"] for c in d["ic"]]
                mean_ic = "n/a (constant score)" if np.all(np.isnan(ric)) else f"{np.nanmean(ric):.3f}"
                line += (f"  rank IC {mean_ic} (t per fold {', '.join(f'{t:.2f}' for t in tt)})  "
                         f"long-short Sharpe {np.mean(d['ls']):.2f}")
            print(line, flush=True)
        summary[universe] = folds["val_auc"].mean()
    choice = max(summary, key=summary.get)
    print(f"\nchoice by mean walk-forward validation AUC: {choice} "
          f"({', '.join(f'{u} {v:.3f}' for u, v in summary.items())})")


if __name__ == "__main__":
    main()
