"""``stocktrend evaluate``: the model next to baselines on the untouched test segment, a backtest after costs,
optional walk-forward folds and the seeds'-protocol leakage audit, written as Markdown + PNG and logged to MLflow."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.platform.data.cache import default_home
from stocktrend.platform.registry.checkpoint import Predictor
from stocktrend.platform.data.dataset import PreparedData, build_dataset, prepare
from stocktrend.platform.evaluation.cross_section import (MIN_NAMES, evaluate_panel, plot_cumulative_ic,
                                                         report_lines)
from stocktrend.platform.evaluation.metrics import backtest, baseline_probabilities, classification_scores
from stocktrend.platform.training.jobs import resolve_model
from stocktrend.platform.data.splits import walk_forward_boundaries
from stocktrend.platform.training.local import TrainConfig, fit

log = logging.getLogger(__name__)

SCORE_COLS = ("accuracy", "balanced_accuracy", "f1", "auc", "mcc")


@dataclass
class EvalOptions:
    threshold: float = 0.5  # long when P(Alcista) > threshold
    cost_bps: float = 5.0  # per side
    allow_short: bool = False
    walk_forward: int = 0  # folds; 0 = off (each fold retrains the model's config)
    leakage_audit: bool = False
    epochs: int | None = None  # cap for retraining in walk-forward / audit (default: the checkpoint's)
    bootstrap: int = 1000
    universe: str | None = None  # score on another embedded universe than the model's own


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def _table(rows: dict[str, dict[str, Any]], cols: tuple[str, ...]) -> str:
    head = "| | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(_fmt(r.get(c, float('nan'))) for c in cols) + " |\n"
                          for name, r in rows.items())


def score_all(data: PreparedData, model_probs: np.ndarray, opts: EvalOptions) -> tuple[dict, dict, dict]:
    """Scores and backtests of the model and every baseline on the same test samples."""
    names = list(data.kind.class_names)
    y = data.targets(data.samples["test"])
    probs = {"model": model_probs, **baseline_probabilities(data)}
    scores = {k: classification_scores(y, p, names, opts.bootstrap if k == "model" else 200) for k, p in probs.items()}
    tests = {}
    for k, p in probs.items():
        strat, hold = backtest(data, p[:, -1], threshold=opts.threshold, cost_bps=opts.cost_bps,
                               allow_short=opts.allow_short, name=k)
        tests[k] = strat
    tests["buy_and_hold"] = hold
    return scores, tests, probs


def verdict(scores: dict[str, dict], tests: dict) -> list[str]:
    """Plain sentences: does the model beat each baseline (AUC / balanced accuracy / Sharpe after costs)?"""
    m = scores["model"]
    lines = []
    lo, hi = m["auc_ci"]
    if not np.isnan(lo) and lo <= 0.5 <= hi:
        lines.append(f"The model's test AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}) includes 0.5: no evidence "
                     f"that it ranks up and down days better than chance.")
    for name, s in scores.items():
        if name == "model":
            continue
        if m["balanced_accuracy"] <= s["balanced_accuracy"]:
            lines.append(f"The model does NOT beat the {name} baseline on balanced accuracy "
                         f"({m['balanced_accuracy']:.3f} vs {s['balanced_accuracy']:.3f}).")
        if m["accuracy"] <= s["accuracy"]:
            lines.append(f"The model does NOT beat the {name} baseline on accuracy ({m['accuracy']:.3f} vs "
                         f"{s['accuracy']:.3f}).")
    if tests["model"].sharpe <= tests["buy_and_hold"].sharpe:
        lines.append(f"After costs the signal's Sharpe ({tests['model'].sharpe:.2f}) does NOT beat buy-and-hold "
                     f"({tests['buy_and_hold'].sharpe:.2f}).")
    if not lines:
        lines.append("The model beats every baseline on accuracy and balanced accuracy and buy-and-hold on Sharpe "
                     "in this test segment; one segment is one sample of history, so check the walk-forward folds.")
    return lines


def plots(out: Path, pred: Predictor, data: PreparedData, probs: dict, scores: dict, tests: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve
    files = []
    history = pred.ckpt.get("extra", {}).get("history", [])
    if history:
        h = pd.DataFrame(history)
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for col in ("train_loss", "val_loss"):
            if col in h:
                ax[0].plot(h["epoch"], h[col], label=col)
        for col in ("train_acc", "val_acc", "val_auc"):
            if col in h:
                ax[1].plot(h["epoch"], h[col], label=col)
        for a in ax:
            a.set_xlabel("epoch")
            a.legend()
        fig.suptitle("learning curves")
        fig.tight_layout()
        fig.savefig(out / "learning_curves.png", dpi=100)
        plt.close(fig)
        files.append("learning_curves.png")
    cm = np.array(scores["model"]["confusion"])
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(cm, cmap="Blues")
    names = list(data.kind.class_names)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_title("model confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    files.append("confusion_matrix.png")
    if len(names) == 2:
        y = data.targets(data.samples["test"])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for k, p in probs.items():
            fpr, tpr, _ = roc_curve(y, p[:, 1])
            ax.plot(fpr, tpr, label=f"{k} ({scores[k]['auc']:.3f})")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
        ax.set_title("ROC (test)")
        fig.tight_layout()
        fig.savefig(out / "roc.png", dpi=100)
        plt.close(fig)
        files.append("roc.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    test_rows = data.samples["test"]
    first = test_rows[data.ticker_of(test_rows) == data.tickers[0]]
    days = pd.to_datetime(np.sort(data.dates[first]))  # the backtest's days (those of the first ticker)
    for k in ("model", "buy_and_hold", "momentum"):
        eq = tests[k].equity
        ax.plot(days[:len(eq)], eq, label=k)
    fig.autofmt_xdate()
    ax.set_xlabel("date (test segment)")
    ax.set_ylabel("growth of 1")
    ax.legend()
    ax.set_title("equity after costs vs buy-and-hold")
    fig.tight_layout()
    fig.savefig(out / "equity.png", dpi=100)
    plt.close(fig)
    files.append("equity.png")
    return files


def _retrain_config(pred: Predictor, opts: EvalOptions) -> TrainConfig:
    tc = dict(pred.ckpt.get("extra", {}).get("train_config", {}))
    tcfg = TrainConfig(**tc) if tc else TrainConfig()
    return replace(tcfg, epochs=opts.epochs or tcfg.epochs, progress=False)


def _softmax(model, windows: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        return torch.softmax(model.eval()(x).float(), -1).numpy()


def walk_forward(pred: Predictor, data: PreparedData, opts: EvalOptions) -> pd.DataFrame:
    """K folds in time order, each retrained from scratch with the model's config and scored with the baselines."""
    rows = []
    bounds = walk_forward_boundaries(pd.DatetimeIndex(data.dates), n_folds=opts.walk_forward)
    for k, b in enumerate(bounds):
        fold = prepare(data.panel, data.config, b)
        log.info("walk-forward fold %d/%d: test %s..%s", k + 1, len(bounds), *fold.date_range("test"))
        res = fit(fold, _retrain_config(pred, opts), pred.config, run_test=False)
        p = _softmax(res.module.model, fold.windows(fold.samples["test"]))
        scores, tests, probs = score_all(fold, p, replace(opts, bootstrap=0))
        cs = evaluate_panel(fold, probs, opts.cost_bps) if len(fold.tickers) >= MIN_NAMES else None
        for name, s in scores.items():
            rows.append({"fold": k + 1, "who": name, **{c: s[c] for c in SCORE_COLS},
                         "sharpe": tests[name].sharpe, "test_start": fold.date_range("test")[0],
                         **({"rank_ic": cs["ic"][name]["rank_ic_mean"], "rank_ic_t": cs["ic"][name]["rank_ic_t"],
                             "ls_sharpe": cs["long_short"][name].sharpe} if cs else {})})
    return pd.DataFrame(rows)


