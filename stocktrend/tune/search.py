"""Ray Tune + Optuna (TPE) + ASHA over the zoo's models: ``run_search``; the command line is ``stocktrend tune``
(``stocktrend/cli/tune.py``), also run as ``python -m stocktrend.tune.search`` (the ``ray job submit`` entry point).

Each trial is a Tune function trainable (``stocktrend.tune.trial``). With one worker per trial (the default) it trains
in its own process with the platform's Lightning module and reports each epoch with a checkpoint; with
``--workers-per-trial N > 1`` it launches a bounded TorchTrainer (``stocktrend.platform.training.distributed.fit_ray``). One
report per epoch either way, so ASHA's ``training_iteration`` is the epoch. The features are built
once by the driver and shipped to trials through the object store (``tune.with_parameters``); each trial only
rebuilds labels/split/transforms/windows for its own sequence length and top-K.

The Optuna study lives in SQLite (``$STOCKTREND_HOME/optuna.db`` by default; optuna-dashboard can open it), the Tune
experiment under ``$STOCKTREND_HOME/tune/<name>``: rerunning the same command (same ``--name``) resumes an interrupted
search. At the end every trial becomes an MLflow run nested under the search run, the trial table is printed and saved
(CSV + Parquet), and the best trial's checkpoint is registered (``--promote``: offered to ``production`` through the
gate of ``stocktrend models promote``).

Console: one line per trial event and the final table; ``--verbose`` shows Ray's own table and logs. Ctrl-C ends the
search (Tune saves its state), writes the table of the trials so far and exits 130; the same command resumes it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from typing import Any

import pandas as pd

from stocktrend.platform.data.cache import default_home
from stocktrend.tune.options import SearchOptions
from stocktrend.tune.results import best_checkpoint, register_best, trial_table

log = logging.getLogger(__name__)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the search; ``summary`` says what was kept and how to resume."""

    def __init__(self, summary: str):
        super().__init__(summary)
        self.summary = summary


def _storage_root(kind: str) -> str:
    """$STOCKTREND_STORAGE/<kind> (a URI or path every node can reach, e.g. s3://bucket/stocktrend on a cluster), else
    $STOCKTREND_HOME/<kind>."""
    base = os.environ.get("STOCKTREND_STORAGE")
    return f"{base.rstrip('/')}/{kind}" if base else str(default_home() / kind)


def _wait_released(cpus: float, timeout_s: float = 15.0) -> None:
    """Tune stops trial actors asynchronously; wait (bounded) until the CPUs free before the search are free again,
    so the next stage (a retrain) does not queue behind them."""
    import ray
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if float(ray.available_resources().get("CPU", 0)) >= cpus - 1e-9:
            return
        time.sleep(0.1)
    log.warning("the search's CPUs were not all released within %.0f s (free %g of %g before it)", timeout_s,
                float(ray.available_resources().get("CPU", 0)), cpus)


def _sigint_marker(signum, frame):
    raise KeyboardInterrupt


