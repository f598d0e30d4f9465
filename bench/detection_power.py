"""How weak a signal the platform can find, by breadth: plant a signal of known strength in a real universe's inputs
and see which models find it.

    python bench/detection_power.py                                   # tech, us29, sp500_2010; 5 rhos; 4 models
    python bench/detection_power.py --universes us29 --rhos 0.05,0.10 --models lstm,gbm,logistic --seeds 1,2,3
    python bench/detection_power.py --universes us29 --rhos 0.10 --signals volume,momentum --monitor val_rank_ic

Signal kinds (``--signals``): ``column`` (below), ``volume`` and ``momentum`` (``plant_raw_signal``: the raw volume
or the prices carry the signal and the features must find it; the data set is rebuilt from the planted universe).
``--label`` trains regressors on excess_regression / rank (classifiers keep excess); ``--monitor`` picks the torch
models' early-stopping metric. Levers: ``--seq-len`` (window length), ``--cs-norm`` (inputs z-scored per day across
tickers), ``--set FIELD=VALUE`` (model-config overrides, e.g. ``--set last_day_skip=False`` for the hybrid before
issue 38). Each torch fit prints the epoch it kept and the monitored metric by epoch.

For each universe (its own data defaults: features, window, split), the label is `excess` (the direction of the
5-day return against the day's universe mean). For each rho, one input column (the weakest selected feature) is
replaced by a day-ahead signal whose correlation with the label's excess return is rho
(`stocktrend.platform.evaluation.power.plant_signal`; the realised correlation is printed). Then hybrid and lstm
(small presets, up to 6 full epochs, early stopping on validation), gbm (the zoo's, trees picked on validation) and
logistic regression (the evaluation baseline, on flattened windows) are trained on the training segment and scored
on the untouched test segment: daily cross-sectional rank IC of the score (P(Alcista)) against the realised 5-day
return, with its Newey-West t-statistic (4 lags). A model detects rho when t > 3. Prints one row per fit and a summary
of the smallest rho each model detects at each breadth.

The oracle: the planted column itself, read at each test window's last day, used as the score on the same test days.
Its t is what the data hold at that rho; each model's **efficiency** = t(model) / t(oracle), printed per fit and as the
median over the seeds (each seed draws its own planted noise and trains its own models). For the volume kind the
oracle is z itself, which no model sees: the bars show log volume = the ticker's own log volume + z. The row
``observable`` scores what the bars show of it with no training: log volume minus its mean over the previous
OBSERVABLE_DAYS days, the ceiling a model reading volume can be measured against.
"""

from __future__ import annotations

import argparse
import os
import time

