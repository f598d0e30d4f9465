"""A peer on the same data: Qlib's LSTM / ALSTM / GRU (``pytorch_*_ts``) and its LightGBM next to the platform's
models, on exactly the same `us29` features, label and date segments.

    python bench/peers/qlib_models.py                 # creates bench/peers/.venvs/qlib on first use (pyqlib 0.9.7)
    python bench/peers/qlib_models.py --epochs 2 --quick

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
QLIB_PACKAGES = [["--no-deps", "pyqlib==0.9.7"],
                 ["numpy==2.4.6", "pandas==3.1.1", "pyarrow", "ruamel.yaml", "pydantic-settings", "joblib",
                  "python-redis-lock", "requests", "packaging", "scipy", "dill", "lightgbm", "mlflow-skinny"]]


def platform_side(args, work: Path) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    data = build_dataset(DataConfig(universe=args.universe, label_kind="excess_regression", top_k=args.top_k,
                                    sequence_length=args.seq), n_jobs=2)
    print(f"platform: {len(data.tickers)} tickers, {data.n_features} inputs, train {' .. '.join(data.date_range('train'))}"
          f", valid {' .. '.join(data.date_range('val'))}, test {' .. '.join(data.date_range('test'))} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    # The table Qlib reads: every row of the panel (its windows need the history), the model inputs as the platform
    # scaled and selected them, the label (NaN where unknown).
    names = data.transforms.input_names
    table = pd.DataFrame(data.x, columns=[f"f{i:02d}" for i in range(len(names))])
    table.insert(0, "instrument", data.ticker_of(np.arange(len(data.x))).astype(str))
    table.insert(0, "datetime", pd.to_datetime(data.dates))
    table["LABEL0"] = data.target_value.astype(np.float32)
    table.to_parquet(work / "panel.parquet", index=False)
    segments = {seg: data.date_range(seg) for seg in ("train", "val", "test")}
    (work / "segments.json").write_text(json.dumps({**segments, "seq": data.seq_len, "features": names}))
    preds = {}
    rows = data.samples["test"]
    for kind, label in (("hybrid", "excess_regression"), ("lstm", "excess"), ("gbm", "excess")):
        t0 = time.perf_counter()
        d = data if label == "excess_regression" else build_dataset(
            DataConfig(universe=args.universe, label_kind=label, top_k=args.top_k, sequence_length=args.seq))
        tcfg = TrainConfig(preset="small", model=kind, epochs=args.epochs, patience=2, accumulate=1,
                           epoch_windows=0 if kind == "gbm" else args.epoch_windows, progress=False)
        res = fit(d, tcfg, model_config_for(d, "small", kind), run_test=False)
        out, _ = Predictor(make_checkpoint(res.module.model, res.model_config, d, kind=kind)).predict_proba(
            d.windows(d.samples["test"]))
        score = out[:, 0] if label == "excess_regression" else out[:, 1]
        preds[f"stocktrend {kind}"] = pd.DataFrame({"datetime": pd.to_datetime(d.dates[d.samples["test"]]),
                                                    "instrument": d.ticker_of(d.samples["test"]).astype(str),
                                                    "score": score})
        print(f"  stocktrend {kind}: {time.perf_counter() - t0:.0f} s", flush=True)
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
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--seq", type=int, default=30)
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
    work = HERE / ".work" / f"qlib-{args.universe}"
    work.mkdir(parents=True, exist_ok=True)
    res = platform_side(args, work)
    python = _venv.ensure("qlib", QLIB_PACKAGES)
    t0 = time.perf_counter()
    r = subprocess.run([str(python), __file__, "--peer", str(work), "--epochs", str(args.epochs),
                        *(["--quick"] if args.quick else [])], timeout=7200)
    if r.returncode:
        raise SystemExit(f"the Qlib side failed (exit {r.returncode})")
    print(f"qlib side: {time.perf_counter() - t0:.0f} s", flush=True)
    qp = pd.read_parquet(work / "qlib_preds.parquet")
    preds = {**res["preds"], **{m: g.drop(columns="model") for m, g in qp.groupby("model", sort=False)}}
    truth = res["truth"]
    rows = []
    for name, p in preds.items():
        f = truth.merge(p, on=["datetime", "instrument"], how="inner").rename(
            columns={"datetime": "date", "instrument": "ticker"})
        s = ic_summary(daily_ic(f), res["horizon"])
        rows.append({"model": name, "test predictions": len(f), "IC": s["ic_mean"], "IC t": s["ic_t"],
                     "rank IC": s["rank_ic_mean"], "rank IC t": s["rank_ic_t"], "days": int(s["days"])})
    v = _venv.versions(python, ["pyqlib", "torch", "lightgbm", "pandas", "numpy"])
    print(f"\nversions (qlib venv): {v}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
