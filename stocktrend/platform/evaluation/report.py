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
from stocktrend.platform.data.dataset import PreparedData, build_dataset
from stocktrend.platform.evaluation.cross_section import (MIN_NAMES, evaluate_panel, plot_cumulative_ic,
                                                         report_lines)
from stocktrend.models import zoo
from stocktrend.platform.evaluation.metrics import backtest, baseline_probabilities, classification_scores
from stocktrend.platform.evaluation.regression import REG_COLS, score_returns
from stocktrend.platform.evaluation.regression import report_lines as regression_lines
from stocktrend.platform.evaluation.walkforward import SCORE_COLS, leakage_audit, walk_forward
from stocktrend.platform.training.jobs import resolve_model

log = logging.getLogger(__name__)



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


def _after_training(pred: Predictor, data):
    """Scoring on another universe: its test segment comes from its own dates, which may fall inside the period the
    model trained on (same market days, maybe the same tickers). Keep only test windows dated after the model's
    validation segment plus the label horizon."""
    seen = pred.ckpt.get("segment_dates", {}).get("val")
    if not seen:
        return data, ("another universe's test segment; this checkpoint does not record its training dates, so these "
                      "days may overlap them.")
    cutoff = pd.Timestamp(seen[1]) + pd.offsets.BDay(pred.data_config.horizon)
    rows = data.samples["test"]
    keep = rows[pd.DatetimeIndex(data.dates[rows]) > cutoff]
    if len(keep) == 0:
        raise ValueError(f"the test segment of universe {data.config.universe} ({data.date_range('test')[0]} .. "
                         f"{data.date_range('test')[1]}) lies inside the period this model trained and was validated "
                         f"on (up to {seen[1]}): there is no honest test window; use a universe with later data")
    log.info("scoring on %s: %d of %d test windows dated after the model's validation end %s (+%d days)",
             data.config.universe, len(keep), len(rows), seen[1], pred.data_config.horizon)
    note = (f"another universe's test segment, cut to the {len(keep)} of {len(rows)} windows dated after the model's "
            f"validation end ({seen[1]}) plus the horizon, so none falls inside the period it trained on.")
    return replace(data, samples={**data.samples, "test": keep}), note


def evaluate(spec: str, out_dir: str | Path | None = None, opts: EvalOptions | None = None,
             log_to_mlflow: bool = True) -> dict[str, Any]:
    opts = opts or EvalOptions()
    path, info = resolve_model(spec)
    pred = Predictor.load(path)
    dcfg = pred.data_config if not opts.universe else replace(pred.data_config, universe=opts.universe, tickers=(),
                                                               data_dir=None)
    data = build_dataset(dcfg)
    if data.panel.data_hash != pred.ckpt["data_hash"]:
        log.warning("the data differ from the model's training data (hash %s vs %s): scoring on today's data",
                    data.panel.data_hash, pred.ckpt["data_hash"])
    data = data.with_transforms(pred.transforms)  # always the checkpoint's own scaler and features
    test_note = "never used for training, model selection or fitting transforms."
    if opts.universe and (opts.universe != pred.data_config.universe or pred.data_config.data_dir):
        data, test_note = _after_training(pred, data)
    out_matrix, _ = pred.predict_proba(data.windows(data.samples["test"]))

    out = Path(out_dir) if out_dir else default_home() / "reports" / f"{spec.replace('@', '-').replace('/', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    n_params = zoo.count_parameters(pred.model) if not pred.spec.is_sklearn else 0
    lines = [f"# stocktrend evaluation: {spec}", "",
             f"Model: {pred.model_kind}{f' ({n_params:,} parameters)' if n_params else ''}; trained on "
             f"{', '.join(pred.ckpt['tickers'])} (data hash {pred.ckpt['data_hash']}); label {pred.kind.value}, "
             f"horizon {pred.data_config.horizon} days, window {pred.seq_len} days.", "",
             f"Test segment: {data.date_range('test')[0]} .. {data.date_range('test')[1]}, "
             f"{len(data.samples['test'])} windows; {test_note}",
             ""]
    if pred.task.is_regression:
        result, files, verdict_lines = _regression_report(pred, data, out_matrix[:, 0], opts, out, lines)
    else:
        result, files, verdict_lines = _classification_report(pred, data, out_matrix, opts, out, lines)
    if opts.walk_forward:
        wf = walk_forward(pred, data, opts, score_all)
        wf.to_csv(out / "walk_forward.csv", index=False)
        first = list(REG_COLS) if pred.task.is_regression else list(SCORE_COLS)
        cols = [*first, "sharpe", *(c for c in ("rank_ic", "ls_sharpe") if c in wf)]
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
    result.update(report=str(report), verdict=verdict_lines, model_kind=pred.model_kind, task=pred.task.value)
    if log_to_mlflow:
        _log(out, info, spec)
    return result


