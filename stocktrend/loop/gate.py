"""The gate of the daily loop: champion and challenger scored on the same unseen days, judged by MLflow's own
evaluation API against documented thresholds.

**The gate window** is the last ``gate_days`` labelled days of the data the challenger was retrained on (a day is
labelled once its ``horizon``-day outcome is in the data). The challenger is retrained with that window as its test
segment (``stocktrend.platform.data.splits.gate_boundaries``: it trains and early-stops on the days before it, with
purge and embargo), and the champion must also have trained and validated before it; both are checked from the
checkpoints' recorded segment dates (``check_before_window``) before anything is compared.

**The evidence**: each model's predictions on the window go through ``mlflow.models.evaluate`` (stored predictions,
no model loading) with the platform's metrics as MLflow custom metrics: AUC and accuracy for classifiers, MAE,
correlation and hit rate for regressors, and for panels the mean daily rank IC and the long-short Sharpe after costs.
The baselines (majority class, momentum, logistic regression / zero, training mean, momentum, ridge) are scored the
same way on the same days and reported beside them.

**The thresholds** (``mlflow.validate_evaluation_results`` with ``MetricThreshold``):
- a floor on the challenger alone: AUC >= 0.5 + ``auc_margin`` (classifiers), or MAE <= the training-mean forecast's
  MAE on the window (regressors);
- a change against the champion on ``change_metric`` (AUC for classifiers, correlation for regressors by default):
  challenger >= champion + ``min_change``, an absolute change (a relative one divides by the champion's value, which
  flips sign for IC and Sharpe). MLflow requires a positive change, so ``min_change`` 0 ("at least as good") is
  applied as 1e-9.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.evaluation.cross_section import MIN_NAMES, daily_ic, long_short, score_of

log = logging.getLogger(__name__)

GATE_MODES = ("enabled", "dry-run", "off")
CLASSIFIER_METRICS = ("auc", "accuracy")
REGRESSOR_METRICS = ("mae", "corr", "hit_rate")
PANEL_METRICS = ("rank_ic", "long_short_sharpe")
EPSILON = 1e-9


@dataclass(frozen=True)
class GateOptions:
    mode: str = "enabled"  # enabled (promote on pass) | dry-run (report only) | off (promote without a gate)
    gate_days: int = 63  # the window: the last labelled days (a quarter of trading days)
    auc_margin: float = 0.02  # classifiers: the challenger's AUC on the window must be >= 0.5 + margin
    min_change: float = 0.0  # the challenger's change_metric must be >= the champion's + this (absolute)
    change_metric: str | None = None  # default: auc (classifiers), corr (regressors); rank_ic / long_short_sharpe
    cost_bps: float = 5.0  # long-short costs per unit traded

    def check(self) -> None:
        if self.mode not in GATE_MODES:
            raise ValueError(f"unknown --gate {self.mode!r}; use {', '.join(GATE_MODES)}")
        if self.gate_days < 5:
            raise ValueError(f"--gate-days must be at least 5, got {self.gate_days}")
        if self.min_change < 0:
            raise ValueError(f"--min-change must be >= 0, got {self.min_change}")


def window_frame(data: PreparedData, out: np.ndarray, regression: bool) -> pd.DataFrame:
    """One model's (or baseline's) predictions on the gate window: one row per (ticker, day) with its score, the
    class target (or the realised return) and the realised forward return."""
    rows = data.samples["test"]
    close = data.panel.meta["close"].to_numpy()
    t_idx = np.searchsorted(data.offsets, rows, side="right") - 1
    end = data.offsets[t_idx + 1]
    ret1 = np.where(rows + 1 < end, close[np.minimum(rows + 1, end - 1)] / close[rows] - 1, np.nan)
    out = np.asarray(out, dtype=np.float64)
    frame = pd.DataFrame({"ticker": np.asarray(data.tickers)[t_idx], "date": data.dates[rows],
                          "fwd": data.forward_return[rows], "ret1": ret1,
                          "score": score_of(out, data.kind)})
    frame["target"] = data.targets(rows).astype(np.float64 if regression else np.int64)
    if not regression:
        for j in range(out.shape[1] if out.ndim == 2 else 0):
            frame[f"p{j}"] = out[:, j]
    return frame


def _metric_fns(frame: pd.DataFrame, regression: bool, n_classes: int, cost_bps: float, panel: bool):
    """MLflow custom metrics over ``frame`` (aligned by index with the predictions MLflow passes in)."""
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric
    from sklearn import metrics as skm

    def value(name, v):
        return MetricValue(aggregate_results={name: float(v) if v is not None and np.isfinite(v) else float("nan")})

    def auc(predictions, targets, metrics):
        y = targets.to_numpy()
        if len(np.unique(y)) < 2:
            return value("auc", float("nan"))
        if n_classes == 2:
            return value("auc", skm.roc_auc_score(y, predictions.to_numpy()))
        probs = frame.loc[predictions.index, [f"p{j}" for j in range(n_classes)]].to_numpy()
        return value("auc", skm.roc_auc_score(y, probs, multi_class="ovr", labels=list(range(n_classes))))

    def accuracy(predictions, targets, metrics):
        if n_classes == 2:
            pred = (predictions.to_numpy() >= 0.5).astype(int)
        else:
            pred = frame.loc[predictions.index, [f"p{j}" for j in range(n_classes)]].to_numpy().argmax(1)
        return value("accuracy", skm.accuracy_score(targets.to_numpy(), pred))

    def mae(predictions, targets, metrics):
        return value("mae", np.abs(predictions.to_numpy() - targets.to_numpy()).mean())

    def corr(predictions, targets, metrics):
        p, y = predictions.to_numpy(), targets.to_numpy()
        return value("corr", float("nan") if np.std(p) < 1e-12 else np.corrcoef(p, y)[0, 1])

    def hit_rate(predictions, targets, metrics):
        return value("hit_rate", ((predictions.to_numpy() >= 0) == (targets.to_numpy() >= 0)).mean())

    def rank_ic(predictions, targets, metrics):
        f = frame.loc[predictions.index].assign(score=predictions.to_numpy())
        ic = daily_ic(f)
        return value("rank_ic", ic["rank_ic"].mean() if len(ic) else float("nan"))

    def long_short_sharpe(predictions, targets, metrics):
        f = frame.loc[predictions.index].assign(score=predictions.to_numpy())
        return value("long_short_sharpe", long_short(f, cost_bps)[0].sharpe)

    fns = {"auc": (auc, True), "accuracy": (accuracy, True)} if not regression else \
        {"mae": (mae, False), "corr": (corr, True), "hit_rate": (hit_rate, True)}
    if panel:
        fns.update({"rank_ic": (rank_ic, True), "long_short_sharpe": (long_short_sharpe, True)})
    return [make_metric(eval_fn=fn, greater_is_better=better, name=name) for name, (fn, better) in fns.items()]


def evaluate_frame(frame: pd.DataFrame, regression: bool, n_classes: int, cost_bps: float, panel: bool,
                   run_name: str):
    """``mlflow.models.evaluate`` on stored predictions, in a nested run of the active one."""
    import warnings

    import mlflow
    with warnings.catch_warnings(), mlflow.start_run(run_name=run_name, nested=True):
        warnings.simplefilter("ignore")
        return mlflow.models.evaluate(data=frame[["score", "target"]].copy(), predictions="score", targets="target",
                                      model_type=None, evaluators="default",
                                      extra_metrics=_metric_fns(frame, regression, n_classes, cost_bps, panel))


def is_panel(frame: pd.DataFrame) -> bool:
    return bool((frame.groupby("date")["ticker"].nunique() >= MIN_NAMES).any())


def thresholds(opts: GateOptions, regression: bool, baselines: dict[str, dict[str, float]], panel: bool
               ) -> dict[str, Any]:
    """The MetricThresholds of this gate, named by metric."""
    from mlflow.models import MetricThreshold
    change = opts.change_metric or ("corr" if regression else "auc")
    allowed = (REGRESSOR_METRICS if regression else CLASSIFIER_METRICS) + (PANEL_METRICS if panel else ())
    if change not in allowed:
        raise ValueError(f"--change-metric {change!r} is not computed for this model and universe; use one of "
                         f"{', '.join(allowed)}")
    better = change != "mae"
    out: dict[str, MetricThreshold] = {}
    if regression:
        out["mae"] = MetricThreshold(threshold=baselines["train_mean"]["mae"], greater_is_better=False)
    else:
        out["auc"] = MetricThreshold(threshold=0.5 + opts.auc_margin, greater_is_better=True)
    delta = max(opts.min_change, EPSILON)
    if change in out:
        t = out[change]
        out[change] = MetricThreshold(threshold=t.threshold, min_absolute_change=delta, greater_is_better=better)
    else:
        out[change] = MetricThreshold(min_absolute_change=delta, greater_is_better=better)
    return out


@dataclass
class GateReport:
    window: tuple[str, str]
    samples: int
    tickers: int
    metrics: dict[str, dict[str, float]]  # who (champion, challenger, baselines) -> metric -> value
    thresholds: dict[str, dict[str, Any]]  # metric -> threshold description and result
    passed: bool
    failures: list[str]
    mode: str
    champion: str
    challenger: str
    mlflow_validation: str = ""  # what mlflow.validate_evaluation_results said

    def table(self) -> list[str]:
        names = list(self.metrics["challenger"])
        who = list(self.metrics)
        width = max(len(w) for w in who) + 2
        lines = [f"gate window  : {self.window[0]} .. {self.window[1]}, {self.samples} predictions, {self.tickers} "
                 f"ticker(s); champion {self.champion}, challenger {self.challenger}",
                 f"{'':<{width}}" + "".join(f"{n:>19}" for n in names)]
        for w in who:
            lines.append(f"{w:<{width}}" + "".join(f"{self.metrics[w].get(n, float('nan')):>19.4f}" for n in names))
        for name, t in self.thresholds.items():
            lines.append(f"threshold    : {name} {t['rule']} -> {'pass' if t['passed'] else 'FAIL'}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"gate         : {verdict}" + ("" if self.passed else f" ({'; '.join(self.failures)})"))
        return lines

    def markdown(self) -> str:
        names = list(self.metrics["challenger"])
        lines = ["# Gate report", "", f"Window {self.window[0]} .. {self.window[1]} ({self.samples} predictions, "
                 f"{self.tickers} tickers); champion {self.champion}, challenger {self.challenger}; mode {self.mode}.",
                 "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for w, m in self.metrics.items():
            lines.append(f"| {w} | " + " | ".join(f"{m.get(n, float('nan')):.4f}" for n in names) + " |")
        lines += ["", "| threshold | rule | result |", "|---|---|---|"]
        lines += [f"| {n} | {t['rule']} | {'pass' if t['passed'] else 'FAIL'} |" for n, t in self.thresholds.items()]
        lines += ["", f"**{'PASS' if self.passed else 'FAIL'}**" + ("" if self.passed else ": " +
                                                                     "; ".join(self.failures)), ""]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=float)


def run_gate(opts: GateOptions, champion_frame: pd.DataFrame, challenger_frame: pd.DataFrame,
             baseline_frames: dict[str, pd.DataFrame], regression: bool, n_classes: int, champion: str,
             challenger: str) -> GateReport:
    """Evaluate everyone on the window with MLflow, validate the challenger against the thresholds."""
    import mlflow
    from mlflow.models.evaluation.validation import ModelValidationFailedException
    keys = ["ticker", "date"]
    common = champion_frame[keys].merge(challenger_frame[keys], on=keys)
    if len(common) != len(challenger_frame) or len(common) != len(champion_frame):
        raise ValueError(f"champion and challenger were scored on different days ({len(champion_frame)} vs "
                         f"{len(challenger_frame)} predictions, {len(common)} in common)")
    panel = is_panel(challenger_frame)
    results = {}
    for who, frame in (("champion", champion_frame), ("challenger", challenger_frame), *baseline_frames.items()):
        results[who] = evaluate_frame(frame.sort_values(keys).reset_index(drop=True), regression, n_classes,
                                      opts.cost_bps, panel, f"gate-{who}")
    metrics = {who: {k: float(v) for k, v in r.metrics.items()} for who, r in results.items()}
    rules = thresholds(opts, regression, metrics, panel)
    failures: list[str] = []
    try:
        mlflow.validate_evaluation_results(rules, results["challenger"], results["champion"])
    except ModelValidationFailedException as exc:
        failures = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    described = {}
    for name, t in rules.items():
        parts = []
        op = ">=" if t.greater_is_better else "<="
        if t.threshold is not None:
            parts.append(f"challenger {op} {t.threshold:.4f}")
        if t.min_absolute_change is not None:
            sign = "+" if t.greater_is_better else "-"
            d = 0.0 if t.min_absolute_change <= EPSILON else t.min_absolute_change
            parts.append(f"challenger {op} champion {sign} {d:g}")
        failed = any(f"Metric {name} " in f for f in failures)
        described[name] = {"rule": " and ".join(parts), "passed": not failed,
                           "challenger": metrics["challenger"].get(name), "champion": metrics["champion"].get(name)}
    d = pd.to_datetime(challenger_frame["date"])
    failed = [f"{n} {t['challenger']:.4f} (champion {t['champion']:.4f}) misses {t['rule']}"
              for n, t in described.items() if not t["passed"]]
    return GateReport(window=(str(d.min().date()), str(d.max().date())), samples=int(len(challenger_frame)),
                      tickers=int(challenger_frame["ticker"].nunique()), metrics=metrics, thresholds=described,
                      passed=not failures, failures=failed, mode=opts.mode, champion=champion, challenger=challenger,
                      mlflow_validation=" ".join(failures) or "passed")


def write_report(report: GateReport, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "gate.md", folder / "gate.json"
    md.write_text(report.markdown())
    js.write_text(report.to_json())
    return md, js
