"""The gate of the daily loop: every way into production (``stocktrend retrain``, ``stocktrend models promote``,
``tune --promote``, each replay step) is judged here, on the same rule.

**The gate window** is the last ``gate_days`` labelled days of the data (a day is labelled once its ``horizon``-day
outcome is in the data). A retrained challenger has that window as its test segment
(``stocktrend.platform.data.splits.gate_boundaries``: it early-stops on the ``val_days`` before it and trains on
everything earlier, with purge and embargo), and the champion must also have trained and validated before it; both
are checked from the checkpoints' recorded segment dates (``check_before_window``) before anything is compared.

**The evidence**: each model's and each baseline's predictions on the window, scored by the evaluation package's own
metrics (``gate_metrics``): AUC (one-vs-rest for 3 classes) and accuracy for classifiers, MAE, correlation and
direction hit rate for regressors, and for panels the mean daily rank IC and the long-short Sharpe after costs. A
metric that cannot be computed (non-finite or constant predictions, one class in the window, no day with a
cross-section) is NaN with its reason.

**The rule** (``gate_rules`` + ``judge``), each line a pass or a FAIL with its reason, never an exception:
- floors on the challenger alone: classifiers AUC >= 0.5 + ``auc_margin`` (``auc_margin`` >= 0); regressors MAE <= the
  training-mean forecast's MAE, correlation > 0 and hit rate > 0.5; panels, when the change metric is a panel metric,
  rank IC > 0;
- a change against the champion on ``change_metric`` (AUC for classifiers, correlation for regressors by default):
  challenger >= champion + ``min_change`` (absolute; MAE: <=, minus). A champion whose metric cannot be computed (a
  collapsed, constant model) does not block: the floors decide;
- ``beat``: the challenger's change metric above each named baseline's on the same window.
Any metric of a rule that cannot be computed for the challenger is a FAIL naming why. The rule is applied here rather
than by ``mlflow.validate_evaluation_results``, which raises on NaN (Decimal ``InvalidOperation``), has no strict
floors and no baseline rule; the metrics and the verdict are logged to the gate's MLflow run by the caller.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.evaluation.cross_section import MIN_NAMES, daily_ic, long_short, prediction_frame, score_of

log = logging.getLogger(__name__)

GATE_MODES = ("enabled", "dry-run", "off")
CLASSIFIER_METRICS = ("auc", "accuracy")
REGRESSOR_METRICS = ("mae", "corr", "hit_rate")
PANEL_METRICS = ("rank_ic", "long_short_sharpe")
ALL_METRICS = CLASSIFIER_METRICS + REGRESSOR_METRICS + PANEL_METRICS
CLASSIFIER_BASELINES = ("majority", "momentum", "logistic_regression")
REGRESSOR_BASELINES = ("zero", "train_mean", "momentum", "ridge")
ALL_BASELINES = tuple(dict.fromkeys(CLASSIFIER_BASELINES + REGRESSOR_BASELINES))
LOWER_IS_BETTER = ("mae",)
MIN_WINDOW_PREDICTIONS = 10


@dataclass(frozen=True)
class GateOptions:
    mode: str = "enabled"  # enabled (promote on pass) | dry-run (report only) | off (promote without a gate)
    gate_days: int = 63  # the window: the last labelled days (a quarter of trading days)
    val_days: int = 126  # the early-stopping block right before the window (fixed length, not a share of history)
    train_days: int = 0  # > 0: train on a rolling window of this many trading days before the validation block
    auc_margin: float = 0.02  # classifiers: the challenger's AUC on the window must be >= 0.5 + margin (>= 0)
    min_change: float = 0.0  # the challenger's change_metric must be >= the champion's + this (absolute)
    change_metric: str | None = None  # default: auc (classifiers), corr (regressors); rank_ic / long_short_sharpe
    beat: tuple[str, ...] = ()  # baselines the challenger must beat on the change metric (momentum, majority, ...)
    cost_bps: float = 5.0  # long-short costs per unit traded

    def check(self) -> None:
        """Options that are wrong whatever the model: one clear error, before any data is read or model trained."""
        if self.mode not in GATE_MODES:
            raise ValueError(f"unknown --gate {self.mode!r}; use {', '.join(GATE_MODES)}")
        if self.gate_days < 5:
            raise ValueError(f"--gate-days must be at least 5, got {self.gate_days}")
        if self.val_days < 5:
            raise ValueError(f"--val-days must be at least 5, got {self.val_days}")
        if self.train_days < 0 or 0 < self.train_days < 2 * self.gate_days:
            raise ValueError(f"--train-days must be 0 (all history) or at least {2 * self.gate_days} (twice the gate "
                             f"window), got {self.train_days}")
        if not (self.auc_margin >= 0 and math.isfinite(self.auc_margin)):
            raise ValueError(f"--auc-margin must be >= 0 (the floor is 0.5 + margin: below-chance models never "
                             f"pass), got {self.auc_margin}")
        if not (self.min_change >= 0 and math.isfinite(self.min_change)):
            raise ValueError(f"--min-change must be >= 0, got {self.min_change}")
        if self.change_metric is not None and self.change_metric not in ALL_METRICS:
            raise ValueError(f"unknown --change-metric {self.change_metric!r}; use one of {', '.join(ALL_METRICS)}")
        unknown = [b for b in self.beat if b not in ALL_BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) in --beat: {', '.join(unknown)}; use "
                             f"{', '.join(ALL_BASELINES)}")

    def check_for(self, regression: bool, panel: bool) -> str:
        """The options against the model's task and the universe (before any training); returns the change
        metric."""
        change = self.change_metric or ("corr" if regression else "auc")
        allowed = (REGRESSOR_METRICS if regression else CLASSIFIER_METRICS) + (PANEL_METRICS if panel else ())
        if change not in allowed:
            raise ValueError(f"--change-metric {change!r} is not computed for this {task_name(regression)} on "
                             f"{'this panel' if panel else 'a single ticker'}; use one of {', '.join(allowed)}")
        baselines = REGRESSOR_BASELINES if regression else CLASSIFIER_BASELINES
        wrong = [b for b in self.beat if b not in baselines]
        if wrong:
            raise ValueError(f"--beat {', '.join(wrong)}: no such baseline for a {task_name(regression)}; use "
                             f"{', '.join(baselines)}")
        return change


def task_name(regression: bool) -> str:
    return "regressor" if regression else "classifier"


def parse_beat(text: str | None) -> tuple[str, ...]:
    return tuple(b.strip() for b in (text or "").split(",") if b.strip())


# ---------------------------------------------------------------------------------------------------------------------
# The evidence
# ---------------------------------------------------------------------------------------------------------------------

def window_frame(data: PreparedData, out: np.ndarray, regression: bool) -> pd.DataFrame:
    """One model's (or baseline's) predictions on the gate window: one row per (ticker, day) with its score, the
    class target (or the value target) and the realised forward return."""
    rows = data.samples["test"]
    out = np.asarray(out, dtype=np.float64)
    frame = prediction_frame(data, rows, score_of(out, data.kind))
    frame["target"] = data.targets(rows).astype(np.float64 if regression else np.int64)
    if not regression:
        for j in range(out.shape[1] if out.ndim == 2 else 0):
            frame[f"p{j}"] = out[:, j]
    return frame


def is_panel(frame: pd.DataFrame) -> bool:
    return bool((frame.groupby("date")["ticker"].nunique() >= MIN_NAMES).any())


def _classifier_metrics(frame: pd.DataFrame, n_classes: int) -> dict[str, tuple[float, str]]:
    from sklearn import metrics as skm
    y = frame["target"].to_numpy()
    cols = [f"p{j}" for j in range(n_classes)]
    probs = frame[cols].to_numpy(dtype=np.float64) if all(c in frame for c in cols) else None
    score = frame["score"].to_numpy(dtype=np.float64)
    if probs is None:  # a one-column output: P(class 1)
        probs = np.column_stack([1 - score, score])
    out: dict[str, tuple[float, str]] = {}
    if not np.isfinite(probs).all():
        why = "non-finite predictions"
        return {"auc": (math.nan, why), "accuracy": (math.nan, why)}
    out["accuracy"] = (float(skm.accuracy_score(y, probs.argmax(1))), "")
    present = np.unique(y)
    if len(present) < 2:
        out["auc"] = (math.nan, f"the window holds one class only ({len(y)} predictions)")
    elif np.ptp(probs, axis=0).max() < 1e-12:
        out["auc"] = (math.nan, "constant predictions")
    elif n_classes == 2:
        out["auc"] = (float(skm.roc_auc_score(y, probs[:, 1])), "")
    else:  # one-vs-rest, over the classes present in the window
        aucs = [skm.roc_auc_score(y == c, probs[:, c]) for c in present if 0 < (y == c).sum() < len(y)]
        out["auc"] = (float(np.mean(aucs)), "")
    return out


def _regressor_metrics(frame: pd.DataFrame) -> dict[str, tuple[float, str]]:
    p = frame["score"].to_numpy(dtype=np.float64)
    y = frame["target"].to_numpy(dtype=np.float64)
    if not np.isfinite(p).all():
        why = "non-finite predictions"
        return {"mae": (math.nan, why), "corr": (math.nan, why), "hit_rate": (math.nan, why)}
    ok = np.isfinite(y)
    p, y = p[ok], y[ok]
    out = {"mae": (float(np.abs(p - y).mean()), "")}
    if np.std(p) < 1e-12:
        out["corr"] = (math.nan, "constant predictions")
        out["hit_rate"] = (math.nan, "constant predictions")
    else:
        out["corr"] = (float(np.corrcoef(p, y)[0, 1]), "") if np.std(y) > 0 else (math.nan, "constant target")
        out["hit_rate"] = (float(((p >= 0) == (y >= 0)).mean()), "")
    return out


def _panel_metrics(frame: pd.DataFrame, cost_bps: float) -> dict[str, tuple[float, str]]:
    if frame["score"].nunique() < 2:
        return {"rank_ic": (math.nan, "constant predictions"), "long_short_sharpe": (math.nan, "constant predictions")}
    ic = daily_ic(frame)
    out = {"rank_ic": (float(ic["rank_ic"].mean()), "") if len(ic) else
           (math.nan, f"no day with at least {MIN_NAMES} names and distinct scores")}
    sharpe = long_short(frame, cost_bps)[0].sharpe
    out["long_short_sharpe"] = (float(sharpe), "") if np.isfinite(sharpe) else (math.nan, "no long-short days")
    return out


def gate_metrics(frame: pd.DataFrame, regression: bool, n_classes: int, panel: bool, cost_bps: float = 5.0
                 ) -> tuple[dict[str, float], dict[str, str]]:
    """Every gate metric of one model's (or baseline's) window frame -> (values, reasons). A metric that cannot be
    computed is NaN with its reason; nothing raises."""
    names = (REGRESSOR_METRICS if regression else CLASSIFIER_METRICS) + (PANEL_METRICS if panel else ())
    if len(frame) < MIN_WINDOW_PREDICTIONS:
        why = f"too few predictions in the window ({len(frame)} < {MIN_WINDOW_PREDICTIONS})"
        return dict.fromkeys(names, math.nan), dict.fromkeys(names, why)
    try:
        res = _regressor_metrics(frame) if regression else _classifier_metrics(frame, n_classes)
        if panel:
            res.update(_panel_metrics(frame, cost_bps))
    except Exception as exc:  # a metric must never knock the gate over: it is a FAIL with the reason
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        res = {n: (math.nan, why) for n in names}
    values = {n: float(res[n][0]) if np.isfinite(res[n][0]) else math.nan for n in names}
    reasons = {n: res[n][1] or "not finite" for n in names if not np.isfinite(values[n])}
    return values, reasons


# ---------------------------------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    metric: str
    kind: str  # floor (the challenger alone) | change (against the champion) | beat (against a baseline)
    op: str  # ">=", ">" or "<="
    bound: float = 0.0  # floor: the value; change: the minimum change; beat: unused
    against: str = ""  # champion, or the baseline's name

    def describe(self) -> str:
        if self.kind == "floor":
            return f"challenger {self.op} {self.bound:g}"
        if self.kind == "change":
            sign = "-" if self.op == "<=" else "+"
            return f"challenger {self.op} champion {sign} {self.bound:g}"
        return f"challenger {self.op} {self.against}"


def gate_rules(opts: GateOptions, regression: bool, panel: bool, baseline_metrics: dict[str, dict[str, float]],
               with_champion: bool = True) -> list[Rule]:
    """The rules of this gate, in order: floors, the change against the champion, the baselines to beat."""
    change = opts.check_for(regression, panel)
    rules: list[Rule] = []
    if regression:
        train_mean = baseline_metrics.get("train_mean", {}).get("mae", math.nan)
        rules += [Rule("mae", "floor", "<=", train_mean), Rule("corr", "floor", ">", 0.0),
                  Rule("hit_rate", "floor", ">", 0.5)]
    else:
        rules.append(Rule("auc", "floor", ">=", 0.5 + opts.auc_margin))
    if panel and change in PANEL_METRICS:
        rules.append(Rule("rank_ic", "floor", ">", 0.0))
    if with_champion:
        rules.append(Rule(change, "change", "<=" if change in LOWER_IS_BETTER else ">=", opts.min_change,
                          "champion"))
    for b in opts.beat:
        rules.append(Rule(change, "beat", "<" if change in LOWER_IS_BETTER else ">", 0.0, b))
    return rules


def _holds(value: float, op: str, bound: float) -> bool:
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]


@dataclass
class Verdict:
    rule: Rule
    passed: bool
    text: str  # the line of the report: what was compared and the outcome's reason


def judge(rules: list[Rule], metrics: dict[str, dict[str, float]], reasons: dict[str, dict[str, str]]
          ) -> list[Verdict]:
    """Apply each rule to the metrics of everyone on the window (``metrics[who][metric]``, NaN where it could not be
    computed, ``reasons[who][metric]`` saying why). Never raises: what cannot be checked is a FAIL with its reason."""
    out = []
    for r in rules:
        mine = metrics.get("challenger", {}).get(r.metric, math.nan)
        if not np.isfinite(mine):
            why = reasons.get("challenger", {}).get(r.metric, "not computed")
            out.append(Verdict(r, False, f"{r.metric} cannot be computed for the challenger ({why})"))
            continue
        if r.kind == "floor":
            if not np.isfinite(r.bound):
                out.append(Verdict(r, False, f"{r.metric}: the floor cannot be computed on this window"))
                continue
            ok = _holds(mine, r.op, r.bound)
            out.append(Verdict(r, ok, f"{r.metric} {mine:.4f} {'meets' if ok else 'misses'} {r.describe()}"))
            continue
        who = "champion" if r.kind == "change" else r.against
        theirs = metrics.get(who, {}).get(r.metric, math.nan)
        if not np.isfinite(theirs):
            why = reasons.get(who, {}).get(r.metric, "not computed")
            if who not in metrics:
                out.append(Verdict(r, False, f"{r.metric}: {who} was not scored on the window"))
            else:  # a collapsed champion (or a constant baseline) cannot block: the floors decide
                out.append(Verdict(r, True, f"{r.metric} {mine:.4f}: the {who}'s cannot be computed ({why}); the "
                                            f"floors decide"))
            continue
        bound = theirs + (-r.bound if r.op == "<=" else r.bound) if r.kind == "change" else theirs
        ok = _holds(mine, r.op, bound)
        out.append(Verdict(r, ok, f"{r.metric} {mine:.4f} ({who} {theirs:.4f}) {'meets' if ok else 'misses'} "
                                  f"{r.describe()}"))
    return out


@dataclass
class GateReport:
    window: tuple[str, str]
    samples: int
    tickers: int
    metrics: dict[str, dict[str, float]]  # who (champion, challenger, baselines) -> metric -> value (NaN: see reasons)
    thresholds: dict[str, dict[str, Any]]  # rule -> its description and result
    passed: bool
    failures: list[str]
    mode: str
    champion: str
    challenger: str
    reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # who -> metric -> why it is NaN
    staleness: dict[str, Any] = field(default_factory=dict)  # the challenger's last training label vs the as-of day
    notes: list[str] = field(default_factory=list)

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
            verdict = "pass" if t["passed"] else "FAIL"
            lines.append(f"rule         : {name}: {t['rule']}: {t.get('detail', '')} -> {verdict}")
        lines += [f"note         : {n}" for n in self.notes]
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
        lines += ["", "| rule | result | detail |", "|---|---|---|"]
        lines += [f"| {n} | {'pass' if t['passed'] else 'FAIL'} | {t['detail']} |" for n, t in self.thresholds.items()]
        if self.staleness:
            lines += ["", f"Staleness: {self.staleness.get('days')} trading days between the challenger's last "
                          f"training label ({self.staleness.get('last_label')}) and the as-of day "
                          f"({self.staleness.get('as_of')})."]
        lines += [f"Note: {n}" for n in self.notes]
        lines += ["", f"**{'PASS' if self.passed else 'FAIL'}**" + ("" if self.passed else ": " +
                                                                     "; ".join(self.failures)), ""]
        return "\n".join(lines)

    def to_json(self) -> str:
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None  # strict JSON
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x
        return json.dumps(clean(asdict(self)), indent=2, default=float)


def run_gate(opts: GateOptions, champion_frame: pd.DataFrame | None, challenger_frame: pd.DataFrame,
             baseline_frames: dict[str, pd.DataFrame], regression: bool, n_classes: int, champion: str,
             challenger: str, notes: list[str] | None = None) -> GateReport:
    """Score everyone on the window and judge the challenger. ``champion_frame`` None: no champion to compare with
    (a first model, a replay's step 0, a champion that cannot be checked): the floors and baselines decide. Pure: no
    MLflow, no Ray, no training; never raises on what the models predicted."""
    keys = ["ticker", "date"]
    notes = list(notes or [])
    frames = {"challenger": challenger_frame, **baseline_frames}
    if champion_frame is not None:
        common = champion_frame[keys].merge(challenger_frame[keys], on=keys)
        if len(common) != len(challenger_frame) or len(common) != len(champion_frame):
            raise ValueError(f"champion and challenger were scored on different days ({len(champion_frame)} vs "
                             f"{len(challenger_frame)} predictions, {len(common)} in common)")
        frames = {"champion": champion_frame, **frames}
    panel = is_panel(challenger_frame)
    metrics: dict[str, dict[str, float]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for who, frame in frames.items():
        metrics[who], reasons[who] = gate_metrics(frame.sort_values(keys).reset_index(drop=True), regression,
                                                  n_classes, panel, opts.cost_bps)
    rules = gate_rules(opts, regression, panel, metrics, with_champion=champion_frame is not None)
    verdicts = judge(rules, metrics, reasons)
    described = {}
    for v in verdicts:
        key = v.rule.metric if v.rule.kind == "floor" else f"{v.rule.metric} vs {v.rule.against}"
        while key in described:
            key += "'"
        described[key] = {"rule": v.rule.describe(), "passed": v.passed, "detail": v.text, "kind": v.rule.kind}
    failures = [v.text for v in verdicts if not v.passed]
    d = pd.to_datetime(challenger_frame["date"]) if len(challenger_frame) else pd.DatetimeIndex([pd.NaT])
    window = (str(d.min().date()), str(d.max().date())) if len(challenger_frame) else ("?", "?")
    return GateReport(window=window, samples=int(len(challenger_frame)),
                      tickers=int(challenger_frame["ticker"].nunique()), metrics=metrics, thresholds=described,
                      passed=not failures, failures=failures, mode=opts.mode, champion=champion,
                      challenger=challenger, reasons={w: r for w, r in reasons.items() if r}, notes=notes)


def refused(opts: GateOptions, champion: str, challenger: str, why: str) -> GateReport:
    """A gate that could not compare at all (e.g. a champion with no recorded dates): a FAIL with the reason."""
    return GateReport(window=("?", "?"), samples=0, tickers=0, metrics={"challenger": {}}, thresholds={},
                      passed=False, failures=[why], mode=opts.mode, champion=champion, challenger=challenger)


def log_to_mlflow(report: GateReport) -> None:
    """The gate's figures on the active MLflow run: ``<who>.<metric>`` (finite ones) and the verdict as a tag."""
    import mlflow
    mlflow.log_metrics({f"{who}.{k}": v for who, m in report.metrics.items() for k, v in m.items()
                        if isinstance(v, float) and math.isfinite(v)})
    if report.staleness.get("days") is not None:
        mlflow.log_metric("challenger.staleness_days", float(report.staleness["days"]))
    mlflow.set_tag("stocktrend.gate", "pass" if report.passed else "fail")


def write_report(report: GateReport, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "gate.md", folder / "gate.json"
    md.write_text(report.markdown())
    js.write_text(report.to_json())
    return md, js
