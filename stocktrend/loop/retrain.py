"""``stocktrend retrain`` (and ``python -m stocktrend.loop retrain``): the evening step of the daily loop.

1. The champion is the version holding ``production``. Its kind, architecture, training recipe and data settings are
   retrained on the data as of ``--as-of`` (default: the last day of the data; nothing later is read), with the gate
   window as the test segment, so the challenger never trains or early-stops on it. ``--search`` runs a small Tune
   search over the champion's kind instead (its trials see the same split) and takes its best trial.
2. The challenger is registered (no alias yet) and the gate compares it with the champion on the window
   (``stocktrend.loop.gate``); the report is printed and logged as an artifact of the challenger's MLflow run.
3. ``--refit``: when the gate passed, the same configuration is trained again for the gated version's epoch count
   (gbm: its number of trees) on every labelled day through the as-of day, registered as its own version with
   lineage to the gated one (tag ``stocktrend.refit_of``), and that version is promoted: the served model's
   staleness drops from the gate split's (the window, the validation block and the purges) to none.
4. At the end, in one step under the registry lock (``stocktrend.loop.door.decide``): ``challenger`` points at the
   gated version and, if the gate passed, ``production`` moves (the old holder becomes ``previous_production``) as a
   compare-and-set against the champion the gate compared with. A retrain that fails or is killed before this step
   leaves every alias as it was; two retrains that finish at once cannot both move ``production``.

Staleness: trading days between the challenger's last training label and the as-of day, printed, in the gate report
and on the registered version (tag ``stocktrend.staleness_days``); at most ``staleness_bound`` for a gate split.

Exit codes (CLI): 0 promoted (or would be, with ``--gate dry-run``), 3 the champion was kept, 2 user error, 1 failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from stocktrend.loop.door import (KEPT, PROMOTED, REFIT_TAG, GateRefusal, decide, gate_challenger, regression_of,
                                  stand_in)
from stocktrend.loop.gate import GateOptions, GateReport, refused, write_report
from stocktrend.loop.panel import load_panel
from stocktrend.platform.data.sources import DataValidationError
from stocktrend.platform.data.splits import (check_before_window, gate_boundaries, gate_window, refit_boundaries,
                                             staleness, staleness_bound)

log = logging.getLogger(__name__)
__all__ = ["KEPT", "PROMOTED", "RetrainOptions", "RetrainOutcome", "retrain", "load_panel"]


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
    refit: bool = True  # after a pass: retrain on every labelled day through the as-of day, promote that version


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
    staleness: dict[str, Any] = field(default_factory=dict)
    refit: int | None = None  # the refit version, when --refit trained one


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


def _check_universe(champion, universe) -> None:
    trained = set(champion.ckpt["tickers"])
    unknown = sorted(set(universe.tickers) - trained)
    if unknown:
        raise DataValidationError(f"the champion was not trained for these tickers: {', '.join(unknown[:8])} (it "
                                  f"knows {', '.join(sorted(trained)[:8])}); retrain on its own universe")


def train_challenger(champion, data, opts: RetrainOptions, name: str, as_of: str, say) -> tuple[int, str, Any]:
    """Retrain the champion's configuration on ``data`` (split with the gate window as test); register it without an
    alias. Returns (version, MLflow run id, the challenger's Predictor)."""
    from stocktrend.platform.evaluation.walkforward import config_for_columns, retrain_config
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
    from stocktrend.platform.evaluation.walkforward import monitored_metric
    from stocktrend.tune import SEARCH_METRICS
    from stocktrend.tune.options import SearchOptions
    preset = champion.ckpt.get("extra", {}).get("train_config", {}).get("preset", "small")
    search_metric = monitored_metric(champion)
    if search_metric not in SEARCH_METRICS:  # e.g. val_f1 / val_dir_acc: trials report no such metric to rank by
        search_metric = "val_loss"
    sopts = SearchOptions(name=f"retrain-{name}-{as_of}-{int(time.time())}", preset=preset,
                          model=champion.model_kind, num_samples=opts.search_trials, max_epochs=opts.search_epochs,
                          grace_period=min(2, opts.search_epochs), tickers=data_cfg.tickers,
                          data_dir=data_cfg.data_dir, universe=data_cfg.universe, label_kind=data_cfg.label_kind,
                          ticker_id=data_cfg.ticker_id, model_name=name, address=opts.address,
                          metric=search_metric)
    say(f"retrain      : a {opts.search_trials}-trial search over {champion.model_kind} as of {as_of}")
    from stocktrend.tune.search import run_search
    res = run_search(sopts, panel=panel, data_config=data_cfg, bounds=bounds)
    info = registry.get_version(name, str(res["version"]))
    path, _ = registry.download(name, str(res["version"]))
    return int(res["version"]), info["run_id"], Predictor.load(path)


def refit_challenger(gated, gated_version: int, panel, data_cfg, opts: RetrainOptions, name: str, as_of: str, say
                     ) -> tuple[int, Any]:
    """The gated version's configuration and epoch count, trained on every labelled day through the as-of day;
    registered with lineage to the gated version (no alias). Returns (version, Predictor)."""
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.evaluation.walkforward import config_for_columns, retrain_config
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import train_job
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    every_day = refit_boundaries(dates, data_cfg.horizon, opts.gate.gate_days, opts.gate.train_days)
    data = prepare(panel, data_cfg, every_day)
    epochs = max(int(gated.ckpt.get("metrics", {}).get("best_epoch", 0)), 0) + 1
    tcfg = replace(retrain_config(gated, None), epochs=epochs, patience=0)
    say(f"refit        : v{gated_version}'s configuration, {epochs} epoch(s), on every labelled day "
        f"{' .. '.join(data.date_range('train'))}")
    ray_config = None
    if opts.workers and not tcfg.spec.is_sklearn:
        from stocktrend.platform.training.distributed import RayConfig
        ray_config = RayConfig(workers=opts.workers, address=opts.address)
    out = train_job(data.config, tcfg, model_name=name, data=data, model_config=config_for_columns(gated, data),
                    ray_config=ray_config, first_takes_production=False, run_name=f"refit-{name}-v{gated_version}-{as_of}",
                    tags={"stocktrend.loop": "refit", "stocktrend.as_of": as_of, REFIT_TAG: str(gated_version)},
                    extra={"refit_of": gated_version})
    registry.client().set_model_version_tag(name, str(out.version), REFIT_TAG, str(gated_version))
    return out.version, Predictor.load(out.checkpoint_path)


def _staleness(pred, dates, horizon: int, as_of: str) -> dict[str, Any]:
    days, label_end = staleness(dates, pred.ckpt["segment_dates"]["train"][1], horizon, as_of)
    return {"days": days, "last_label": str(label_end.date()), "as_of": as_of}


def retrain(opts: RetrainOptions, say: Callable[[str], None] = print) -> RetrainOutcome:
    """Retrain, gate, promote or keep. Raises user errors (DataValidationError, RegistryError, ValueError)."""
    from stocktrend.loop.score import comparable
    from stocktrend.platform.data.cache import default_home
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.evaluation.cross_section import MIN_NAMES
    from stocktrend.platform.registry import mlflow_registry as registry
    opts.gate.check()
    t0 = time.perf_counter()
    champ_version, champion = _champion(opts.model)
    say(f"champion     : {opts.model}@production = version {champ_version} ({champion.model_kind}, label "
        f"{champion.kind.value})")
    data_cfg = _data_config(champion, opts)
    universe, panel = load_panel(data_cfg, opts.as_of)
    _check_universe(champion, universe)
    opts.gate.check_for(regression_of(champion), len(universe.tickers) >= MIN_NAMES)  # before any training
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    as_of = str(dates[-1].date())
    h = data_cfg.horizon
    bounds = gate_boundaries(dates, h, opts.gate.gate_days, opts.gate.val_days, opts.gate.train_days)
    w0, w1 = gate_window(dates, h, opts.gate.gate_days)
    folder = Path(opts.report_dir) if opts.report_dir else None
    notes: list[str] = []
    judged = None
    try:
        judged_version, judged, note = stand_in(opts.model, champ_version, champion, w0, dates, h, "champion")
        notes += [note] if note else []
    except GateRefusal as exc:
        if opts.gate.mode != "off":
            report = refused(opts.gate, f"v{champ_version}", "none", str(exc))
            md, _ = write_report(report, folder or default_home() / "reports" / f"gate-{opts.model}-refused")
            for line in report.table():
                say(line)
            return RetrainOutcome("kept", KEPT, champ_version, 0, report, md, time.perf_counter() - t0, as_of)
        notes.append(f"{exc} (not checked: --gate off)")
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
    problems = check_before_window(seen, w0, dates, h)
    if problems:  # the split code guarantees this; a failure here is a bug, never a promotion
        raise RuntimeError(f"gate rule broken: {'; '.join(problems)}")
    stale = _staleness(challenger, dates, h, as_of)
    bound = staleness_bound(opts.gate.gate_days, opts.gate.val_days, challenger.seq_len, h, data_cfg.embargo)
    stale["bound"] = bound
    registry.client().set_model_version_tag(opts.model, str(version), "stocktrend.staleness_days", str(stale["days"]))
    say(f"staleness    : {stale['days']} trading days between v{version}'s last training label ({stale['last_label']})"
        f" and {as_of} (bound {bound}: window {opts.gate.gate_days} + validation {opts.gate.val_days} + purge "
        f"{challenger.seq_len + data_cfg.embargo} + 2 x horizon {h})")
    folder = folder or default_home() / "reports" / f"gate-{opts.model}-v{version}"
    report, md = gate_challenger(judged, f"v{judged_version}" if judged is not None else "unchecked", challenger,
                                 f"v{version}", run_id, panel, data_cfg, bounds, opts.gate, opts.model, folder,
                                 as_of, notes, stale)
    for line in report.table():
        say(line)
    target, refit_version = version, None
    if opts.refit and opts.gate.mode != "dry-run" and (report.passed or opts.gate.mode == "off"):
        refit_version, refit = refit_challenger(challenger, version, panel, data_cfg, opts, opts.model, as_of, say)
        rstale = _staleness(refit, dates, h, as_of)
        registry.client().set_model_version_tag(opts.model, str(refit_version), "stocktrend.staleness_days",
                                                str(rstale["days"]))
        say(f"staleness    : {rstale['days']} trading days for the refit v{refit_version} (last training label "
            f"{rstale['last_label']})")
        stale = {**stale, "refit": rstale}
        target = refit_version
    decision, code, reason = decide(opts.model, report, opts.gate.mode, champ_version, target,
                                    challenger_alias=version, by="stocktrend retrain --gate off")
    return RetrainOutcome(decision, code, champ_version, version, report, md, time.perf_counter() - t0, as_of,
                          reason, stale, refit_version)