CLASSIFIER_LABELS = {"excess": "excess", "binary": "binary"}  # --label values a classifier (and logistic) trains on
OBSERVABLE_DAYS = 20  # the volume kind's observable score: log volume against its mean over this many previous days


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universes", default="tech,us29,sp500_2010")
    ap.add_argument("--rhos", default="0.01,0.02,0.03,0.05,0.10")
    ap.add_argument("--models", default="hybrid,lstm,gbm,logistic")
    ap.add_argument("--epochs", type=int, default=6, help="upper bound on epochs (torch models; early stopping, "
                    "--patience)")
    ap.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs (torch models; "
                    "`stocktrend train` uses 15 of up to 30 epochs)")
    ap.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps (torch models; `stocktrend "
                    "train` uses 4)")
    ap.add_argument("--average-halflife", type=float, default=None, help="torch models: validate, keep and score an "
                    "exponential moving average of the weights with this half-life in epochs; 0 = the raw weights "
                    "(default: the platform's, TrainConfig.average_halflife)")
    ap.add_argument("--epoch-windows", type=int, default=0, help="training windows per epoch (torch models); 0 = "
                    "every training window, as the platform trains by default (8192 capped: the lstm recovered 0.28 "
                    "of the oracle at rho 0.10 instead of 0.68, bench/README.md)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=30, help="window length in days for every model (30: what the "
                    "tables of bench/README.md were measured with unless they say otherwise); 0 = the universe's "
                    "default (5 on us29 since 2026-12-07)")
    ap.add_argument("--logistic-max", type=int, default=30000, help="training windows for logistic regression")
    ap.add_argument("--seeds", default="1", help="comma-separated: one planted signal and one fit per model each")
    ap.add_argument("--signals", default="column", help="comma-separated signal kinds: column (one input column "
                    "replaced), volume (the raw volume carries it; the features must find it), momentum "
                    "(idiosyncratic momentum planted in prices)")
    ap.add_argument("--label", default="excess", help="the data set's label for every model: excess (direction of "
                    "the excess return), binary (direction of the raw return, market included: classifiers only), "
                    "excess_regression, rank (regressors; classifiers keep excess)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a model-config override "
                    "(e.g. min_samples_leaf=200), applied to every model whose config has the field; repeatable")
    ap.add_argument("--cs-norm", action="store_true", help="a lever: every input column z-scored within each day's "
                    "cross-section (Qlib's CSZScoreNorm) before the models see it (the oracle is unchanged)")
    ap.add_argument("--monitor", default="val_loss", help="torch models' checkpoint and early-stopping metric: "
                    "val_loss | val_rank_ic")
    args = ap.parse_args()
    import ast
    sets = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not key or not value:
            ap.error(f"--set takes FIELD=VALUE, got {item!r}")
        if value.lower() in ("true", "false"):
            sets[key] = value.lower() == "true"
            continue
        try:
            sets[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            sets[key] = value
    os.environ.setdefault("STOCKTREND_HOME", os.path.expanduser("~/stocktrend-bench"))
    import logging
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.linear_model import LogisticRegression

    from dataclasses import fields, replace

    from stocktrend.models import zoo
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.data.universes import data_defaults, load_universe
    from stocktrend.platform.evaluation.cross_section import daily_ic, ic_summary, prediction_frame, score_of
    from stocktrend.platform.evaluation.power import (DETECT_T, cross_sectional_zscore, plant_raw_signal,
                                                      plant_signal)
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for
    torch.set_num_threads(os.cpu_count() or 1)
    known = {f.name for m in args.models.split(",") if m != "logistic" for f in fields(zoo.get(m).config)}
    if set(sets) - known:
        ap.error(f"--set: no model of --models {args.models} has {', '.join(sorted(set(sets) - known))}")

    def score_ic(data, score):
        rows = data.samples["test"]
        ic = ic_summary(daily_ic(prediction_frame(data, rows, score)), data.config.horizon)
        return ic["rank_ic_mean"], ic["rank_ic_t"], int(ic["days"])

    def run_model(data_by_label, model, seed):
        spec = None if model == "logistic" else zoo.get(model)
        label = spec.label_for(args.label) if spec else CLASSIFIER_LABELS.get(args.label, "excess")
        if (spec is None or spec.task(label) == "classification") and args.label not in CLASSIFIER_LABELS:
            label = "excess"  # classifiers learn the direction of the same excess return
        data = data_by_label(label)
        if args.cs_norm:
            data = replace(data, x=cross_sectional_zscore(data.x, data.dates))
        rows = data.samples["test"]
        if model == "logistic":
            train = data.samples["train"]
            if len(train) > args.logistic_max:
                train = np.sort(np.random.default_rng(0).choice(train, args.logistic_max, replace=False))
            w = data.windows(train)
            lr = LogisticRegression(C=0.05, max_iter=2000).fit(w.reshape(len(w), -1), data.targets(train))
            wt = data.windows(rows)
            return lr.predict_proba(wt.reshape(len(wt), -1))[:, 1], ""
        monitor = args.monitor if not spec.is_sklearn else "val_loss"
        # each seed trains its own models too (before 2026-12-06 every fit used seed 42: the seeds varied only the
        # planted noise, and the deterministic momentum planting not at all)
        tcfg = TrainConfig(preset="small", model=model, epochs=args.epochs, patience=args.patience,
                           accumulate=args.accumulate, seed=seed,
                           **({} if args.average_halflife is None else {"average_halflife": args.average_halflife}),
                           epoch_windows=0 if spec.is_sklearn else args.epoch_windows, progress=False,
                           monitor=monitor, monitor_mode="max" if monitor == "val_rank_ic" else "min")
        names = {f.name for f in fields(spec.config)}
        overrides = {k: v for k, v in sets.items() if k in names}
        if "seed" in names:
            overrides["seed"] = seed
        res = fit(data, tcfg, model_config_for(data, "small", model, **overrides), run_test=False)
        pred = Predictor(make_checkpoint(res.module.model, res.model_config, data, kind=model))
        out, _ = pred.predict_proba(data.windows(rows))
        path = " ".join(f"{r[monitor]:.3f}" for r in res.history if monitor in r)
        note = (f"; kept epoch {res.best_epoch + 1} of {res.epochs_run}, {monitor} by epoch: {path}"
                if not spec.is_sklearn and res.best_epoch is not None else "")
        return score_of(out, data.kind), note

    rows = []
    for universe in args.universes.split(","):
        d = data_defaults(universe)
        cfg = DataConfig(universe=universe, label_kind="excess", features=d["features"],
                         sequence_length=args.seq_len or d["sequence_length"], fractions=tuple(d["fractions"]),
                         top_k=args.top_k)
        t0 = time.perf_counter()
        base = build_dataset(cfg, n_jobs=2)
        print(f"\n{universe}: {len(base.tickers)} tickers, train {len(base.samples['train']):,} / test "
              f"{len(base.samples['test']):,} windows ({' .. '.join(base.date_range('test'))}), window "
              f"{base.seq_len} days; data {time.perf_counter() - t0:.0f} s", flush=True)
        raw = load_universe(None, None, universe=universe) if set(args.signals.split(",")) - {"column"} else None
        for signal in args.signals.split(","):
            for rho in [float(r) for r in args.rhos.split(",")]:
                for seed in [int(x) for x in args.seeds.split(",")]:
                    t0 = time.perf_counter()
                    extra_scores: dict[str, np.ndarray] = {}
                    if signal == "column":
                        data, column, realised = plant_signal(base, rho, seed=seed)
                        col = list(data.transforms.selected).index(column)
                        oracle = data.x[data.samples["test"], col]
                        where = f"column {column}"
                        # other labels: the same planted vector (same seed, same rows) in that data set's own
                        # weakest selected column (top-K selection is fitted on the label)
                        by_label = {"excess": data}

                        def data_by_label(label, by_label=by_label, rho=rho, seed=seed):
                            if label not in by_label:
                                other = build_dataset(replace(cfg, label_kind=label), n_jobs=2)
                                by_label[label] = plant_signal(other, rho, seed=seed)[0]
                            return by_label[label]
                    else:
                        planted, oracle_frame, realised = plant_raw_signal(raw, signal, rho, seed=seed,
                                                                           horizon=base.config.horizon)
                        by_label = {}

                        def data_by_label(label, planted=planted, by_label=by_label):
                            if label not in by_label:
                                by_label[label] = build_dataset(replace(cfg, label_kind=label), universe=planted,
                                                                use_cache=False, n_jobs=2)
                            return by_label[label]
                        data = data_by_label("excess")
                        test = data.samples["test"]
                        lookup = oracle_frame.stack()
                        keys = pd.MultiIndex.from_arrays([pd.DatetimeIndex(data.dates[test]),
                                                          data.ticker_of(test)])
                        oracle = lookup.reindex(keys).to_numpy(dtype=np.float64)
                        if signal == "volume":  # what the bars show of z: log volume against its own trailing mean
                            logv = np.log(pd.DataFrame({t: f["volume"] for t, f in planted.tickers.items()}
                                                       ).clip(lower=1))
                            seen = logv - logv.rolling(OBSERVABLE_DAYS, min_periods=OBSERVABLE_DAYS).mean().shift(1)
                            extra_scores["observable"] = seen.stack().reindex(keys).to_numpy(dtype=np.float64)
                        sel = [c for c in data.transforms.selected if "vol" in c] if signal == "volume" else []
                        for c in sel:  # each selected volume feature, read on the last day, as a score by itself
                            if c.startswith("volume_"):
                                j = list(data.transforms.selected).index(c)
                                extra_scores[c] = data.x[test, j].astype(np.float64)
                        where = (f"volume features selected: {', '.join(sel) or 'none'}" if signal == "volume"
                                 else "in prices")
                    print(f"  {signal} rho {rho:.2f} seed {seed}: planted (realised {realised:.3f}, {where}) in "
                          f"{time.perf_counter() - t0:.0f} s", flush=True)
                    torch.manual_seed(seed)
                    np.random.seed(seed)
                    t_oracle = None
                    for model in ["oracle", *extra_scores, *args.models.split(",")]:
                        t0 = time.perf_counter()
                        score, note = ((oracle, "") if model == "oracle" else (extra_scores[model], "")
                                       if model in extra_scores else run_model(data_by_label, model, seed))
                        ric, t, days = score_ic(data, score)
                        t_oracle = t if model == "oracle" else t_oracle
                        rows.append({"universe": universe, "breadth": len(base.tickers), "signal": signal,
                                     "rho": rho, "seed": seed, "realised": realised, "model": model,
                                     "rank_ic": ric, "t": t, "days": days,
                                     "efficiency": t / t_oracle if t_oracle else float("nan"),
                                     "detected": bool(t > DETECT_T), "seconds": time.perf_counter() - t0})
                        r = rows[-1]
                        print(f"    {model:<16} rank IC {ric:+.4f} t {t:+.2f} efficiency {r['efficiency']:.2f} "
                              f"over {days} days {'DETECTED' if r['detected'] else ''} ({r['seconds']:.0f} s{note})",
                              flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    med = (table.groupby(["universe", "signal", "rho", "model"], sort=False)
           .agg(t=("t", "median"), efficiency=("efficiency", "median"), realised=("realised", "median"),
                seeds=("seed", "nunique")).reset_index())
    print("\nmedian over seeds (efficiency = t(model) / t(oracle) on the same test days):")
    print(med.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nsmallest rho detected (t > 3):")
    for (universe, breadth, signal), g in table.groupby(["universe", "breadth", "signal"], sort=False):
        found = {m: (f"{g[(g.model == m) & g.detected].rho.min():.2f}" if (g[g.model == m].detected).any()
                     else "none") for m in g.model.unique()}
        print(f"  {universe:<11} breadth {breadth:>3} {signal:<8}: " + ", ".join(f"{m} {v}" for m, v in found.items()))


if __name__ == "__main__":
    main()
