"""Ray Train: the same TrendModule, StockDataModule and recipe as ``training.fit``, across Ray workers (DDP).

How the data reaches the workers (``RayConfig.data_transport``): ``object-store`` (default) puts the PreparedData in
the object store once and every worker ``ray.get``s it (any cluster; Lightning's DistributedSampler shards the training
windows); ``shared-path`` has workers re-derive it from a feature cache every node can see; ``stream`` (a
``StreamedData``, data/stream.py) has each worker read only its tickers' partitions through Ray Data.

Checkpoints: RayTrainReportCallback reports each epoch's metrics with a Lightning checkpoint to ``storage_path``
(local dir by default; S3/NFS URI on a cluster); CheckpointConfig keeps the best K by the monitored metric;
FailureConfig(max_failures) restarts the worker group from the latest checkpoint after a crash.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from stocktrend.platform.data.cache import default_home
from stocktrend.platform.training.ray_address import (_init_bounded, _probe, connect_timeout_s,  # noqa: F401
                                                       check_address, resolve_address, RayConnectionError)
from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.training.local import TrainConfig, pick_precision, test_metrics_of
from stocktrend.platform.training.ray_reports import StreamReads, report_callback, run_collector
from stocktrend.platform.training.results import FitResult

log = logging.getLogger(__name__)
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_USER_START_TIMEOUT = os.environ.get(START_TIMEOUT_ENV)


class DistributedTrainingError(RuntimeError):
    """Ray Train could not finish the run; the message says why and what to change."""


class ResourcesUnavailableError(DistributedTrainingError):
    """The run's workers could not be placed: what it asked for and what the cluster has free."""


@dataclass(frozen=True)
class RayConfig:
    workers: int = 2  # Ray Train workers (DDP ranks)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # > 0 puts every worker on a GPU
    storage: str | None = None  # local dir or URI (s3://, NFS path) shared by all nodes; default $STOCKTREND_HOME/ray
    max_failures: int = 1  # worker-group restarts from the last checkpoint
    keep_checkpoints: int = 2  # best K by the monitored metric
    address: str | None = None  # Ray address; None = RAY_ADDRESS or a local instance
    data_transport: str = "object-store"  # or "shared-path", "stream" (a data.stream.StreamedData), "auto" (jobs.py)
    run_name: str | None = None
    # Bounded start: a worker group that cannot be placed within start_timeout_s fails (Ray's default is 60 s, retried
    # forever by the controller: the hang of Ray issue #54305); start_retries more attempts are made before the run
    # fails with a ResourcesUnavailableError.
    start_timeout_s: float = 30.0
    start_retries: int = 1
    # The streaming path (a StreamedData): Ray Data reader actors, the logical CPUs each holds (0: they share the Train
    # workers' CPUs, light next to the training step; bench/stream_scale.py) and the tickers each reads per call
    readers: int = 0  # per Train worker, on its node; 0 = 2 for a single worker, else 1
    reader_cpus: float = 0.0
    tickers_per_read: int = 0  # 0 = one ticker a read when a worker's share is under 64 tickers, else 4


def _worker_accelerator(gpus_per_worker: float) -> str:
    """Chosen on each worker: CUDA when it was given a GPU, MPS on a laptop (single worker), else CPU."""
    if gpus_per_worker > 0 and torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_worker_data(cfg: dict[str, Any]) -> PreparedData:
    import ray
    if cfg["transport"] == "object-store":
        return ray.get(cfg["data_ref"])
    if cfg["transport"] == "stream":  # the manifest and the plan; rows arrive through the Ray Dataset shard
        from stocktrend.platform.data.stream import PartitionedPanel, StreamedData
        return StreamedData(PartitionedPanel.open(cfg["root"]), ray.get(cfg["plan_ref"]), cfg.get("collector"))
    from stocktrend.platform.data.cache import read_panel
    from stocktrend.platform.data.dataset import prepare
    return prepare(read_panel(cfg["panel_path"], cfg["data_hash"], cfg["cache_key"]), cfg["data_config"])