def _classification_report(pred: Predictor, data: PreparedData, out_matrix: np.ndarray, opts: EvalOptions, out: Path,
                           lines: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Classes (the model, or mtl_lstm's action head) next to the baselines; backtest; cross-section; the return head
    of a multi-task model."""
    model_probs = out_matrix[:, :len(pred.class_names)]
    scores, tests, probs = score_all(data, model_probs, opts)
    files = plots(out, pred, data, probs, scores, tests)
    counts = data.class_counts("test")
    verdict_lines = verdict(scores, tests)
    lines += [f"Test classes: {', '.join(f'{k} {v}' for k, v in counts.items())}.", "", "## Verdict", "",
              *[f"- {v}" for v in verdict_lines], "", "## Classification (test segment)", "",
              _table({k: {**v, "auc 95% CI": f"{v['auc_ci'][0]:.3f}-{v['auc_ci'][1]:.3f}"} for k, v in scores.items()},
                     (*SCORE_COLS, "auc 95% CI")), "",
              "Per-class precision / recall of the model: " + "; ".join(
                  f"{n}: {v['precision']:.3f} / {v['recall']:.3f}" for n, v in scores["model"]["per_class"].items()),
              "", f"## Backtest (test days, {opts.cost_bps:g} bps per side, long when P(Alcista) > {opts.threshold}"
              f"{', short otherwise' if opts.allow_short else ', flat otherwise'})", "",
              _table({k: v.row() for k, v in tests.items()},
                     ("annual_return", "sharpe", "max_drawdown", "win_rate", "turnover", "exposure")), ""]
    result: dict[str, Any] = {"scores": scores, "backtest": {k: v.row() for k, v in tests.items()}}
    if pred.task.is_multitask:
        reg = score_returns(data, out_matrix[:, -1])
        lines += regression_lines(reg, data.config.horizon)
        result["regression"] = reg["scores"]
    if len(data.tickers) >= MIN_NAMES:
        cs = evaluate_panel(data, probs, opts.cost_bps)
        lines += report_lines(cs)
        plot_cumulative_ic(cs, out / "cumulative_ic.png")
        files.append("cumulative_ic.png")
        result["cross_section"] = {"ic": cs["ic"], "long_short": {k: v.row() for k, v in cs["long_short"].items()}}
    return result, files, verdict_lines


def _regression_report(pred: Predictor, data: PreparedData, model_ret: np.ndarray, opts: EvalOptions, out: Path,
                       lines: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Predicted returns next to the regression baselines; a backtest long when the forecast is positive;
    cross-section for panels."""
    reg = score_returns(data, model_ret)
    tests = {}
    for name, p in reg["predictions"].items():
        tests[name], hold = backtest(data, p, threshold=0.0, cost_bps=opts.cost_bps, allow_short=opts.allow_short,
                                     name=name)
    tests["buy_and_hold"] = hold
    m = reg["scores"]["model"]
    verdict_lines = [f"The model does NOT beat the {k} forecast on MAE ({m['mae']:.4f} vs {s['mae']:.4f})."
                     for k, s in reg["scores"].items() if k != "model" and m["mae"] >= s["mae"]]
    if tests["model"].sharpe <= tests["buy_and_hold"].sharpe:
        verdict_lines.append(f"After costs the signal's Sharpe ({tests['model'].sharpe:.2f}) does NOT beat buy-and-hold "
                             f"({tests['buy_and_hold'].sharpe:.2f}).")
    verdict_lines = verdict_lines or ["The model beats every baseline on MAE and buy-and-hold on Sharpe here."]
    lines += ["## Verdict", "", *[f"- {v}" for v in verdict_lines], "", *regression_lines(reg, data.config.horizon),
              f"Confidence = P(predicted direction right), calibrated on validation: mean "
              f"{float(np.mean(pred.predict_proba(data.windows(data.samples['test']))[0][:, 1])):.3f} on test, "
              f"realised hit rate {m['hit_rate']:.3f}.", "",
              f"## Backtest (test days, {opts.cost_bps:g} bps per side, long when the predicted return > 0)", "",
              _table({k: v.row() for k, v in tests.items()},
                     ("annual_return", "sharpe", "max_drawdown", "win_rate", "turnover", "exposure")), ""]
    result: dict[str, Any] = {"regression": reg["scores"], "backtest": {k: v.row() for k, v in tests.items()}}
    files = []
    if len(data.tickers) >= MIN_NAMES:
        cs = evaluate_panel(data, {n: p[:, None] for n, p in reg["predictions"].items()}, opts.cost_bps)
        lines += report_lines(cs)
        plot_cumulative_ic(cs, out / "cumulative_ic.png")
        files.append("cumulative_ic.png")
        result["cross_section"] = {"ic": cs["ic"], "long_short": {k: v.row() for k, v in cs["long_short"].items()}}
    return result, files, verdict_lines


def _log(out: Path, info: dict | None, spec: str) -> None:
    import mlflow

    from stocktrend.platform.registry import mlflow_registry as registry
    registry.client()
    if info and info.get("run_id"):
        mlflow.log_artifacts(str(out), artifact_path="evaluation", run_id=info["run_id"])
    else:
        with mlflow.start_run(run_name=f"evaluate-{Path(spec).name}"):
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
