"""``stocktrend replay``: the daily loop replayed over history, to see how it would have done live and what retraining
is worth.

From ``--start``, every ``--every`` trading days (a step day s_k): cut the data at s_k (nothing dated later is read:
``load_universe(as_of=...)``, the data layer's own cut), retrain with the gate exactly as ``stocktrend retrain`` does
(the challenger's test segment is the gate window, ``gate_boundaries``; the gate is ``gate_challenger`` and the alias
step ``decide``), then the version holding ``production`` answers every day until the next step. Step 0 trains the
first model the same way; it holds ``production`` at the start.

Step 0 has no champion: its model takes ``production`` only if it passes the gate's floors on its window (AUC above
chance, ...); until a model passes, the gated policies abstain (a realised rank IC of 0 on those days).
``--refit`` (implied by ``--policy gated-refit``) also trains, at every step, the same recipe on every labelled day
through the step day (no validation block, the gated version's epoch count); the ``gated-refit`` policy serves that
refit whenever the gated version passed the gate, so what serves is at most a horizon old.

Every retrain is independent of the gate's outcome (it retrains the same kind, architecture and recipe on the data as
of its day), so the trainings run as Ray tasks, several at a time (``--parallel``; a cluster replays faster than a
laptop with no code change), while the driver walks the steps in order: register, gate against the current champion,
move the aliases. Three policies share the same trained versions and the same days: ``gated`` (the gate decides),
``always`` (every retrain is promoted) and ``never`` (the first model serves throughout); ``--policy`` says which one
moves the replay's registry aliases, the report covers all three. Models and aliases go to a replay-scoped registry
name, ``replay-<name>``, never to the user's ``production``.

Resumable: each step is recorded in ``$STOCKTREND_HOME/replays/<name>/state.json`` (written atomically) when it is done;
Ctrl-C stops the replay (exit 130) and the same command resumes after the last finished step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from stocktrend.models import DEFAULT_KIND
from stocktrend.loop.gate import GateOptions
from stocktrend.platform.data.sources import DataValidationError, as_of_day

log = logging.getLogger(__name__)

POLICIES = ("gated", "gated-refit", "always", "never")


@dataclass(frozen=True)
class ReplayOptions:
    start: str
    end: str
    every: int = 21  # trading days between steps
    name: str = "replay"
    universe: str | None = "msft"
    data_dir: str | None = None
    model: str = DEFAULT_KIND
    preset: str = "small"
    label: str = "binary"
    sequence_length: int | None = None  # default: the universe's own (30; 10 for sp500_2010)
    top_k: int | None = None  # default: the universe's (data_defaults)
    search: bool = False  # each step runs a small Tune search (in the driver, one step at a time) instead
    policy: str = "gated-refit"  # which policy moves the replay registry's aliases (measured best: docs/results.md)
    gate: GateOptions = field(default_factory=GateOptions)
    refit: bool = False  # also train each step's refit on every labelled day (the gated-refit policy)
    epochs: int = 5  # the recipe of every step's training
    epoch_windows: int = 8192  # training windows per epoch (a fresh draw each epoch); 0 = all
    patience: int = 2
    parallel: int = 0  # step trainings at once (0 = one per CPU of the cluster)
    cost_bps: float = 5.0
    address: str | None = None

    def key(self) -> dict[str, Any]:
        """What must match for a rerun to resume (everything but how fast it runs)."""
        d = asdict(self)
        for k in ("parallel", "address"):
            d.pop(k)
        return d


def replay_dir(name: str) -> Path:
    from stocktrend.platform.data.cache import default_home
    return default_home() / "replays" / name


def data_config(opts: ReplayOptions):
    from stocktrend.platform.data.dataset import DataConfig
    from stocktrend.platform.data.universes import data_defaults
    d = data_defaults(None if opts.data_dir else opts.universe)
    return DataConfig(data_dir=opts.data_dir, universe=opts.universe or "msft", label_kind=opts.label,
                      features=d["features"], sequence_length=opts.sequence_length or d["sequence_length"],
                      fractions=tuple(d["fractions"]), top_k=d["top_k"] if opts.top_k is None else opts.top_k)


def plan_steps(opts: ReplayOptions, cfg) -> tuple[list[pd.Timestamp], pd.DatetimeIndex]:
    """The step days, and the trading days of the replay (the data's days between start and end). Every check of
    the arguments is here, before any work: one clear error each."""
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.universes import load_universe
    if opts.policy not in POLICIES:
        raise DataValidationError(f"unknown --policy {opts.policy!r}; use {', '.join(POLICIES)}")
    lo, hi = as_of_day(opts.start), as_of_day(opts.end)
    if hi <= lo:
        raise DataValidationError(f"--end {hi.date()} is not after --start {lo.date()}")
    if opts.every < cfg.horizon:
        raise DataValidationError(f"--every {opts.every} is below the label horizon ({cfg.horizon} days): a step "
                                  f"would retrain before the previous step's first outcome is known")
    u = load_universe(cfg.data_dir, list(cfg.tickers) or None, universe=cfg.universe, as_of=hi)
    days = pd.DatetimeIndex(sorted(set().union(*(f.index for f in u.tickers.values()))))
    for m in u.market.values():
        days = days.intersection(m.index)
    if len(days) == 0:
        starts = ", ".join(f"{k} {m.index[0].date()}" for k, m in u.market.items() if len(m.index))
        raise DataValidationError(f"the data up to --end {hi.date()} leaves no day with both ticker and market bars "
                                  f"(market data starts: {starts or 'none'}); move --end later")
    first, last = days[0], days[-1]
    if lo > last or hi < first:
        raise DataValidationError(f"the replay {lo.date()} .. {hi.date()} is outside the data ({first.date()} .. "
                                  f"{last.date()})")
    before = days[days <= lo]
    warmup = feature_set(cfg.features).warmup
    val_days = opts.gate.val_days
    need = warmup + opts.gate.gate_days + cfg.horizon + val_days + 3 * (cfg.sequence_length + cfg.horizon +
                                                                       cfg.embargo) + 100
    if len(before) < need:
        raise DataValidationError(
            f"--start {lo.date()} leaves {len(before)} trading days before it; the first step needs at least "
            f"{need}: the {warmup}-day feature warm-up, a {opts.gate.gate_days}-day gate window, the {val_days}-day "
            f"validation block, purges and 100 training days (the data start {first.date()}; start later)")
    span = days[(days >= lo) & (days <= hi)]
    steps = list(span[::opts.every])
    return steps, span


def recipe(opts: ReplayOptions):
    from stocktrend.platform.training.local import TrainConfig
    return TrainConfig(preset=opts.preset, model=opts.model, epochs=opts.epochs, epoch_windows=opts.epoch_windows,
                       patience=opts.patience, accumulate=1, progress=False)


def train_step(cfg, day: str, gate: GateOptions, tcfg, refit: bool = False) -> dict[str, Any]:
    """One step's training, anywhere (a Ray task): the data as of ``day`` (nothing later read), the gate split, the
    recipe; with ``refit`` also the same recipe for the gated fit's epoch count on every labelled day. Returns the
    checkpoints (plain data), the feature panel (for the driver's gate) and timings."""
    import torch

    from stocktrend.loop.panel import load_panel
    from stocktrend.platform.data.dataset import prepare
    from stocktrend.platform.data.splits import gate_boundaries, refit_boundaries
    from stocktrend.platform.registry.checkpoint import make_checkpoint
    from stocktrend.platform.training.local import fit, model_config_for, train_config_dict
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    from stocktrend.platform.data.universes import audit_step
    cut = replace(cfg, as_of=day)
    with audit_step(day):  # every load of the step is tagged with it (the read audit)
        _, panel = load_panel(cut, day)
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    bounds = gate_boundaries(dates, cut.horizon, gate.gate_days, gate.val_days, gate.train_days)
    label = tcfg.spec.label_for(cut.label_kind)
    data = prepare(panel, replace(cut, label_kind=label), bounds)
    t_data = time.perf_counter() - t0

    def trained(data, tcfg, extra):
        res = fit(data, tcfg, model_config_for(data, tcfg.preset, tcfg.spec), run_test=False)
        metrics = {"best_epoch": res.best_epoch if res.best_epoch is not None else -1, "epochs_run": res.epochs_run}
        if res.best_score is not None:
            metrics[f"best_{tcfg.monitor}"] = res.best_score
        return make_checkpoint(res.module.model, res.model_config, data, metrics,
                               extra={"train_config": train_config_dict(tcfg), "history": res.history,
                                      "replay_day": day, **extra}, kind=tcfg.spec)
    ckpt = trained(data, tcfg, {})
    out = {"ckpt": ckpt, "panel": panel, "bounds": bounds, "data_config": replace(cut, label_kind=label),
           "seconds_data": t_data}
    if refit:
        every_day = refit_boundaries(dates, cut.horizon, gate.gate_days, gate.train_days)
        full = prepare(panel, replace(cut, label_kind=label), every_day)
        epochs = max(int(ckpt["metrics"]["best_epoch"]), 0) + 1
        out["refit_ckpt"] = trained(full, replace(tcfg, epochs=epochs, patience=0), {"refit_of_step": day})
    out["seconds"] = time.perf_counter() - t0
    return out


def search_step(opts: ReplayOptions, cfg, day: str, name: str, k: int) -> dict[str, Any]:
    """One step as a Tune run: the data as of ``day``, the gate split, a small search over the model; its best trial
    is registered in the replay's registry."""
    from stocktrend.loop.panel import load_panel
    from stocktrend.platform.data.splits import gate_boundaries
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.tune.options import SearchOptions
    from stocktrend.tune.search import run_search
    t0 = time.perf_counter()
    from stocktrend.platform.data.universes import audit_step
    cut = replace(cfg, as_of=day)
    with audit_step(day):
        _, panel = load_panel(cut, day)
    dates = pd.DatetimeIndex(panel.meta["date"].unique()).sort_values()
    bounds = gate_boundaries(dates, cut.horizon, opts.gate.gate_days, opts.gate.val_days, opts.gate.train_days)
    sopts = SearchOptions(name=f"{name}-step{k}", preset=opts.preset, model=opts.model, num_samples=4,
                          max_epochs=opts.epochs, grace_period=min(2, opts.epochs), epoch_windows=opts.epoch_windows,
                          data_dir=cut.data_dir, universe=cut.universe, label_kind=cut.label_kind, model_name=name,
                          address=opts.address)
    res = run_search(sopts, panel=panel, data_config=cut, bounds=bounds)
    info = registry.get_version(name, str(res["version"]))
    return {"version": int(res["version"]), "run_id": info["run_id"], "checkpoint": res["checkpoint"],
            "panel": panel, "bounds": bounds, "data_config": cut, "seconds": time.perf_counter() - t0,
            "seconds_data": 0.0}


@dataclass
class ReplayState:
    path: Path
    options: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step index -> record

    @classmethod
    def load_or_new(cls, opts: ReplayOptions) -> ReplayState:
        path = replay_dir(opts.name) / "state.json"
        if path.is_file():
            d = json.loads(path.read_text())
            if d["options"] != json.loads(json.dumps(opts.key(), default=str)):
                diff = [k for k in d["options"] if d["options"][k] != json.loads(json.dumps(
                    opts.key(), default=str)).get(k)]
                raise DataValidationError(f"replay {opts.name!r} exists with other settings ({', '.join(diff)}): rerun "
                                          f"it with the same options to resume, or give another --name")
            return cls(path, d["options"], d["steps"])
        return cls(path, json.loads(json.dumps(opts.key(), default=str)))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"options": self.options, "steps": self.steps}, indent=1, default=str))
        os.replace(tmp, self.path)


