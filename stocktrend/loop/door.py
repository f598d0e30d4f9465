"""The one door into production: every alias move of ``production`` (``stocktrend retrain``, ``stocktrend models
promote``, ``stocktrend tune --promote``, the quickstart, each replay step) goes through ``decide`` here, a
compare-and-set under the registry lock, after the gate of ``stocktrend.loop.gate`` judged the candidate against the
current holder on days neither saw, unless the caller forces it, which is recorded on the version (tags
``stocktrend.forced``, ``stocktrend.forced_at``, ``stocktrend.forced_by``).

Which model stands on the window: a model may be judged only on days it neither trained nor early-stopped on
(``check_before_window``). A *refit* (``stocktrend retrain --refit``: the gated configuration retrained on every
labelled day) trained on the window by design; it is judged through the gated version it was refit from (tag
``stocktrend.refit_of``), which holds the same configuration and did not see the window. A checkpoint that records no
segment dates cannot be checked at all: the gate FAILs with how to re-register it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stocktrend.loop.gate import GateOptions, GateReport, log_to_mlflow, refused, run_gate, window_frame, write_report
from stocktrend.platform.data.sources import DataValidationError
from stocktrend.platform.data.splits import check_before_window

log = logging.getLogger(__name__)

PROMOTED, KEPT = 0, 3
REFIT_TAG = "stocktrend.refit_of"


class GateRefusal(Exception):
    """The gate cannot compare these models (a FAIL with this reason, not a user error)."""


def regression_of(pred) -> bool:
    return pred.task.is_regression


def outputs_on_window(pred, data) -> np.ndarray:
    """A model's output matrix on the window, reduced to what the gate scores (class probabilities, or the value)."""
    out, _ = pred.predict_proba(data.windows(data.samples["test"]))
    return out[:, :1] if regression_of(pred) else out[:, :len(pred.class_names)]


def baselines_on_window(data, regression: bool) -> dict[str, np.ndarray]:
    if regression:
        from stocktrend.platform.evaluation.regression import regression_baselines
        return {k: np.asarray(v, dtype=np.float64)[:, None] for k, v in regression_baselines(data).items()
                if k != "gradient_boosting"}
    from stocktrend.platform.evaluation.metrics import baseline_probabilities
    return {k: v for k, v in baseline_probabilities(data).items() if k != "gradient_boosting"}


def stand_in(name: str, version: int, pred, window_start, dates, horizon: int, who: str) -> tuple[int, Any, str]:
    """The model that is judged on the window for ``name`` version ``version``: itself when it trained and validated
    before the window, the gated version it was refit from when it is a refit. Raises GateRefusal when neither
    can be checked, DataValidationError when it saw the window (nothing unseen to compare on)."""
    seg = pred.ckpt.get("segment_dates") or {}
    if not all(s in seg for s in ("train", "val")):
        raise GateRefusal(f"the {who} v{version} records no training/validation dates, so the gate cannot tell which "
                          f"days it saw; re-register it with a current stocktrend (stocktrend train ... "
                          f"--model-name {name}) or move production without the gate (--gate off / --force)")
    parent = (pred.ckpt.get("extra") or {}).get("refit_of")
    seen = {f"the {who}'s {s} segment": tuple(seg[s]) for s in ("train", "val")}
    problems = check_before_window(seen, window_start, dates, horizon)
    if not problems:
        return version, pred, ""
    if parent:
        from stocktrend.platform.registry import mlflow_registry as registry
        from stocktrend.platform.registry.checkpoint import Predictor
        path, _ = registry.download(name, str(parent))
        base = Predictor.load(path)
        v, p, _ = stand_in(name, int(parent), base, window_start, dates, horizon, f"{who}'s refit parent")
        return v, p, (f"the {who} v{version} is a refit on every labelled day (it trained on the window): its "
                      f"gated parent v{v}, the same configuration, stands in for it")
    raise DataValidationError(f"the gate window starting {window_start.date()} holds days the {who} v{version} saw: "
                              f"{'; '.join(problems)}; gate on later data (a later --as-of or new bars) or a smaller "
                              f"--gate-days")