def train_loop(cfg: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import lightning.pytorch as pl
    import ray.train
    from ray.train.lightning import (RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback,
                                     prepare_trainer)

    from stocktrend.platform.training.local import averaging, data_module, early_stopping, make_module

    tcfg: TrainConfig = cfg["train_config"]
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    data = _load_worker_data(cfg)
    mcfg = cfg["model_config"]
    module = make_module(data, tcfg, mcfg)
    if cfg.get("init_state_dict") is not None:
        module.model.load_state_dict(cfg["init_state_dict"])
    accelerator = _worker_accelerator(cfg["gpus_per_worker"])
    # patience 0: a fixed-length run (a refit), no early stopping; the last epoch's weights are kept (fit_ray)
    early = [early_stopping(tcfg)] if tcfg.patience > 0 else []
    callbacks = [*averaging(tcfg), *early, (report := RayTrainReportCallback()), *cfg.get("callbacks", [])]
    trainer = pl.Trainer(max_epochs=tcfg.epochs, accelerator=accelerator, devices="auto",
                         strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()],
                         precision=pick_precision(accelerator, tcfg.precision), gradient_clip_val=tcfg.grad_clip,
                         accumulate_grad_batches=tcfg.accumulate, callbacks=callbacks, enable_checkpointing=False,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0,
                         limit_train_batches=tcfg.train_batch_limit(ray.train.get_context().get_world_size()))
    trainer = prepare_trainer(trainer)
    dm = data_module(data, tcfg)
    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint:
            # Restart after a failure: resume weights, optimiser, scheduler and epoch from the last checkpoint.
            with checkpoint.as_directory() as d:
                trainer.fit(module, datamodule=dm, ckpt_path=os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME),
                            weights_only=True)
        else:
            trainer.fit(module, datamodule=dm)
    finally:
        shutil.rmtree(report.tmpdir_prefix, ignore_errors=True)  # Ray removes each epoch's folder, not their parent


@dataclass
class RayRunInfo:
    storage_path: str  # where Ray Train put the run (checkpoints, metrics)
    best_checkpoint_dir: str
    workers: int
    seconds: float
    reads: StreamReads | None = None  # the streaming path: where each worker's training blocks were read


