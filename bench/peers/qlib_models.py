"""A peer on the same data: Qlib's LSTM / ALSTM / GRU (``pytorch_*_ts``) and its LightGBM next to the platform's
models, on exactly the same `us29` features, label and date segments.

    python bench/peers/qlib_models.py                 # creates bench/peers/.venvs/qlib on first use (pyqlib 0.9.7)
    python bench/peers/qlib_models.py --epochs 2 --quick
    python bench/peers/qlib_models.py --folds 3 --inputs 50x30,8x5   # 3 walk-forward folds, two input settings

1. In the platform's environment: the us29 panel is built as the platform builds it (standard features, top-50
   selection and scaler fitted on the training segment, purged chronological 80/10/10 split) with the
   `excess_regression` label (the 5-day return minus the day's universe mean). Its scaled model inputs, the label and
   the segments' date ranges are written to Parquet. The platform's hybrid (regressing the excess return), lstm and
   gbm (classifying its direction) are trained on it and scored on the test segment.
2. In Qlib's own environment (``pip install --no-deps pyqlib==0.9.7`` plus the few packages its dataset and model
   code import; Qlib never enters the platform's dependencies): the same table goes through Qlib's
   ``StaticDataLoader`` -> ``DataHandlerLP`` (DropnaLabel + CSZScoreNorm on the label for learning, Fillna for
   inference; no Qlib data download) -> ``TSDatasetH`` (the platform's window length) / ``DatasetH`` for LightGBM,
   with the platform's train / valid / test date segments; data-loader workers 0, CPU.
   With ``--folds K`` every fold is built as ``stocktrend evaluate --walk-forward K`` builds it (selection and scaler
   fitted on the fold's training segment) and both libraries' models are retrained on each; ``--inputs`` repeats the
   whole comparison for each input setting (top-K features x window days).
3. Every model's test predictions are scored the same way: daily cross-sectional IC and rank IC against the realised
   5-day return, Newey-West t (4 lags), one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

HERE = Path(__file__).resolve().parent
QLIB_PACKAGES = [["--no-deps", "pyqlib==0.9.7"],
                 ["numpy==2.4.6", "pandas==3.1.1", "pyarrow", "ruamel.yaml", "pydantic-settings", "joblib",
                  "python-redis-lock", "requests", "packaging", "scipy", "dill", "lightgbm", "mlflow-skinny"]]


def fold_sets(args, top_k: int, seq: int) -> tuple[list, list]:
    """The folds of one input setting, for the regression label (the hybrid, Qlib's table) and the classification
    label (lstm, gbm): ``--folds 0`` the universe's 80/10/10 split, K > 0 expanding walk-forward folds
    (``walk_forward_boundaries``: the last K tenths of the days are the test blocks, each validated on the tenth
    before it); every fold's top-K selection and scaler are fitted on its own training segment."""
    import pandas as pd

    from stocktrend.platform.data.dataset import DataConfig, build_dataset, prepare
    from stocktrend.platform.data.splits import walk_forward_boundaries
    out = []
    for label in ("excess_regression", "excess"):
        data = build_dataset(DataConfig(universe=args.universe, label_kind=label, top_k=top_k, sequence_length=seq),
                             n_jobs=2)
        if args.folds == 0:
            out.append([data])
            continue
        bounds = walk_forward_boundaries(pd.DatetimeIndex(data.dates), n_folds=args.folds)
        out.append([prepare(data.panel, data.config, b) for b in bounds])
    return out[0], out[1]


def platform_side(args, reg, cls, work: Path) -> dict:
    """One fold: the platform's models trained and scored on its test segment; Qlib's table written to ``work``."""
    import numpy as np
    import pandas as pd
    import torch

    from stocktrend.models import zoo
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for
    torch.set_num_threads(os.cpu_count() or 1)
    data = reg
    seeds = [int(v) for v in args.seeds.split(",")]
    print(f"platform: {len(data.tickers)} tickers, {data.n_features} inputs x {data.seq_len} days, train "
          f"{' .. '.join(data.date_range('train'))}, valid {' .. '.join(data.date_range('val'))}, test "
          f"{' .. '.join(data.date_range('test'))}", flush=True)
    # The table Qlib reads: every row of the panel (its windows need the history), the model inputs as the platform
    # scaled and selected them, the label (NaN where unknown).
    names = data.transforms.input_names
    table = pd.DataFrame(data.x, columns=[f"f{i:02d}" for i in range(len(names))])
    table.insert(0, "instrument", data.ticker_of(np.arange(len(data.x))).astype(str))
    table.insert(0, "datetime", pd.to_datetime(data.dates))
    table["LABEL0"] = data.target_value.astype(np.float32)
    work.mkdir(parents=True, exist_ok=True)
    table.to_parquet(work / "panel.parquet", index=False)
    segments = {seg: data.date_range(seg) for seg in ("train", "val", "test")}
    (work / "segments.json").write_text(json.dumps({**segments, "seq": data.seq_len, "features": names}))
    preds = {}
    rows = data.samples["test"]
    for kind, seed in ((k, sd) for k in args.models.split(",") for sd in seeds):
        t0 = time.perf_counter()
        d = reg if kind == "hybrid" else cls  # the hybrid regresses the excess return, the others classify it
        tcfg = TrainConfig(preset="small", model=kind, epochs=args.epochs, patience=2, accumulate=1, seed=seed,
                           epoch_windows=0 if kind == "gbm" else args.epoch_windows, progress=False,
                           monitor=args.monitor)
        tcfg = tcfg.resolved(d)
        overrides = {"seed": seed} if "seed" in {f.name for f in fields(zoo.get(kind).config)} else {}
        res = fit(d, tcfg, model_config_for(d, "small", kind, **overrides), run_test=False)
        out, _ = Predictor(make_checkpoint(res.module.model, res.model_config, d, kind=kind)).predict_proba(
            d.windows(d.samples["test"]))
        score = out[:, 0] if d is reg else out[:, 1]
        preds[(f"stocktrend {kind}", seed)] = pd.DataFrame({"datetime": pd.to_datetime(d.dates[d.samples["test"]]),
                                                            "instrument": d.ticker_of(d.samples["test"]).astype(str),
                                                            "score": score})
        print(f"  stocktrend {kind} (seed {seed}): {time.perf_counter() - t0:.0f} s", flush=True)
    truth = pd.DataFrame({"datetime": pd.to_datetime(data.dates[rows]), "instrument": data.ticker_of(rows).astype(str),
                          "fwd": data.forward_return[rows]})
    return {"preds": preds, "truth": truth, "horizon": data.config.horizon}


def peer_side(work: Path, epochs: int, quick: bool) -> None:
    """Runs inside Qlib's venv: fit Qlib's models on the exported table, write their test predictions."""
    import tempfile

    import pandas as pd
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.chdir(tempfile.mkdtemp(prefix="qlib-cwd-"))  # qlib's experiment manager writes a lock file under the cwd
    import qlib
    qlib.init(provider_uri=str(work / "empty_provider"), region="us",
              exp_manager={"class": "MLflowExpManager", "module_path": "qlib.workflow.expm",
                           "kwargs": {"uri": f"file:{work / 'mlruns'}", "default_exp_name": "peer"}})
    from qlib.contrib.model.gbdt import LGBModel
    from qlib.contrib.model.pytorch_alstm_ts import ALSTM
    from qlib.contrib.model.pytorch_gru_ts import GRU
    from qlib.contrib.model.pytorch_lstm_ts import LSTM
    from qlib.data.dataset import DatasetH, TSDatasetH
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.data.dataset.loader import StaticDataLoader
    seg = json.loads((work / "segments.json").read_text())
    panel = pd.read_parquet(work / "panel.parquet")
    feats = [c for c in panel.columns if c.startswith("f")]
    df = panel.set_index(["datetime", "instrument"]).sort_index()
    df.columns = pd.MultiIndex.from_tuples([("feature", c) for c in feats] + [("label", "LABEL0")])
    handler = DataHandlerLP(data_loader=StaticDataLoader(config=df),
                            infer_processors=[{"class": "Fillna", "kwargs": {"fields_group": "feature"}}],
                            learn_processors=[{"class": "DropnaLabel"},
                                              {"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}}])
    segments = {"train": tuple(seg["train"]), "valid": tuple(seg["val"]), "test": tuple(seg["test"])}
    ts = TSDatasetH(handler=handler, segments=segments, step_len=int(seg["seq"]))
    tab = DatasetH(handler=handler, segments=segments)
    out = {}
    common = dict(d_feat=len(feats), hidden_size=64, num_layers=2, dropout=0.0, n_epochs=epochs, lr=1e-3,
                  batch_size=800, early_stop=3, GPU=-1, n_jobs=0, seed=0)
    for name, cls in (("qlib LSTM", LSTM), ("qlib ALSTM", ALSTM), ("qlib GRU", GRU)):
        t0 = time.time()
        m = cls(**common)
        m.fit(ts, save_path=str(work / f"{cls.__name__}.pt"))
        out[name] = m.predict(ts)
        print(f"  {name}: {time.time() - t0:.0f} s", flush=True)
    t0 = time.time()
    lgb = LGBModel(loss="mse", num_boost_round=50 if quick else 500, early_stopping_rounds=30, num_leaves=31,
                   learning_rate=0.05, num_threads=os.cpu_count() or 1, verbose=-1)
    lgb.fit(tab)
    out["qlib LightGBM"] = lgb.predict(tab)
    print(f"  qlib LightGBM: {time.time() - t0:.0f} s", flush=True)
    frames = []
    for name, s in out.items():
        f = s.rename("score").reset_index()
        f["model"] = name
        frames.append(f)
    pd.concat(frames).to_parquet(work / "qlib_preds.parquet", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", default="us29")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-windows", type=int, default=16384)
    ap.add_argument("--inputs", default="50x30",
                    help="comma-separated input settings, top-K features x window days (e.g. 50x30,8x5): every model, "
                         "the platform's and Qlib's, runs on each")
    ap.add_argument("--folds", type=int, default=0,
                    help="K > 0: K expanding walk-forward folds (the last K tenths of the days, each a test block); "
                         "0: the universe's 80/10/10 split")
    ap.add_argument("--models", default="hybrid,lstm,gbm", help="the platform's models")
    ap.add_argument("--monitor", default="auto", help="the platform's early stopping and kept checkpoint: auto "
                    "(val_rank_ic on a panel, the shipped default) | val_loss | val_rank_ic")
    ap.add_argument("--seeds", default="42", help="comma-separated: the platform's models train once per seed (Qlib's "
                    "with its seed 0); the tables give the median over the seeds")
    ap.add_argument("--no-qlib", action="store_true", help="the platform's models only")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 50 boosting rounds: checks the whole path")
    ap.add_argument("--peer", default=None, help=argparse.SUPPRESS)  # internal: run the Qlib side on this folder
    args = ap.parse_args()
    if args.peer:
        peer_side(Path(args.peer), args.epochs, args.quick)
        return
    if args.quick:
        args.epochs = 2
    os.environ.setdefault("STOCKTREND_HOME", os.path.expanduser("~/stocktrend-bench"))
    import logging
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(HERE))
    import _venv
    import pandas as pd

    from stocktrend.platform.evaluation.cross_section import daily_ic, ic_summary
    python = None if args.no_qlib else _venv.ensure("qlib", QLIB_PACKAGES)
    rows = []
    for setting in args.inputs.split(","):
        top_k, seq = (int(v) for v in setting.lower().split("x"))
        regs, clss = fold_sets(args, top_k, seq)
        for k, (reg, cls) in enumerate(zip(regs, clss), 1):
            print(f"\n== inputs {top_k} x {seq}, fold {k}/{len(regs)}", flush=True)
            work = HERE / ".work" / f"qlib-{args.universe}-{top_k}x{seq}-fold{k}"
            res = platform_side(args, reg, cls, work)
            preds = dict(res["preds"])
            if python is not None:
                t0 = time.perf_counter()
                r = subprocess.run([str(python), __file__, "--peer", str(work), "--epochs", str(args.epochs),
                                    *(["--quick"] if args.quick else [])], timeout=7200)
                if r.returncode:
                    raise SystemExit(f"the Qlib side failed (exit {r.returncode})")
                print(f"qlib side: {time.perf_counter() - t0:.0f} s", flush=True)
                qp = pd.read_parquet(work / "qlib_preds.parquet")
                preds.update({(m, 0): g.drop(columns="model") for m, g in qp.groupby("model", sort=False)})
            truth = res["truth"]
            for (name, seed), p in preds.items():
                f = truth.merge(p, on=["datetime", "instrument"], how="inner").rename(
                    columns={"datetime": "date", "instrument": "ticker"})
                s = ic_summary(daily_ic(f), res["horizon"])
                rows.append({"inputs": f"{top_k}x{seq}", "fold": k, "test": " .. ".join(reg.date_range("test")),
                             "model": name, "seed": seed, "predictions": len(f), "IC": s["ic_mean"], "IC t": s["ic_t"],
                             "rank IC": s["rank_ic_mean"], "rank IC t": s["rank_ic_t"], "days": int(s["days"])})
            print(pd.DataFrame(rows[-len(preds):]).to_string(index=False, float_format=lambda x: f"{x:.4f}"),
                  flush=True)
    if python is not None:
        print(f"\nversions (qlib venv): {_venv.versions(python, ['pyqlib', 'torch', 'lightgbm', 'pandas', 'numpy'])}")
    table = pd.DataFrame(rows)
    print("\nevery fold:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if table["seed"].nunique() > 1:  # the median over the seeds per fold, then the folds
        table = table.groupby(["inputs", "fold", "test", "model"], sort=False).median(numeric_only=True).reset_index()
        table[["predictions", "days"]] = table[["predictions", "days"]].astype(int)
        print("\nmedian over the seeds:")
        print(table.drop(columns="seed").to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if table["fold"].nunique() > 1:
        agg = table.groupby(["inputs", "model"], sort=False).agg(
            rank_ic_mean=("rank IC", "mean"), rank_ic_t_mean=("rank IC t", "mean"),
            folds_positive=("rank IC", lambda v: int((v > 0).sum())), ic_mean=("IC", "mean")).reset_index()
        print("\nmean over the folds (rank IC, its Newey-West t, folds with rank IC > 0, IC):")
        print(agg.to_string(index=False, float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