def gate_challenger(champion, champ_label: str, challenger, chall_label: str, run_id: str | None, panel, data_cfg,
                    bounds, gopts: GateOptions, name: str, folder: Path, as_of: str, notes: list[str] | None = None,
                    staleness: dict[str, Any] | None = None) -> tuple[GateReport, Path]:
    """Score champion (None: no champion, floors and baselines only), challenger and the baselines on the gate window
    of ``panel``, judge the challenger, log a ``gate-...`` MLflow run; the report also lands on ``run_id``."""
    import mlflow

    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.registry import mlflow_registry as registry
    regression = regression_of(challenger)
    data = prepare(panel, replace(data_cfg, sequence_length=challenger.seq_len, top_k=challenger.data_config.top_k),
                   bounds)
    chall_data = data.with_transforms(challenger.transforms)
    champ_frame = None
    if champion is not None:
        champ_data = prepare(panel, replace(champion.data_config, as_of=data_cfg.as_of, data_dir=data_cfg.data_dir,
                                            universe=data_cfg.universe), bounds).with_transforms(champion.transforms)
        champ_frame = window_frame(champ_data, outputs_on_window(champion, champ_data), regression)
    chall_frame = window_frame(chall_data, outputs_on_window(challenger, chall_data), regression)
    baselines = {k: window_frame(data, v, regression) for k, v in baselines_on_window(data, regression).items()}
    report = run_gate(gopts, champ_frame, chall_frame, baselines, regression, len(challenger.class_names),
                      champ_label, chall_label, notes)
    report.staleness = dict(staleness or {})
    with registry.tracked_run(f"gate-{name}-{chall_label}", {"champion": champ_label, "challenger": chall_label,
                                                              "as_of": as_of, **{f"gate.{k}": v for k, v in
                                                                                 vars(gopts).items()}},
                              tags={"stocktrend.loop": "gate"}):
        md, js = write_report(report, folder)
        log_to_mlflow(report)
        mlflow.log_artifact(str(md))
        mlflow.log_artifact(str(js))
    if run_id:
        with mlflow.start_run(run_id=run_id):  # the report also lands on the challenger's own run
            mlflow.log_artifact(str(md), "gate")
            mlflow.log_artifact(str(js), "gate")
            log_to_mlflow(report)
    return report, md