def _loopback_only() -> None:
    """A private instance is this machine's alone: its node address is loopback, so Ray binds its Prometheus
    exporters (dashboard, autoscaler, dashboard agent) to 127.0.0.1 instead of every interface.

    Ray's own switch for this is the local-only mode it uses on macOS and Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    =0``: the node address is loopback; ``ray.init(_node_ip_address="127.0.0.1")`` is turned back into the host's
    address). Set for this process (read at import) and inherited by the processes Ray starts."""
    from ray._private import ray_constants

    RAY_STATE.setdefault("cluster_flag_before", ray_constants.ENABLE_RAY_CLUSTER)
    _instance_env(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
    ray_constants.ENABLE_RAY_CLUSTER = False


def _state_api_here(kw: dict[str, Any]) -> None:
    """The private instance's dashboard on a port chosen here, and ``RAY_API_SERVER_ADDRESS`` naming it for this
    process and every process Ray starts (read by Ray's state API before anything else).

    Without it, a state API call made with no address (Ray Train's placement-group cleaner asks whether the
    controller is alive every second) resolves the cluster itself: from ``<ray temp dir>/ray_current_cluster`` first,
    which a cluster that died without ``ray stop`` leaves behind, so each call retried a dead GCS and every Ray Train
    run ended with a 12-14 s wait ("Failed to stop PlacementGroupCleaner gracefully"); or it failed when another Ray
    instance ran on the machine ("Found multiple active Ray instances")."""
    from stocktrend.platform import ports
    from ray._private import ray_constants
    kw["dashboard_port"] = port = ports.free_port()
    _instance_env(ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE, f"http://127.0.0.1:{port}")


def _instance_env(var: str, value: str) -> None:
    """Set ``var`` for this process and what the private instance starts; its value before is kept for
    ``_restore_cluster_mode``."""
    RAY_STATE.setdefault("env_before", {}).setdefault(var, os.environ.get(var))
    os.environ[var] = value


def _restore_cluster_mode() -> None:
    """After the private instance: this process may join or start a cluster again (``ray start`` refuses to add a
    node while local-only mode is on), and its state API calls no longer name the stopped instance's dashboard."""
    for var, value in RAY_STATE.pop("env_before", {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    if "cluster_flag_before" in RAY_STATE:
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = RAY_STATE.pop("cluster_flag_before")


def tickers_label(tickers: list[str], first: int = 8) -> str:
    """The first ``first`` tickers joined, ``-...`` when there are more: run names and folder names."""
    return "-".join(tickers[:first]) + ("-..." if len(tickers) > first else "")


RAY_STATE = {"started_local": False, "verbose": True, "where": ""}

def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool | None = None) -> bool:
    """Join ``address`` (or $RAY_ADDRESS; ``auto`` = the running local cluster) within a bounded time, else start a
    private local instance. Returns True when this call started a local instance (the caller then owns its
    shutdown). ``verbose=False`` keeps workers' output off the console."""
    import ray

    from stocktrend.platform import console
    if verbose is not None:
        RAY_STATE["verbose"] = verbose
    elif console.log_path() is not None:  # a CLI command: its --verbose decides
        RAY_STATE["verbose"] = bool(console.STATE["verbose"])
    if ray.is_initialized():
        return False
    console.reroute()  # Ray's import-time handlers: its start-up warnings go through ours (the log file) too
    target, source = resolve_address(address)
    # Under a CLI command Ray's worker output always reaches the driver, where the console module sends it to the
    # command's log file (or, with --verbose, to the terminal as Ray prints it).
    kw: dict[str, Any] = {"log_to_driver": RAY_STATE["verbose"] or console.log_path() is not None}
    if not RAY_STATE["verbose"]:
        kw["logging_level"] = logging.WARNING
    from stocktrend.platform import raytoken
    raytoken.secure_token(create=target is None)
    if target is not None:
        timeout = connect_timeout_s()
        _probe(target, source, min(timeout, 5.0))
        _init_bounded(target, source, timeout, kw)
        RAY_STATE["where"] = f"joined the Ray cluster at {target} ({source})"
        log.info("Ray: %s", RAY_STATE["where"])
        _reroute_logs()
        return False
    from stocktrend.platform import processes
    for line in processes.reap_leftovers():  # what a killed command on this home left running (by recorded PID)
        log.warning(line)
    _loopback_only()
    _state_api_here(kw)
    try:
        ray.init(address="local", num_cpus=num_cpus, **kw)
    except BaseException:
        _restore_cluster_mode()  # nothing started: the process is as it was
        raise
    RAY_STATE["started_local"] = True
    RAY_STATE["where"] = (f"a private local Ray instance ({ray.cluster_resources().get('CPU', 0):g} CPUs; "
                          f"--address auto joins a running local cluster instead)")
    log.info("Ray: %s", RAY_STATE["where"])
    _reroute_logs()
    return True


def _reroute_logs() -> None:
    from stocktrend.platform import console
    console.reroute()


def shutdown_ray() -> None:
    """Shut down the Ray instance this process started (a cluster it only connected to is left running)."""
    import ray

    from stocktrend.platform import processes
    owned = RAY_STATE.get("started_local", False)
    tree = processes.watched_descendants() if owned else {}  # HAProxy, while still in this process's tree
    if ray.is_initialized():
        ray.shutdown()
    if owned:
        processes.end_own(tree)  # what outlived Ray's shutdown (an HAProxy after load) ends with the command
        _restore_cluster_mode()
    RAY_STATE["started_local"] = False


def _resources_line() -> str:
    import ray
    free, total = ray.available_resources(), ray.cluster_resources()
    keys = [k for k in ("CPU", "GPU") if total.get(k)]
    return ", ".join(f"{k} {free.get(k, 0):g} free of {total.get(k, 0):g}" for k in keys) or "no CPU or GPU"


def _check_fits(rcfg: RayConfig) -> None:
    """Fail at once when the request exceeds the whole cluster (waiting cannot help), unless the cluster may grow."""
    import ray
    total = ray.cluster_resources()
    need = {"CPU": rcfg.workers * rcfg.cpus_per_worker, "GPU": rcfg.workers * rcfg.gpus_per_worker}
    short = [f"{need[k]:g} {k}" for k in need if need[k] > float(total.get(k, 0)) + 1e-9]
    if not short:
        return
    msg = (f"Ray Train asked for {rcfg.workers} worker(s) x ({rcfg.cpus_per_worker:g} CPU, {rcfg.gpus_per_worker:g} "
           f"GPU) = {' + '.join(short)}, more than the whole cluster has ({_resources_line()}): lower --workers, "
           f"--cpus-per-worker or --gpus-per-worker")
    if (rcfg.address or os.environ.get("RAY_ADDRESS") or "local") != "local":
        log.warning("%s (continuing: an autoscaling cluster may add nodes; the start is bounded by %g s x %d "
                    "attempts)", msg, rcfg.start_timeout_s, rcfg.start_retries + 1)
        return
    raise ResourcesUnavailableError(msg)


def run_in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a helper thread while the main thread waits, so that Ctrl-C reaches our caller as a
    KeyboardInterrupt at once. Ray Train registers its own SIGINT handler when called from the main thread; that
    handler only asks the controller to abort and waits (it hung for 10 minutes in the reported case)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="stocktrend-ray-train", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["value"]


def fit_ray(data: PreparedData, tcfg: TrainConfig, mcfg: Any, rcfg: RayConfig,
            init_state_dict: dict[str, torch.Tensor] | None = None, extra_callbacks: list | None = None,
            run_test: bool = True, run_callbacks: list | None = None) -> tuple[FitResult, RayRunInfo]:
    """Train on Ray workers; returns the same FitResult as ``training.fit`` (the best checkpoint's weights, loaded
    with weights_only=True, and test metrics computed on the driver) plus where Ray Train stored the run."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    t0 = time.perf_counter()
    if rcfg.workers < 1:
        raise ValueError("--workers must be >= 1 (Ray Train local mode does not persist checkpoints)")
    tcfg = tcfg.resolved(data)
    tcfg.check_monitor(data)
    if rcfg.gpus_per_worker == 0 and rcfg.workers > 1 and torch.backends.mps.is_available():
        # A laptop has one MPS device and DDP has no MPS backend: one worker uses it, more would fight over it.
        raise ValueError("on Apple MPS use --workers 1 (one MPS device, no multi-process DDP backend for it)")
    from stocktrend.platform.data.stream import StreamedData
    if isinstance(data, StreamedData):
        from stocktrend.platform.data.stream_ingest import check_workers
        check_workers(data, rcfg.workers)
    init_ray(rcfg.address)
    _check_fits(rcfg)
    # Propagated by Ray Train from this process to its controller (ENV_VARS_TO_PROPAGATE); a value the user exported
    # before the program started wins.
    os.environ[START_TIMEOUT_ENV] = _USER_START_TIMEOUT or f"{rcfg.start_timeout_s:g}"
    base = os.environ.get("STOCKTREND_STORAGE")  # shared by every node on a cluster, e.g. s3://bucket/stocktrend
    storage = rcfg.storage or (f"{base.rstrip('/')}/ray" if base else str(default_home() / "ray"))
    # A folder name (Ray Train's run directory): bounded, whatever the panel's breadth (every ticker of a 500-name
    # panel joined passed the file system's 255-byte limit: "[errno 36] File name too long").
    name = (rcfg.run_name or f"train-{tickers_label(data.tickers)}-{time.strftime('%Y%m%d-%H%M%S')}")[:160]
    loop_cfg: dict[str, Any] = {"train_config": replace(tcfg, progress=False), "model_config": mcfg,
                                "gpus_per_worker": rcfg.gpus_per_worker, "transport": rcfg.data_transport,
                                "init_state_dict": init_state_dict, "callbacks": extra_callbacks or []}
    datasets: dict[str, Any] = {}
    dataset_config = None
    if isinstance(data, StreamedData):  # the streaming path: workers read their shard of the windows (Ray Data)
        from stocktrend.platform.data.stream_ingest import ticker_shares, ticker_split_config, window_dataset
        plan_ref = ray.put(data.plan)
        loop_cfg.update(transport="stream", root=str(data.panel.root), plan_ref=plan_ref)
        # each worker its own share of the tickers, read on its node; every rank steps the same number of batches
        shares = ticker_shares(data.plan, "train", rcfg.workers)
        build = partial(window_dataset, str(data.panel.root), plan_ref, segment="train",
                        with_return=tcfg.spec.task(data.config.label_kind).is_multitask, seed=tcfg.seed,
                        epochs=tcfg.epochs, reader_cpus=rcfg.reader_cpus,
                        readers=rcfg.readers or (2 if rcfg.workers == 1 else 1),
                        tickers_per_read=rcfg.tickers_per_read)
    elif rcfg.data_transport in ("object-store", "auto"):  # auto with data already in memory: keep it there
        loop_cfg.update(data_ref=ray.put(data), transport="object-store")
    elif rcfg.data_transport == "shared-path":
        if data.panel.path is None or not Path(data.panel.path).is_file():
            raise ValueError("--data-transport shared-path needs the feature cache on disk (do not use --no-cache)")
        loop_cfg.update(panel_path=str(data.panel.path), data_hash=data.panel.data_hash,
                        cache_key=data.panel.cache_key, data_config=data.config)
    else:
        raise ValueError(f"unknown data transport {rcfg.data_transport!r}; use object-store, shared-path or stream"
                         if rcfg.data_transport != "stream" else "--data-transport stream needs the data set built "
                         "for streaming (stocktrend.platform.data.stream.build_streamed), not an in-memory one")
    collector = run_collector()  # every epoch's metrics; on the streaming path, where the blocks were read
    loop_cfg["collector"] = collector
    if isinstance(data, StreamedData):  # the worker's own datasets are built in ticker_split_config, on its node
        build = partial(build, collector=collector)
        datasets["train"] = build(tickers=shares[0], rank=0)
        dataset_config = ticker_split_config(build, shares)
    resources = {"CPU": rcfg.cpus_per_worker, **({"GPU": rcfg.gpus_per_worker} if rcfg.gpus_per_worker else {})}
    try:  # the collector is killed whatever happens from here
        trainer = TorchTrainer(
            train_loop, train_loop_config=loop_cfg, datasets=datasets or None,
            dataset_config=dataset_config,
            scaling_config=ray.train.ScalingConfig(num_workers=rcfg.workers, use_gpu=rcfg.gpus_per_worker > 0,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=name, storage_path=storage,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=rcfg.keep_checkpoints,
                                                             checkpoint_score_attribute=tcfg.monitor,
                                                             checkpoint_score_order=tcfg.monitor_mode),
                failure_config=ray.train.FailureConfig(max_failures=rcfg.max_failures,
                                                       controller_failure_limit=rcfg.start_retries),
                callbacks=[report_callback(collector), *(run_callbacks or [])]))
        result = run_in_thread(trainer.fit)
        history = [{k: v for k, v in row.items() if k.startswith(("train_", "val_")) or k == "epoch"}
                   for row in ray.get(collector.get.remote())]
        reads = StreamReads(*ray.get(collector.get_reads.remote())) if datasets else None
    except ray.train.ControllerError as exc:
        cause = exc.controller_failure
        if type(cause).__name__ in ("WorkerGroupStartupTimeoutError", "InsufficientClusterResourcesError"):
            raise ResourcesUnavailableError(
                f"Ray Train run {name!r} could not start {rcfg.workers} worker(s) x ({rcfg.cpus_per_worker:g} CPU, "
                f"{rcfg.gpus_per_worker:g} GPU) in {rcfg.start_retries + 1} attempt(s) of "
                f"{float(os.environ[START_TIMEOUT_ENV]):g} s; the cluster has "
                f"{_resources_line()} (other runs, or a placement group left by one, hold the rest)") from None
        raise DistributedTrainingError(f"Ray Train run {name!r} failed in its controller: {_first_line(cause)}") from exc
    except ray.train.TrainingFailedError as exc:
        raise DistributedTrainingError(
            f"Ray Train run {name!r} failed after {rcfg.max_failures} allowed restart(s): "
            f"{_first_line(exc)}. Checkpoints so far are in {storage}/{name}; raise --max-failures to let it "
            f"restart from the last one.") from exc
    finally:
        ray.kill(collector)
    fixed = tcfg.patience <= 0
    best = (None if fixed else result.get_best_checkpoint(tcfg.monitor, tcfg.monitor_mode)) or result.checkpoint
    if best is None:
        raise DistributedTrainingError(f"Ray Train run {name!r} reported no checkpoint")
    with best.as_directory() as d:
        state = torch.load(Path(d) / "checkpoint.ckpt", map_location="cpu", weights_only=True)
    model_state = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    best_row = None
    if history and fixed:
        best_row = max(history, key=lambda r: r.get("epoch", -1))
    elif history:
        key = min if tcfg.monitor_mode == "min" else max
        best_row = key(history, key=lambda r: r.get(tcfg.monitor, float("inf") if key is min else float("-inf")))
    from stocktrend.platform.training.local import make_module
    module = make_module(data, tcfg, mcfg)
    module.model.load_state_dict(model_state)
    module.eval()
    fit_result = FitResult(module, mcfg, tcfg, best_row.get(tcfg.monitor) if best_row else None,
                           int(best_row["epoch"]) if best_row else None, len(history), history,
                           test_metrics_of(module, data, tcfg) if run_test else {})
    return fit_result, RayRunInfo(result.path, str(best.path), rcfg.workers, time.perf_counter() - t0,
                                  reads)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
