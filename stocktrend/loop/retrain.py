"""``stocktrend retrain`` (and ``python -m stocktrend.loop retrain``): the evening step of the daily loop.

1. The champion is the version holding ``production``. Its kind, architecture, training recipe and data settings are
   retrained on the data as of ``--as-of`` (default: the last day of the data; nothing later is read), with the gate
   window as the test segment, so the challenger never trains or early-stops on it. ``--search`` runs a small Tune
   search over the champion's kind instead (its trials see the same split) and takes its best trial.
2. The challenger is registered (no alias yet) and the gate compares it with the champion on the window
   (``stocktrend.loop.gate``); the report is printed and logged as an artifact of the challenger's MLflow run.
3. At the end, in one step under the registry lock: ``challenger`` points at the new version and, if the gate
   passed, ``production`` moves to it (the old holder becomes ``previous_production``) as a compare-and-set against
   the champion the gate compared with. A retrain that fails or is killed before this step leaves every alias as it
   was; two retrains that finish at once cannot both move ``production`` (the second sees it moved and keeps).

Exit codes (CLI): 0 promoted (or would be, with ``--gate dry-run``), 3 the champion was kept, 2 user error, 1 failure.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stocktrend.loop.gate import GateOptions, GateReport, run_gate, window_frame, write_report
from stocktrend.platform.data.sources import DataValidationError, as_of_day
from stocktrend.platform.data.splits import check_before_window, gate_boundaries, gate_window

log = logging.getLogger(__name__)

PROMOTED, KEPT = 0, 3


@dataclass(frozen=True)
class RetrainOptions:
    model: str = "stocktrend"  # registered model name; the champion is its production version
    as_of: str | None = None  # the data as of this day (default: the last day of the data)
    universe: str | None = None  # default: the champion's own universe / data directory
    data_dir: str | None = None
    gate: GateOptions = field(default_factory=GateOptions)
    search: bool = False  # a small Tune search over the champion's kind instead of a plain retrain
    search_trials: int = 6
    search_epochs: int = 6
    epochs: int | None = None  # default: the champion's own recipe
    workers: int = 0  # > 0: Ray Train with this many workers (torch models)
    address: str | None = None
    report_dir: str | None = None  # default $STOCKTREND_HOME/reports/gate-<name>-v<challenger>


@dataclass
class RetrainOutcome:
    decision: str  # promoted | kept | dry-run pass | dry-run fail | promoted (no gate)
    exit_code: int
    champion: int
    challenger: int
    report: GateReport | None
    report_path: Path | None
    seconds: float
    as_of: str
    reason: str = ""


def _champion(name: str):
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    aliases = registry.aliases(name)
    if registry.ALIAS not in aliases:
        raise DataValidationError(f"model {name!r} has no production version to retrain (stocktrend train registers "
                                  f"a first one, which takes production)")
    version = aliases[registry.ALIAS]
    path, _ = registry.download(name, str(version))
    return version, Predictor.load(path)


def _data_config(champion, opts: RetrainOptions):
    cfg = champion.data_config
    if opts.data_dir is not None:
        cfg = replace(cfg, data_dir=opts.data_dir)
    elif opts.universe is not None:
        cfg = replace(cfg, universe=opts.universe, data_dir=None)
    return cfg


def load_panel(cfg, as_of: str | None):
    """The universe as of the day (checked against the data's range) and its features, once for the whole retrain."""
    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.universes import load_universe
    full = load_universe(cfg.data_dir, list(cfg.tickers) or None, list(cfg.market) if cfg.market is not None else
                         None, list(cfg.indicators), universe=cfg.universe, as_of=as_of)
    if as_of is not None:
        first, last = full.date_range()
        day = as_of_day(as_of)
        if day > last + pd.Timedelta(days=7) or day < first:
            # The cut loads nothing after the day; a day past the end shows as a last bar far before it.
            raise DataValidationError(f"--as-of {day.date()} is outside the data ({first.date()} .. {last.date()})")
    panel = load_or_build_panel(full, feature_set(cfg.features), use_cache=as_of is None)
    return full, panel


def _check_universe(champion, universe) -> None:
    trained = set(champion.ckpt["tickers"])
    unknown = sorted(set(universe.tickers) - trained)
    if unknown:
        raise DataValidationError(f"the champion was not trained for these tickers: {', '.join(unknown[:8])} (it "
                                  f"knows {', '.join(sorted(trained)[:8])}); retrain on its own universe")


def _regression(pred) -> bool:
    return pred.task == "regression"


def _outputs(pred, data) -> np.ndarray:
    """A model's output matrix on the window, reduced to what the gate scores (class probabilities, or the return)."""
    out, _ = pred.predict_proba(data.windows(data.samples["test"]))
    return out[:, :1] if _regression(pred) else out[:, :len(pred.class_names)]


def _baselines(data, regression: bool) -> dict[str, np.ndarray]:
    if regression:
        from stocktrend.platform.evaluation.regression import regression_baselines
        return {k: np.asarray(v, dtype=np.float64)[:, None] for k, v in regression_baselines(data).items()
                if k != "gradient_boosting"}
    from stocktrend.platform.evaluation.metrics import baseline_probabilities
    return {k: v for k, v in baseline_probabilities(data).items() if k != "gradient_boosting"}


def train_challenger(champion, data, opts: RetrainOptions, name: str, as_of: str, say) -> tuple[int, str, Any]:
    """Retrain the champion's configuration on ``data`` (split with the gate window as test); register it without an
    alias. Returns (version, MLflow run id, the challenger's Predictor)."""
    from stocktrend.platform.evaluation.retrain import config_for_columns, retrain_config
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import train_job
    tcfg = retrain_config(champion, opts.epochs)
    mcfg = config_for_columns(champion, data)  # the towers' / static columns re-derived for the new selection
    ray_config = None
    if opts.workers:
        from stocktrend.platform.training.distributed import RayConfig
        ray_config = RayConfig(workers=opts.workers, address=opts.address)
    say(f"retrain      : {champion.model_kind} on {len(data.tickers)} ticker(s) as of {as_of}: train "
        f"{' .. '.join(data.date_range('train'))}, validation {' .. '.join(data.date_range('val'))}")
    out = train_job(data.config, tcfg, model_name=name, data=data, model_config=mcfg, ray_config=ray_config,
                    first_takes_production=False, run_name=f"retrain-{name}-{as_of}",
                    tags={"stocktrend.loop": "retrain", "stocktrend.as_of": as_of})
    return out.version, out.run_id, Predictor.load(out.checkpoint_path)


def search_challenger(champion, panel, data_cfg, bounds, opts: RetrainOptions, name: str, as_of: str, say
                      ) -> tuple[int, str, Any]:
    """A small Tune search over the champion's kind on the same split; the best trial is the challenger."""
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.tune.options import SearchOptions
    preset = champion.ckpt.get("extra", {}).get("train_config", {}).get("preset", "small")
    sopts = SearchOptions(name=f"retrain-{name}-{as_of}-{int(time.time())}", preset=preset,
                          model=champion.model_kind, num_samples=opts.search_trials, max_epochs=opts.search_epochs,
                          grace_period=min(2, opts.search_epochs), tickers=data_cfg.tickers,
                          data_dir=data_cfg.data_dir, universe=data_cfg.universe, label_kind=data_cfg.label_kind,
                          ticker_id=data_cfg.ticker_id, model_name=name, address=opts.address,
                          metric="val_loss")
    say(f"retrain      : a {opts.search_trials}-trial search over {champion.model_kind} as of {as_of}")
    from stocktrend.tune.search import run_search
    res = run_search(sopts, panel=panel, data_config=data_cfg, bounds=bounds)
    info = registry.get_version(name, str(res["version"]))
    path, _ = registry.download(name, str(res["version"]))
    return int(res["version"]), info["run_id"], Predictor.load(path)


def retrain(opts: RetrainOptions, say: Callable[[str], None] = print) -> RetrainOutcome:
    """Retrain, gate, promote or keep. Raises user errors (DataValidationError, RegistryError, ValueError)."""
    from stocktrend.platform.data.cache import default_home
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.loop.score import comparable
    opts.gate.check()
    t0 = time.perf_counter()
    champ_version, champion = _champion(opts.model)
    say(f"champion     : {opts.model}@production = version {champ_version} ({champion.model_kind}, label "
        f"{champion.kind.value})")
    data_cfg = _data_config(champion, opts)
    universe, panel = load_panel(data_cfg, opts.as_of)
    _check_universe(champion, universe)
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    as_of = str(dates[-1].date())
    bounds = gate_boundaries(dates, data_cfg.horizon, opts.gate.gate_days, data_cfg.fractions[1])
    w0, w1 = gate_window(dates, data_cfg.horizon, opts.gate.gate_days)
    seen = {f"the champion's {seg} segment": tuple(champion.ckpt["segment_dates"][seg]) for seg in ("train", "val")
            if seg in champion.ckpt.get("segment_dates", {})}
    problems = check_before_window(seen, w0, dates, data_cfg.horizon)
    if problems:
        raise DataValidationError(f"the gate window {w0.date()} .. {w1.date()} holds days the champion saw: "
                                  f"{'; '.join(problems)}; retrain with a later --as-of or a smaller --gate-days")
    data_cfg = replace(data_cfg, as_of=opts.as_of)
    data = prepare(panel, data_cfg, bounds)
    if opts.search:
        version, run_id, challenger = search_challenger(champion, panel, data_cfg, bounds, opts, opts.model, as_of,
                                                        say)
    else:
        version, run_id, challenger = train_challenger(champion, data, opts, opts.model, as_of, say)
    say(f"challenger   : version {version} (run {run_id})")
    comparable(champion, challenger)
    seen = {f"the challenger's {seg} segment": tuple(challenger.ckpt["segment_dates"][seg]) for seg in ("train", "val")}
    problems = check_before_window(seen, w0, dates, data_cfg.horizon)
    if problems:  # the split code guarantees this; a failure here is a bug, never a promotion
        raise RuntimeError(f"gate rule broken: {'; '.join(problems)}")

    folder = Path(opts.report_dir) if opts.report_dir else default_home() / "reports" / f"gate-{opts.model}-v{version}"
    report, md = gate_challenger(champion, champ_version, challenger, version, run_id, panel, data_cfg, bounds,
                                 opts.gate, opts.model, folder, as_of)
    for line in report.table():
        say(line)
    decision, code, reason = decide(opts.model, report, opts.gate.mode, champ_version, version)
    return RetrainOutcome(decision, code, champ_version, version, report, md, time.perf_counter() - t0, as_of,
                          reason)


def gate_challenger(champion, champ_version: int, challenger, version: int, run_id: str | None, panel, data_cfg,
                    bounds, gopts: GateOptions, name: str, folder: Path, as_of: str) -> tuple[GateReport, Path]:
    """Score champion, challenger and the baselines on the gate window of ``panel`` and judge the challenger with
    MLflow (a ``gate-...`` run with the evaluations nested); the report also lands on the challenger's run."""
    import mlflow

    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.registry import mlflow_registry as registry
    regression = _regression(challenger)
    data = prepare(panel, replace(data_cfg, sequence_length=challenger.seq_len, top_k=challenger.data_config.top_k),
                   bounds)
    chall_data = data.with_transforms(challenger.transforms)
    champ_data = prepare(panel, replace(champion.data_config, as_of=data_cfg.as_of, data_dir=data_cfg.data_dir,
                                        universe=data_cfg.universe), bounds).with_transforms(champion.transforms)
    frames = {"champion": window_frame(champ_data, _outputs(champion, champ_data), regression),
              "challenger": window_frame(chall_data, _outputs(challenger, chall_data), regression)}
    baselines = {k: window_frame(data, v, regression) for k, v in _baselines(data, regression).items()}
    with registry.tracked_run(f"gate-{name}-v{version}", {"champion": champ_version, "challenger": version,
                                                          "as_of": as_of, **{f"gate.{k}": v for k, v in
                                                                             vars(gopts).items()}},
                              tags={"stocktrend.loop": "gate"}):
        report = run_gate(gopts, frames["champion"], frames["challenger"], baselines, regression,
                          len(challenger.class_names), f"v{champ_version}", f"v{version}")
        md, js = write_report(report, folder)
        mlflow.log_artifact(str(md))
        mlflow.log_artifact(str(js))
    if run_id:
        with mlflow.start_run(run_id=run_id):  # the report also lands on the challenger's own run
            mlflow.log_artifact(str(md), "gate")
            mlflow.log_artifact(str(js), "gate")
            mlflow.log_metrics({f"gate_{k}": v for k, v in report.metrics["challenger"].items() if np.isfinite(v)})
            mlflow.set_tag("stocktrend.gate", "pass" if report.passed else "fail")
    return report, md


def decide(name: str, report: GateReport, mode: str, champ_version: int, version: int) -> tuple[str, int, str]:
    """The alias step, at the very end and under the registry lock: ``challenger`` points at the new version and, on a
    pass (or with the gate off), ``production`` moves as a compare-and-set against the champion. Returns (decision,
    exit code, reason)."""
    from stocktrend.platform.registry import mlflow_registry as registry
    if mode == "dry-run":
        return ("dry-run: would promote", PROMOTED, "") if report.passed else ("dry-run: would keep", KEPT, "")
    if report.passed or mode == "off":
        moved = registry.promote(name, version, expected=champ_version, also={registry.CHALLENGER_ALIAS: version})
        if moved["changed"]:
            return ("promoted" if mode == "enabled" else "promoted (gate off)"), PROMOTED, ""
        return "kept", KEPT, moved.get("reason", "")
    with registry.alias_lock(name):
        registry.set_alias(name, registry.CHALLENGER_ALIAS, version)
    return "kept", KEPT, ""