def record_forced(name: str, version: int, by: str) -> None:
    """A forced promotion is recorded on the version it promoted."""
    from stocktrend.platform.registry import mlflow_registry as registry
    c = registry.client()
    for k, v in {"stocktrend.forced": "true", "stocktrend.forced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "stocktrend.forced_by": by}.items():
        c.set_model_version_tag(name, str(version), k, v)


def decide(name: str, report: GateReport | None, mode: str, champ_version: int | None, version: int,
           challenger_alias: int | None = None, by: str = "") -> tuple[str, int, str]:
    """The alias step, at the very end and under the registry lock: ``challenger`` points at the gated version and,
    on a pass (or with the gate off: recorded as forced), ``production`` moves to ``version`` as a compare-and-set
    against the champion the gate compared with. Returns (decision, exit code, reason)."""
    from stocktrend.platform.registry import mlflow_registry as registry
    passed = report is not None and report.passed
    also = {registry.CHALLENGER_ALIAS: challenger_alias} if challenger_alias else {}
    if mode == "dry-run":
        return ("dry-run: would promote", PROMOTED, "") if passed else ("dry-run: would keep", KEPT, "")
    if passed or mode == "off":
        moved = registry.promote(name, version, expected=champ_version, also=also)
        if moved["changed"]:
            if mode == "off":
                record_forced(name, version, by or "gate off")
            return ("promoted" if mode == "enabled" else "promoted (gate off)"), PROMOTED, ""
        return "kept", KEPT, moved.get("reason", "")
    if also:
        with registry.alias_lock(name):
            registry.set_alias(name, registry.CHALLENGER_ALIAS, challenger_alias)
    return "kept", KEPT, ""


@dataclass
class PromoteOutcome:
    decision: str
    exit_code: int
    champion: int | None
    version: int
    report: GateReport | None
    report_path: Path | None
    reason: str = ""


def promote_version(name: str, version: int, gopts: GateOptions | None = None, force: bool = False,
                    by: str = "stocktrend models promote", data_dir: str | None = None, universe: str | None = None,
                    as_of: str | None = None, say: Callable[[str], None] = print) -> PromoteOutcome:
    """``stocktrend models promote NAME VERSION``: gate the version against the current production on the last
    ``gate_days`` labelled days of its data (neither model saw them), then move ``production`` as a compare-and-set;
    ``force`` skips the gate and is recorded on the version."""
    import pandas as pd

    from stocktrend.loop.panel import load_panel
    from stocktrend.loop.score import comparable
    from stocktrend.platform.data.cache import default_home
    from stocktrend.platform.data.splits import gate_boundaries, gate_window
    from stocktrend.platform.evaluation.cross_section import MIN_NAMES
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    gopts = gopts or GateOptions()
    gopts.check()
    current = registry.aliases(name).get(registry.ALIAS)
    registry.get_version(name, str(version))  # an unknown version is one error line
    if force:
        moved = registry.promote(name, version, expected=current)
        if moved["changed"]:
            record_forced(name, version, by)
            return PromoteOutcome("promoted (forced, recorded on the version)", PROMOTED, current, version, None, None)
        return PromoteOutcome("unchanged" if moved["version"] == version else "kept", PROMOTED if moved["version"] ==
                              version else KEPT, current, version, None, None, moved.get("reason", ""))
    if current == version:
        return PromoteOutcome("unchanged (already production)", PROMOTED, current, version, None, None)
    path, _ = registry.download(name, str(version))
    candidate = Predictor.load(path)
    cfg = candidate.data_config
    if data_dir is not None:
        cfg = replace(cfg, data_dir=data_dir)
    elif universe is not None:
        cfg = replace(cfg, universe=universe, data_dir=None)
    universe_obj, panel = load_panel(cfg, as_of)
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    gopts.check_for(regression_of(candidate), len(universe_obj.tickers) >= MIN_NAMES)
    bounds = gate_boundaries(dates, cfg.horizon, gopts.gate_days, gopts.val_days, gopts.train_days)
    w0, _ = gate_window(dates, cfg.horizon, gopts.gate_days)
    folder = default_home() / "reports" / f"promote-{name}-v{version}"
    notes = []
    try:
        cv, cand, note = stand_in(name, version, candidate, w0, dates, cfg.horizon, "candidate")
        notes += [note] if note else []
        champ, champ_v = None, None
        if current is not None:
            cpath, _ = registry.download(name, str(current))
            champ_pred = Predictor.load(cpath)
            comparable(champ_pred, candidate, "candidate")
            champ_v, champ, note = stand_in(name, current, champ_pred, w0, dates, cfg.horizon, "champion")
            notes += [note] if note else []
        report, md = gate_challenger(champ, f"v{champ_v}" if champ_v else "none", cand, f"v{cv}", None, panel,
                                     replace(cfg, as_of=as_of), bounds, gopts, name, folder, str(dates[-1].date()),
                                     notes)
    except GateRefusal as exc:
        report = refused(gopts, f"v{current}", f"v{version}", str(exc))
        md, _ = write_report(report, folder)
    for line in report.table():
        say(line)
    decision, code, reason = decide(name, report, gopts.mode, current, version, by=by)
    return PromoteOutcome(decision, code, current, version, report, md, reason)