def _eta(done: int, total: int, elapsed: float) -> str:
    if not done:
        return "?"
    left = elapsed / done * (total - done)
    return f"{int(left // 60)}m{int(left % 60):02d}s"


def replay(opts: ReplayOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a replay; returns the step records and the report's headline figures."""
    import ray

    from stocktrend.loop.door import decide, gate_challenger
    from stocktrend.loop.replay_report import ABSTAIN, report
    from stocktrend.platform.data.splits import check_before_window, gate_window
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor, save_checkpoint
    from stocktrend.platform.training.distributed import init_ray
    opts.gate.check()
    if opts.policy not in POLICIES:
        raise DataValidationError(f"unknown --policy {opts.policy!r}; use {', '.join(POLICIES)}")
    if opts.policy == "gated-refit":
        opts = replace(opts, refit=True)
    if opts.refit and opts.search:
        raise DataValidationError("--refit (or --policy gated-refit) goes with a plain retrain per step, not --search")
    cfg = data_config(opts)
    steps, span = plan_steps(opts, cfg)
    tcfg = recipe(opts)
    state = ReplayState.load_or_new(opts)
    from stocktrend.loop.replay_report import registry_name
    name = registry_name(opts.name)
    folder = replay_dir(opts.name)
    done = [k for k in range(len(steps)) if str(k) in state.steps and "decision" in state.steps[str(k)]]
    say(f"replay {opts.name}: {len(steps)} steps every {opts.every} trading days, {steps[0].date()} .. "
        f"{span[-1].date()}, {opts.model} ({opts.preset}, <= {opts.epochs} epochs of "
        f"{opts.epoch_windows or 'all'} windows), validation {opts.gate.val_days} days, "
        f"{'refit, ' if opts.refit else ''}policy {opts.policy}, registry {name!r}"
        + (f"; resuming after step {max(done) + 1} ({len(done)} done)" if done else ""))
    t0 = time.perf_counter()
    todo = [k for k in range(len(steps)) if k not in done]
    if todo:
        init_ray(opts.address)
        parallel = opts.parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=1)(train_step)
        pending: dict[int, Any] = {}
        queue = list(todo)
        models: dict[int, Any] = {}
        for k in range(len(steps)):
            rec = state.steps.get(str(k))
            if rec and rec.get("version"):
                models[int(rec["version"])] = Predictor.load(rec["checkpoint"])

        def register(ckpt, path, run_name, k, day, tags=None):
            with registry.tracked_run(run_name, {"replay": opts.name, "step": k, "as_of": day},
                                      tags={"stocktrend.loop": "replay", **(tags or {})}) as run:
                path = save_checkpoint(ckpt, path)
                version = registry.register_checkpoint(path, run.info.run_id, name, ckpt["metrics"],
                                                       description=run_name, ckpt=ckpt, first_takes_production=False)
            return version, run.info.run_id, path

        for k in todo:
            while not opts.search and queue and len(pending) < parallel + 1:  # one ahead keeps every CPU busy
                j = queue.pop(0)
                pending[j] = task.remote(cfg, str(steps[j].date()), opts.gate, tcfg, opts.refit)
            day = str(steps[k].date())
            refit_version = None
            if opts.search:
                out = search_step(opts, cfg, day, name, k)
                version, run_id, path = out["version"], out["run_id"], out["checkpoint"]
            else:
                out = ray.get(pending.pop(k))
                version, run_id, path = register(out["ckpt"], folder / f"step-{k:03d}" / registry.CHECKPOINT_FILE,
                                                 f"{name}-step{k}-{day}", k, day)
                if "refit_ckpt" in out:
                    out["refit_ckpt"]["extra"]["refit_of"] = version
                    refit_version, _, rpath = register(out["refit_ckpt"], folder / f"step-{k:03d}" / "refit" /
                                                       registry.CHECKPOINT_FILE, f"{name}-step{k}-{day}-refit", k,
                                                       day, {"stocktrend.refit_of": str(version)})
            challenger = Predictor.load(path)
            models[version] = challenger
            dates = pd.DatetimeIndex(out["panel"].meta["date"].unique()).sort_values()
            w0, _ = gate_window(dates, cfg.horizon, opts.gate.gate_days)
            seen = {f"step {k}'s {seg} segment": tuple(challenger.ckpt["segment_dates"][seg]) for seg in ("train",
                                                                                                          "val")}
            problems = check_before_window(seen, w0, dates, cfg.horizon)
            if problems:  # the split code guarantees this; a failure here is a bug, never a promotion
                raise RuntimeError(f"gate rule broken: {'; '.join(problems)}")
            rec = {"day": day, "version": version, "run_id": run_id, "checkpoint": str(path),
                   "train_seconds": out["seconds"], "data_seconds": out["seconds_data"]}
            if refit_version is not None:
                rec.update(refit=refit_version, refit_checkpoint=str(rpath))
            prev = state.steps[str(k - 1)] if k else None
            champ = int(prev["gated"]) if prev else ABSTAIN
            gate_report, md = gate_challenger(models[champ] if champ != ABSTAIN else None,
                                              f"v{champ}" if champ != ABSTAIN else "none", challenger, f"v{version}",
                                              run_id, out["panel"], out["data_config"], out["bounds"], opts.gate,
                                              name, folder / f"step-{k:03d}", day)
            rec["gate"] = {"passed": gate_report.passed, "champion": champ,
                           "metrics": {w: gate_report.metrics[w] for w in ("champion", "challenger")
                                       if w in gate_report.metrics},
                           "failures": gate_report.failures, "window": gate_report.window}
            passed = gate_report.passed
            rec.update(gated=version if passed else champ, always=version,
                       never=int(state.steps["0"]["never"]) if k else version)
            if opts.refit:
                rec["gated-refit"] = refit_version if passed else (int(prev["gated-refit"]) if prev else ABSTAIN)
            # The replay registry's aliases follow the chosen policy, through the loop's own alias step.
            current = registry.aliases(name).get(registry.ALIAS)
            target = rec["gated-refit"] if opts.policy == "gated-refit" else version
            mode = {"gated": "enabled", "gated-refit": "enabled", "always": "off"}.get(opts.policy,
                                                                                    "off" if k == 0 else None)
            if mode:
                decision, _, _ = decide(name, gate_report, mode, current, target if passed or mode == "off"
                                        else version, challenger_alias=version, by=f"replay --policy {opts.policy}")
            else:
                with registry.alias_lock(name):
                    registry.set_alias(name, registry.CHALLENGER_ALIAS, version)
                decision = "kept (policy never)"
            if k == 0:
                decision = f"first model: {'passed the floors' if passed else 'FAILED the floors (gated abstains)'}"
            rec["decision"] = decision
            state.steps[str(k)] = rec
            state.save()
            out = None  # the panel can go
            elapsed = time.perf_counter() - t0
            n_done = len([x for x in todo if str(x) in state.steps and "decision" in state.steps[str(x)]])
            g = rec["gate"]
            key = next(iter(g["metrics"]["challenger"]), None)
            vs = f" vs {g['metrics']['champion'][key]:.3f}" if key and "champion" in g["metrics"] else ""
            gate_txt = (f"; gate vs {'v' + str(champ) if champ else 'floors'}: {'PASS' if passed else 'FAIL'}"
                        + (f" ({key} {g['metrics']['challenger'][key]:.3f}{vs})" if key else ""))
            pols = ", ".join(f"{p} v{rec[p]}" for p in POLICIES if p in rec)
            also = f" (+ refit v{refit_version})" if refit_version else ""
            say(f"  step {k + 1}/{len(steps)} {day}: v{version}{also}"
                f" trained ({rec['train_seconds']:.0f} s){gate_txt} -> {rec['decision']}; production: {pols}; "
                f"elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s, left ~{_eta(n_done, len(todo), elapsed)}")
    say(f"steps done in {time.perf_counter() - t0:.0f} s; scoring the served days and writing the report")
    init_ray(opts.address)
    result = report(opts, cfg, steps, span, state, say)
    result["seconds"] = time.perf_counter() - t0
    return result