def leakage_audit(pred: Predictor, data: PreparedData, opts: EvalOptions) -> pd.DataFrame:
    """The same network and GBM under the honest protocol and under the seeds' (random split after oversampling)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from stocktrend.platform.evaluation.audit import seeds_protocol
    from stocktrend.platform.data.datamodule import ArrayDataModule, StockDataModule
    seeds = seeds_protocol(data)
    names = list(data.kind.class_names)
    rows = []
    for protocol, dm, test in (
            ("honest (chronological, purged)", StockDataModule(data), (data.windows(data.samples["test"]),
                                                                       data.targets(data.samples["test"]))),
            ("seeds (random split after oversampling)", ArrayDataModule(seeds), seeds["test"])):
        res = fit(data, _retrain_config(pred, opts), pred.config, run_test=False, datamodule=dm)
        p = _softmax(res.module.model, test[0])
        s = classification_scores(test[1], p, names, bootstrap=0)
        rows.append({"protocol": protocol, "who": "network", **{c: s[c] for c in SCORE_COLS}})
        x_tr, y_tr = ((data.windows(data.train_unbalanced), data.targets(data.train_unbalanced))
                      if protocol.startswith("honest") else seeds["train"])
        gb = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
        pg = gb.fit(x_tr.reshape(len(x_tr), -1), y_tr).predict_proba(test[0].reshape(len(test[0]), -1))
        s = classification_scores(test[1], pg, names, bootstrap=0)
        rows.append({"protocol": protocol, "who": "gradient_boosting", **{c: s[c] for c in SCORE_COLS}})
    return pd.DataFrame(rows)


def evaluate(spec: str, out_dir: str | Path | None = None, opts: EvalOptions | None = None,
             log_to_mlflow: bool = True) -> dict[str, Any]:
    opts = opts or EvalOptions()
    path, info = resolve_model(spec)
    pred = Predictor.load(path)
    if pred.kind.n_classes == 0:
        raise ValueError("stocktrend evaluate covers classification models; this one is a regression model")
    dcfg = pred.data_config if not opts.universe else replace(pred.data_config, universe=opts.universe, tickers=(),
                                                               data_dir=None)
    data = build_dataset(dcfg)
    if data.panel.data_hash != pred.ckpt["data_hash"]:
        log.warning("the data differ from the model's training data (hash %s vs %s): scoring on today's data",
                    data.panel.data_hash, pred.ckpt["data_hash"])
    data = data.with_transforms(pred.transforms)  # always the checkpoint's own scaler and features
    model_probs, _ = pred.predict_proba(data.windows(data.samples["test"]))
    scores, tests, probs = score_all(data, model_probs, opts)

    out = Path(out_dir) if out_dir else default_home() / "reports" / f"{spec.replace('@', '-').replace('/', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    files = plots(out, pred, data, probs, scores, tests)
    counts = data.class_counts("test")
    lines = [f"# stocktrend evaluation: {spec}", "",
             f"Model: {pred.ckpt['model_config']['conv_filters']} conv filters, LSTM {pred.config.lstm_hidden}x"
             f"{pred.config.lstm_layers}; trained on {', '.join(pred.ckpt['tickers'])} (data hash "
             f"{pred.ckpt['data_hash']}); label {pred.kind.value}, horizon {pred.data_config.horizon} days, "
             f"window {pred.seq_len} days.", "",
             f"Test segment: {data.date_range('test')[0]} .. {data.date_range('test')[1]}, "
             f"{len(data.samples['test'])} windows ({', '.join(f'{k} {v}' for k, v in counts.items())}); never used "
             f"for training, model selection or fitting transforms.", "", "## Verdict", "",
             *[f"- {v}" for v in verdict(scores, tests)], "", "## Classification (test segment)", "",
             _table({k: {**v, "auc 95% CI": f"{v['auc_ci'][0]:.3f}-{v['auc_ci'][1]:.3f}"} for k, v in scores.items()},
                    (*SCORE_COLS, "auc 95% CI")), "",
             "Per-class precision / recall of the model: " + "; ".join(
                 f"{n}: {v['precision']:.3f} / {v['recall']:.3f}" for n, v in scores["model"]["per_class"].items()),
             "", f"## Backtest (test days, {opts.cost_bps:g} bps per side, long when P(Alcista) > {opts.threshold}"
             f"{', short otherwise' if opts.allow_short else ', flat otherwise'})", "",
             _table({k: v.row() for k, v in tests.items()},
                    ("annual_return", "sharpe", "max_drawdown", "win_rate", "turnover", "exposure")), ""]
    result: dict[str, Any] = {"scores": scores, "backtest": {k: v.row() for k, v in tests.items()}}
    if len(data.tickers) >= MIN_NAMES:
        cs = evaluate_panel(data, probs, opts.cost_bps)
        lines += report_lines(cs)
        plot_cumulative_ic(cs, out / "cumulative_ic.png")
        files.append("cumulative_ic.png")
        result["cross_section"] = {"ic": cs["ic"], "long_short": {k: v.row() for k, v in cs["long_short"].items()}}
    if opts.walk_forward:
        wf = walk_forward(pred, data, opts)
        wf.to_csv(out / "walk_forward.csv", index=False)
        cols = [*SCORE_COLS, "sharpe", *(c for c in ("rank_ic", "ls_sharpe") if c in wf)]
        agg = wf.groupby("who", sort=False)[cols].agg(["mean", "std"])
        lines += [f"## Walk-forward ({opts.walk_forward} folds, retrained per fold)", "",
                  "| | " + " | ".join(f"{c} mean ± sd" for c in cols) + " |", "|---|" + "---|" * len(cols)]
        for who, r in agg.iterrows():
            lines.append(f"| {who} | " + " | ".join(f"{r[(c, 'mean')]:.3f} ± {r[(c, 'std')]:.3f}" for c in cols)
                         + " |")
        lines.append("")
        result["walk_forward"] = wf.to_dict(orient="records")
    if opts.leakage_audit:
        audit = leakage_audit(pred, data, opts)
        audit.to_csv(out / "leakage_audit.csv", index=False)
        lines += ["## Leakage audit: the seeds' protocol next to the honest one", "",
                  "Seeds' protocol: scaler/selection fitted on all rows, RandomOverSampler on all windows, then a random "
                  "80/10/10 split of windows, so near-duplicate windows (29 of 30 days shared, 4 of 5 label days shared) "
                  "sit on both sides of the split. Same data, same network config, same epochs:", "",
                  _table({f"{r['protocol']} / {r['who']}": r for r in audit.to_dict(orient="records")}, SCORE_COLS),
                  "", "The gap between the two protocols is leakage, not skill: only the honest row estimates "
                  "out-of-sample performance.", ""]
        result["leakage_audit"] = audit.to_dict(orient="records")
    lines += ["## Plots", "", *[f"![{f}]({f})" for f in files], "",
              "Not financial advice. Past performance on one stock and one period says little about the future."]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    result["report"] = str(report)
    result["verdict"] = verdict(scores, tests)
    if log_to_mlflow:
        _log(out, info, spec)
    return result


def _log(out: Path, info: dict | None, spec: str) -> None:
    import mlflow

    from stocktrend.platform.registry import mlflow_registry as registry
    registry.client()
    if info and info.get("run_id"):
        mlflow.log_artifacts(str(out), artifact_path="evaluation", run_id=info["run_id"])
    else:
        with mlflow.start_run(run_name=f"evaluate-{Path(spec).name}"):
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