def _fit_noting_interrupt(tuner):
    """``tuner.fit()``, and whether Ctrl-C ended it. Tune's SIGINT handler ends the run gracefully (state saved, trials
    stopped, results returned) and then puts back the handler it found; installing a marker first tells the two
    endings apart (after a normal end Tune's own handler is still in place). A second Ctrl-C during Tune's clean-up
    reaches the marker, which raises KeyboardInterrupt as Python's default would."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit(), False
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _sigint_marker)
    try:
        grid = tuner.fit()
        interrupted = signal.getsignal(signal.SIGINT) is _sigint_marker
    finally:
        signal.signal(signal.SIGINT, previous)
    return grid, interrupted


def _say(line: str) -> None:
    print(line, flush=True)


def _searcher(opts: SearchOptions, defaults: list[dict]):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch
    url = opts.optuna_storage or f"sqlite:///{default_home() / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    searcher = OptunaSearch(points_to_evaluate=[*defaults, *opts.extra_points],
                            sampler=optuna.samplers.TPESampler(seed=opts.seed),
                            storage=storage, study_name=opts.name)
    return ConcurrencyLimiter(searcher, max_concurrent=opts.max_concurrent)


def _check_capacity(opts: SearchOptions) -> SearchOptions:
    """Resolve ``max_concurrent=0`` to what the cluster holds, and refuse more concurrent trials than it can hold: a
    nested Train run then waits for workers that cannot start (bounded now, but every trial would fail)."""
    import ray
    have = float(ray.cluster_resources().get("CPU", 0))
    per = opts.cpus_per_trial()
    if opts.max_concurrent <= 0:
        opts = replace(opts, max_concurrent=max(1, int(have // per)) if per else 1)
    need = opts.max_concurrent * per
    if need > have:
        how = (f"{opts.cpus_per_worker:g} CPU" if opts.in_process else
               f"(1 CPU for the trial driver + {opts.workers_per_trial} worker(s) x {opts.cpus_per_worker:g} CPU)")
        msg = (f"{opts.max_concurrent} concurrent trial(s) x {how} = {need:g} CPUs, but the Ray cluster has "
               f"{have:g}: lower --max-concurrent, --workers-per-trial or --cpus-per-worker")
        if (opts.address or os.environ.get("RAY_ADDRESS") or "local") != "local":
            log.warning("%s (continuing: an autoscaling cluster may add nodes)", msg)
        else:
            raise ValueError(msg)
    return opts


def check_streamable(specs, data_config) -> None:
    """What a search on the partitioned dataset cannot do, said before any trial starts."""
    sk = [s.kind for s in specs if s.is_sklearn]
    if sk:
        raise ValueError(f"{', '.join(sk)} fit(s) on the whole training segment in memory: search them with "
                         f"--data-transport object-store, or leave them out of a streamed search")
    if data_config.ticker_id:
        raise ValueError("--ticker-id is not available on the streaming path; use --data-transport object-store")


def _search_panel(opts: SearchOptions, universe, data_config, specs):
    """The features every trial starts from: the in-memory panel (shipped once through the object store), or, on the
    streaming path (``--data-transport stream``, or ``auto`` when the in-memory panel would not fit half the available
    memory), the partitioned dataset: each trial fits its own plan by streaming passes and reads one ticker at a time."""
    from stocktrend.platform.data import transport
    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.features import feature_set
    if opts.data_transport not in ("auto", "object-store", "stream"):
        raise ValueError(f"unknown --data-transport {opts.data_transport!r} for a search; choose auto, object-store "
                         f"or stream")
    chosen = opts.data_transport
    if chosen == "auto" and any(s.is_sklearn for s in specs):
        chosen = "object-store"  # scikit-learn fits hold the whole training segment anyway
    elif chosen == "auto":
        choice = transport.choose(universe, feature_set(data_config.features), ticker_id=bool(data_config.ticker_id))
        chosen = choice.transport
        log.info("data transport %s: %s (a choice made again when the search is resumed)", chosen, choice.reason)
    if chosen == "stream":
        check_streamable(specs, data_config)
        import os
        from stocktrend.platform.data.partitioned import build_partitioned
        panel = build_partitioned(universe, feature_set(data_config.features), None, os.cpu_count() or 1)
        log.info("features: %s (partitioned by ticker: trials stream them)", panel.root)
        return panel
    panel = load_or_build_panel(universe, feature_set(data_config.features))
    log.info("features: %s (%s)", panel.path, "cache hit" if panel.cache_hit else "built")
    return panel


def run_search(opts: SearchOptions, panel=None, data_config=None, bounds=None) -> dict[str, Any]:
    """Run (or resume) a search; returns the trial table, the best config and the registered version.

    ``panel`` / ``data_config`` / ``bounds``: a feature panel already built and the split every trial must use (the
    daily loop's retrain searches with the gate window held out); by default the options' universe and the usual
    chronological fractions."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from stocktrend.platform.data.dataset import DataConfig
    from stocktrend.platform.training.distributed import init_ray
    from stocktrend.platform.data.universes import UNIVERSES, data_defaults, load_universe
    from stocktrend.models.rank_ic import MIN_NAMES
    from stocktrend.models.spec import Task
    from stocktrend.tune import trial as trial_mod
    from stocktrend.tune.space import search_defaults, search_space

    specs = opts.specs  # unknown models fail here, before Ray starts
    opts = opts.with_label(data_config)  # --label auto: excess on a panel of 3+ tickers, binary otherwise
    space = search_space(specs, opts.preset)  # and unknown presets
    tasks = {s.task(s.label_for(opts.label_kind)) for s in specs}
    if len(tasks) > 1:
        raise ValueError(f"models {opts.model} predict different things ({', '.join(sorted(tasks))}): their losses "
                         f"do not compare; search them separately")
    kinds_sk = {s.is_sklearn for s in specs}
    if len(kinds_sk) > 1 and opts.metric == "val_loss":
        raise ValueError(f"{opts.model} mixes torch and scikit-learn models: their validation losses do not compare "
                         f"(the torch models' is class-weighted with label smoothing, scikit-learn's a plain log-loss); "
                         f"rank them with --metric val_auc (or val_acc / val_mcc)")
    if tasks == {Task.regression} and opts.metric not in ("val_loss", "val_mae", "val_rank_ic"):
        raise ValueError(f"{opts.model} regresses the forward return: use --metric val_loss, val_mae or val_rank_ic")
    t0 = time.perf_counter()
    init_ray(opts.address, verbose=opts.verbose)
    opts = _check_capacity(opts)
    log.info("search %s: %d trial(s), %d at a time, %s per trial (%s)", opts.name, opts.num_samples,
             opts.max_concurrent, f"{opts.cpus_per_trial():g} CPU",
             "training in the trial's process" if opts.in_process else
             f"Ray Train with {opts.workers_per_trial} worker(s)")
    # the universe's own window length and top-K (us29: 5 days x 8 features) are the first trial's
    start = {} if opts.data_dir or opts.universe not in UNIVERSES else UNIVERSES[opts.universe].defaults
    if data_config is None:
        d = data_defaults(None if opts.data_dir else opts.universe)
        data_config = DataConfig(tickers=opts.tickers, data_dir=opts.data_dir, universe=opts.universe,
                                 label_kind=opts.label_kind, ticker_id=opts.ticker_id,
                                 features=opts.features or d["features"], fractions=tuple(d["fractions"]))
    if panel is None:
        universe = load_universe(opts.data_dir, list(opts.tickers) or None, universe=opts.universe)
        panel = _search_panel(opts, universe, data_config, specs)
        del universe  # the raw bars: the panel (or its partitions) is what trials need
    from stocktrend.platform.data.partitioned import PartitionedPanel
    if isinstance(panel, PartitionedPanel):
        check_streamable(specs, data_config)
    if opts.metric == "val_rank_ic" and len(panel.tickers) < MIN_NAMES:
        raise ValueError(f"--metric val_rank_ic needs a panel of {MIN_NAMES} or more tickers (the daily cross-sectional "
                         f"rank IC); this one has {len(panel.tickers)}: use val_loss or val_auc")
    storage = opts.storage or _storage_root("tune")
    exp_path = os.path.join(storage, opts.name)
    trainable = tune.with_resources(
        tune.with_parameters(trial_mod.trial_fn, panel=panel,
                             base={"opts": opts, "data_config": data_config, "storage": storage,
                                   "bounds": bounds}),
        opts.trial_resources())
    events = trial_mod.TrialEvents(opts.metric, opts.mode, opts.max_epochs, opts.num_samples,
                                   cleanup_groups=not opts.in_process, say=_say)
    trial_mod.LAST_RUN.clear()
    if tune.Tuner.can_restore(exp_path):
        log.info("resuming search %s from %s", opts.name, exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        if opts.searcher == "optuna":
            searcher = _searcher(opts, search_defaults(specs, opts.preset, start))
        elif opts.searcher == "random":
            from ray.tune.search import BasicVariantGenerator
            searcher = BasicVariantGenerator(points_to_evaluate=[*search_defaults(specs, opts.preset, start),
                                                                 *opts.extra_points],
                                             max_concurrent=opts.max_concurrent, random_state=opts.seed)
        else:
            raise ValueError(f"unknown searcher {opts.searcher!r}; use optuna or random")
        if opts.scheduler == "asha":
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=opts.max_epochs,
                                      grace_period=opts.grace_period, reduction_factor=opts.reduction_factor)
        elif opts.scheduler == "fifo":
            from ray.tune.schedulers import FIFOScheduler
            scheduler = FIFOScheduler()
        else:
            raise ValueError(f"unknown scheduler {opts.scheduler!r}; use asha or fifo")
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=opts.metric, mode=opts.mode, search_alg=searcher,
                                        scheduler=scheduler, num_samples=opts.num_samples,
                                        # An in-process trial's worker keeps torch/Lightning imported for the next
                                        # trial (no new process per trial).
                                        reuse_actors=opts.in_process),
            run_config=tune.RunConfig(
                name=opts.name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=opts.metric,
                                                        checkpoint_score_order=opts.mode),
                verbose=None if opts.verbose else 0, callbacks=[events]))
    import ray
    cpus_free_before = float(ray.available_resources().get("CPU", 0))
    from stocktrend.platform import console
    console.reroute()
    # Tune's new output engine prints its configuration box whatever the verbosity; the legacy one at verbosity 0
    # prints nothing, and TrialEvents says what happens.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if opts.verbose else "0"
    # With num_to_keep=1 every improving epoch forces a (7 ms) experiment snapshot; Tune warns about it each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    grid, interrupted = _fit_noting_interrupt(tuner)
    if not opts.in_process:
        trial_mod.remove_orphan_placement_groups()  # whatever the last trial's Train run left
    _wait_released(cpus_free_before)
    table = trial_table(grid, opts)
    out_dir = default_home() / "searches" / opts.name
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "trials.csv", index=False)
    table.to_parquet(out_dir / "trials.parquet", index=False)
    result: dict[str, Any] = {"table": table, "table_path": str(out_dir / "trials.csv"), "experiment": exp_path,
                              "seconds": time.perf_counter() - t0, "version": None,
                              "trial_timing": dict(trial_mod.LAST_RUN.get("timing", {})),
                              "max_concurrent": opts.max_concurrent}
    if interrupted:
        done = table[table["status"] != "interrupted"]
        best_line = (f"best so far {table.iloc[0][f'best_{opts.metric}']:.4f} ({opts.metric})"
                     if len(table) and pd.notna(table.iloc[0][f"best_{opts.metric}"]) else "no epoch finished")
        ckpt_line = ""
        if len(done) and pd.notna(table.iloc[0][f"best_{opts.metric}"]):
            try:
                _, ck = best_checkpoint(grid, opts, storage)
                ckpt_line = f"\nbest checkpoint so far: {ck.path}"
            except Exception:  # nothing kept yet
                pass
        raise SearchInterrupted(
            f"search {opts.name} interrupted after {time.perf_counter() - t0:.0f} s: {len(done)} of "
            f"{len(table)} started trial(s) ended, {best_line}; trial table so far: {out_dir / 'trials.csv'}"
            f"{ckpt_line}\nOptuna study {opts.name!r} and Tune state in {exp_path}: rerun the same command "
            f"(--name {opts.name}) to resume")
    ok = table[table["status"] != "error"]
    if ok.empty:
        raise RuntimeError(f"all {len(table)} trials failed; first error: {table['error'].iloc[0]}")
    best, best_ckpt = best_checkpoint(grid, opts, storage)
    result["best_config"] = {k: best.config[k] for k in space}
    if not opts.register:
        return result

    version, path = register_best(grid, best, best_ckpt, table, opts, panel, data_config, out_dir,
                                  result["best_config"], bounds)
    result.update(version=version, checkpoint=str(path))
    return result


if __name__ == "__main__":
    # ``python -m stocktrend.tune.search ...`` (the ``ray job submit`` entry point) is ``stocktrend tune ...``: one
    # command line, parsed by the CLI (an entry point, not a library import: tests/test_layering.py skips this block).
    from stocktrend.cli import main as cli_main
    cli_main(["tune", *sys.argv[1:]], prog_name="stocktrend")
