"""How one search trial runs, and what the driver does around trials.

A trial with one worker trains inside the Tune trial's own process (the same TrendModule, StockDataModule and Trainer
settings as ``training.fit``; Ray's ``TuneReportCheckpointCallback`` reports every epoch with a checkpoint): no nested
TorchTrainer, so no worker-group start-up (~18 s here) and no nested placement group that can outlive the trial
(Ray issue #54305, which hung searches on this machine). A trial with ``workers_per_trial > 1`` keeps Ray's
Tune-drives-Train pattern, with the bounded start and retries of ``raytrain.fit_ray``.

``TrialEvents`` is the Tune callback behind the default console: one line per trial event (started with its config,
stopped by ASHA, completed, failed with the path of its traceback), and after each trial it removes placement groups
whose creating actor is gone, so a search gives back every CPU it took.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from stocktrend.platform.training.scratch import scratch_dir

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.ckpt"  # the same name the Ray Train path uses (RayTrainReportCallback)
SKLEARN_FILE = "model.skops"  # an rf / gbm trial's fitted model (skops: no pickle)

# What the last experiment's end looked like, set by TrialEvents in the driver (a restored search unpickles its own
# callback instance, so the driver reads this rather than the instance it created).
LAST_RUN: dict[str, Any] = {}


def trial_fn(config: dict[str, Any], panel=None, base=None) -> None:
    """One trial: rebuild the windows for this trial's sequence length / top-K (on the streaming path: fit the plan
    by streaming passes over the partitioned ``panel``), then train its model (in process,
    through Ray Train when the trial asks for more than one worker, or scikit-learn for rf / gbm)."""
    from stocktrend.platform.data.stream import prepare_any
    from stocktrend.platform.training.local import TrainConfig
    from stocktrend.tune.space import trial_model, trial_model_config

    opts = base["opts"]
    specs = opts.specs
    spec, _ = trial_model(config, specs)
    dcfg = base["data_config"]
    data = prepare_any(panel, replace(dcfg, sequence_length=int(config["sequence_length"]), top_k=int(config["top_k"]),
                                  label_kind=spec.label_for(dcfg.label_kind)), base.get("bounds"))
    spec, mcfg = trial_model_config(data, opts.preset, config, specs)
    lr = float(config.get("lr", 2e-4))
    tcfg = TrainConfig(preset=opts.preset, model=spec.kind, epochs=opts.max_epochs,
                       batch_size=int(config.get("batch_size", 64)), lr=lr, max_lr=lr * 5,
                       weight_decay=float(config.get("weight_decay", 5e-3)), accumulate=1, patience=opts.max_epochs,
                       monitor=opts.metric, monitor_mode=opts.mode, seed=opts.seed, progress=False,
                       epoch_windows=opts.epoch_windows)
    if spec.is_sklearn:
        _fit_sklearn(data, tcfg, mcfg)
    elif opts.workers_per_trial <= 1 and not opts.nested_train:
        _train_in_process(data, tcfg, mcfg, threads=max(1, int(round(opts.cpus_per_worker))))
    else:
        _train_with_ray_train(data, tcfg, mcfg, opts, base["storage"])


def _fit_sklearn(data, tcfg, mcfg) -> None:
    """rf / gbm: one fit, one report (the model file, skops bytes, as the trial's checkpoint)."""
    from ray import tune

    from stocktrend.models.sklearn_base import dumps
    from stocktrend.platform.training.sklearn_fit import fit_sklearn
    res = fit_sklearn(data, tcfg, mcfg, run_test=False)
    with scratch_dir("stocktrend-trial-") as tmp:
        (Path(tmp) / SKLEARN_FILE).write_bytes(dumps(res.module.model.estimator))
        tune.report({k: v for k, v in res.history[0].items() if k != "epoch"},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


def _train_in_process(data, tcfg, mcfg, threads: int) -> None:
    import lightning.pytorch as pl
    import torch
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    from stocktrend.platform.training.local import averaging, build_trainer, data_module, make_module

    # Ray sets OMP_NUM_THREADS from the trial's CPUs; torch's intra-op pool is set explicitly so a trial uses exactly
    # the cores it reserved (two 1-CPU trials side by side do not fight over both cores).
    torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    from ray import tune
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a resumed trial rebuilds the network its checkpoint records, whatever the presets say
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
        stored = (saved.get("hyper_parameters") or {}).get("model_config")
        if stored:
            mcfg = tcfg.spec.config_from_dict(stored)
    module = make_module(data, tcfg, mcfg)
    report = TuneReportCheckpointCallback(filename=CHECKPOINT_FILE, on="validation_end")
    with scratch_dir("stocktrend-trial-") as tmp:
        trainer = build_trainer(tcfg, [*averaging(tcfg), report], Path(tmp), enable_checkpointing=False)
        if checkpoint is None:
            trainer.fit(module, datamodule=data_module(data, tcfg))
            return
        # A trial restarted by FailureConfig(max_failures) (its node was lost, its process killed): resume weights,
        # optimiser, scheduler and epoch from its last reported checkpoint instead of starting again.
        with checkpoint.as_directory() as d:
            log.info("trial resumes from its checkpoint %s", checkpoint.path)
            trainer.fit(module, datamodule=data_module(data, tcfg), ckpt_path=os.path.join(d, CHECKPOINT_FILE),
                        weights_only=True)


def _train_with_ray_train(data, tcfg, mcfg, opts, storage: str) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from stocktrend.platform.training.distributed import RayConfig, fit_ray

    trial_id = tune.get_context().get_trial_id()
    rcfg = RayConfig(workers=opts.workers_per_trial, cpus_per_worker=opts.cpus_per_worker,
                     gpus_per_worker=opts.gpus_per_worker, storage=storage, max_failures=0, keep_checkpoints=1,
                     run_name=f"train-{trial_id}", start_timeout_s=opts.start_timeout_s)
    fit_ray(data, tcfg, mcfg, rcfg, run_callbacks=[TuneReportCallback()], run_test=False)


def orphan_placement_groups() -> list[str]:
    """Ids of live placement groups created by an actor that is gone (a Train controller of a stopped trial).

    Ray's table exposes the creator only in the raw GCS record, so it is read from there; a group whose creator is
    alive (a running Train run, Tune's own trial groups, which the driver creates) is never touched."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    out = []
    accessor = state._connect_and_get_accessor()
    for raw in accessor.get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if pg.state == gcs_pb2.PlacementGroupTableData.REMOVED or pg.is_detached:
            continue
        creator = pg.creator_actor_id.hex() if pg.creator_actor_id else ""
        if not creator or creator.strip("f0") == "":
            continue  # created by a driver (Tune's trial groups): Tune manages those
        if pg.creator_actor_dead or not _actor_alive(creator):
            out.append(ray.PlacementGroupID(pg.placement_group_id).hex())
    return out


def _actor_alive(actor_id: str) -> bool:
    import ray
    from ray.util.state import get_actor
    try:
        # This driver's instance by its GCS address: without one, Ray's state API fails whenever another Ray instance
        # runs on the machine ("Found multiple active Ray instances"), and every group would be assumed alive.
        info = get_actor(actor_id, address=ray.get_runtime_context().gcs_address, timeout=10)
    except Exception:  # state API unavailable: assume alive (never remove what we cannot prove is orphaned)
        return True
    return info is not None and getattr(info, "state", "DEAD") != "DEAD"


def remove_orphan_placement_groups() -> int:
    """Remove the orphaned groups; returns how many were removed."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    import ray
    removed = 0
    for pg_id in orphan_placement_groups():
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
            log.info("removed placement group %s left by a stopped trial", pg_id)
        except Exception as exc:  # already gone
            log.debug("placement group %s: %s", pg_id, exc)
    return removed


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class TrialEvents(Callback):
    """One console line per trial event, orphan placement-group clean-up, and which trials an interrupt cut short."""

    def __init__(self, metric: str, mode: str, max_epochs: int, total: int, cleanup_groups: bool,
                 say: Callable[[str], None] | None = None):
        self.metric, self.mode, self.max_epochs, self.total = metric, mode, max_epochs, total
        self.cleanup_groups = cleanup_groups
        self.say = say or print
        self.best: dict[str, float] = {}
        self.epochs: dict[str, int] = {}
        self.order: dict[str, int] = {}
        self.removed_groups = 0
        self.timing: dict[str, dict[str, Any]] = {}  # per trial: start time, epoch durations, wall seconds
        self.restarts: dict[str, int] = {}  # per trial: restarts from its checkpoint (FailureConfig)

    def __getstate__(self):  # the experiment state pickles callbacks; the console function stays behind
        d = dict(self.__dict__)
        d["say"] = None
        return d

    def __setstate__(self, d):
        d.setdefault("restarts", {})
        self.__dict__.update(d)
        self.say = self.say or print

    def _name(self, trial) -> str:
        n = self.order.setdefault(trial.trial_id, len(self.order) + 1)
        return f"trial {n}/{self.total} ({trial.trial_id})"

    def on_trial_start(self, iteration, trials, trial, **info):
        import time
        self.timing[trial.trial_id] = {"start": time.time(), "epoch_s": []}
        cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.config.items())
        self.say(f"  {self._name(trial)} started: {cfg}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is not None:
            old = self.best.get(trial.trial_id)
            better = old is None or (value < old if self.mode == "min" else value > old)
            if better:
                self.best[trial.trial_id] = float(value)
        self.epochs[trial.trial_id] = int(result.get("training_iteration", 0))
        if trial.trial_id in self.timing and "time_this_iter_s" in result:
            self.timing[trial.trial_id]["epoch_s"].append(float(result["time_this_iter_s"]))

    def _ended(self, trial, status: str) -> None:
        import time
        t = self.timing.get(trial.trial_id)
        if t is not None and "wall_s" not in t:
            t.update(wall_s=time.time() - t["start"], status=status)
            LAST_RUN.setdefault("timing", {})[trial.trial_id] = t

    def _summary(self, trial) -> str:
        best = self.best.get(trial.trial_id)
        return (f"{self.epochs.get(trial.trial_id, 0)} epoch(s), best {self.metric} "
                f"{best:.4f}" if best is not None else "no epoch reported")

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = self.epochs.get(trial.trial_id, 0)
        what = "stopped by ASHA after" if epochs < self.max_epochs else "completed:"
        self._ended(trial, "stopped" if epochs < self.max_epochs else "completed")
        self.say(f"  {self._name(trial)} {what} {self._summary(trial)}")
        self._cleanup()

    def on_trial_recover(self, iteration, trials, trial, **info):
        # FailureConfig(max_failures) restarts the trial from its last checkpoint (a lost node, a killed worker).
        n = self.restarts[trial.trial_id] = self.restarts.get(trial.trial_id, 0) + 1
        LAST_RUN.setdefault("restarts", {})[trial.trial_id] = n
        err = getattr(trial, "error_file", None)
        first = ""
        try:
            first = _last_error_line(Path(err).read_text()) if err else ""
        except OSError:
            pass
        self.say(f"  {self._name(trial)} failed after {self._summary(trial)} ({(first or 'its worker was lost')[:120]}); "
                 f"restarting from its last checkpoint (restart {n})")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "error")
        err = getattr(trial, "error_file", None) or os.path.join(str(getattr(trial, "local_path", "")), "error.txt")
        first = ""
        try:
            first = _last_error_line(Path(err).read_text())
        except OSError:
            pass
        self.say(f"  {self._name(trial)} FAILED after {self._summary(trial)}: {first or 'see the log'} "
                 f"(traceback: {err})")
        self._cleanup()

    def on_experiment_end(self, trials, **info):
        # Trials started in this session that never completed nor failed were cut short by Ctrl-C (Tune stops them
        # in its clean-up, which calls no per-trial hook). Whether the run was interrupted is decided by the driver.
        started, ended = set(self.timing), {k for k, t in self.timing.items() if "wall_s" in t}
        LAST_RUN["unfinished_dirs"] = {str(t.path).rstrip("/").rsplit("/", 1)[-1] for t in trials
                                       if t.trial_id in started - ended}
        self._cleanup()

    def _cleanup(self) -> None:
        if not self.cleanup_groups:
            return
        try:
            self.removed_groups += remove_orphan_placement_groups()
        except Exception as exc:  # never let clean-up break the search
            log.debug("placement-group clean-up skipped: %s", exc)


def _last_error_line(text: str) -> str:
    """The most specific line of a traceback (the last 'SomethingError: ...' line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return ln[:300]
    return lines[-1][:300] if lines else ""
