"""Losing a node of a multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and worker nodes of
one CPU each, every node its own raylet on this machine) while a search, the endpoint or a Ray Train run works.

Each scenario runs in its own process (``python -m tests.ray.node_loss SCENARIO FOLDER [SECONDS]``), prints one
``RESULT {json}`` line and shuts its cluster down; tests/ray/test_node_loss.py checks the results and
bench/node_loss.py prints the endpoint's figures. A node is taken away with ``Cluster.remove_node``, which kills its
raylet and every worker process on it, as a lost machine or a deleted pod would.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tests.cli import planted_csv_folder

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[2]
OBJECT_STORE = 200 * 1024 * 1024


_CLUSTERS: list = []  # shut down at exit whatever happened (a failed scenario must not leave a cluster to the next)


def _cluster(workers: int):
    """A head without CPUs and ``workers`` one-CPU nodes. Its dashboard's port is chosen here and named in
    RAY_API_SERVER_ADDRESS for every process the cluster starts (as stocktrend.platform.training.distributed does for a
    private instance): Ray Train's placement-group cleaner calls the state API without an address, and with another
    Ray instance on the machine it otherwise asks whichever started last, and its stop waits 12 s at every run's end."""
    from ray.cluster_utils import Cluster

    from stocktrend.platform.ports import free_port
    dashboard = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE,
                                                            "include_dashboard": True, "dashboard_port": dashboard})
    _CLUSTERS.append(cluster)
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE) for _ in range(workers)]
    cluster.wait_for_nodes()
    return cluster, nodes


def _raylet_pid(node) -> int:
    from ray._private import ray_constants
    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _node_of_pid(pid: int, nodes) -> object | None:
    """The cluster node whose raylet started process ``pid`` (Ray workers are the raylet's children)."""
    import psutil
    raylets = {_raylet_pid(n): n for n in nodes}
    try:
        p = psutil.Process(pid)
        while p is not None:
            if p.pid in raylets:
                return raylets[p.pid]
            p = p.parent()
    except psutil.Error:
        return None
    return None


def _pids_named(fragment: str) -> list[int]:
    import psutil
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if fragment in cmd:
            out.append(p.info["pid"])
    return out


def _registered_reports(run_dir: Path) -> int:
    """How many reports (with their checkpoints) Ray Train's controller has registered for a run."""
    try:
        return int(json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["current_report_index"])
    except (OSError, ValueError, KeyError):
        return 0


def _session_dir() -> Path | None:
    from ray._private import worker
    node = worker._global_node
    return Path(node.get_session_dir_path()) if node is not None else None


def _planted_data(folder: Path, tickers: int = 2, days: int = 700) -> Path:
    return planted_csv_folder(folder, seed=4, tickers=tickers, days=days)


def search(folder: Path) -> dict:
    """(a) A 4-trial search (two at a time, one per worker node); once a trial on node 2 has reported an epoch, node 2
    is removed. Its trial must restart from its last checkpoint on the other node (FailureConfig(max_failures=2))
    and every trial must finish."""
    os.environ["STOCKTREND_HOME"] = str(folder / "home")
    from stocktrend.tune.options import SearchOptions
    from stocktrend.tune.search import run_search
    data = _planted_data(folder)
    cluster, nodes = _cluster(2)
    max_epochs = 8
    storage = folder / "tune"
    opts = SearchOptions(name="node-loss", preset="tiny", num_samples=4, max_epochs=max_epochs, scheduler="fifo",
                         max_concurrent=2, data_dir=str(data), max_failures=2, address=cluster.address,
                         register=False, storage=str(storage), seed=7)
    lost: dict = {}

    def remove_when_a_trial_there_reported() -> None:
        end = time.monotonic() + 600
        while time.monotonic() < end and not lost:
            session = _session_dir()
            # Tune's driver writes each trial's results here first (and copies them to the storage later).
            staged = session.glob("artifacts/*/node-loss/driver_artifacts/*/result.json") if session else []
            for result in staged:
                lines = result.read_text().strip().splitlines()
                if not lines:
                    continue
                last = json.loads(lines[-1])
                it = int(last.get("training_iteration", 0))
                if 1 <= it <= max_epochs - 3 and _node_of_pid(int(last["pid"]), nodes) is nodes[1]:
                    lost.update(trial_id=last["trial_id"], at_epoch=it, t=time.time())
                    cluster.remove_node(nodes[1], allow_graceful=False)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_when_a_trial_there_reported, daemon=True)
    killer.start()
    try:
        res = run_search(opts)
    finally:
        killer.join(timeout=5)
    table = res["table"]
    iterations = []
    if lost:
        for result in storage.glob("node-loss/*/result.json"):
            rows = [json.loads(x) for x in result.read_text().strip().splitlines() if x.strip()]
            if rows and rows[0]["trial_id"] == lost["trial_id"]:
                iterations = [int(r["training_iteration"]) for r in rows]
    out = {"lost": lost, "rows": len(table), "status": table["status"].tolist(),
           "restarts": {str(r["trial_id"]): int(r["restarts"]) for _, r in table.iterrows()},
           "epochs": {str(r["trial_id"]): int(r["epochs"]) for _, r in table.iterrows()},
           "best_missing": int(table["best_val_loss"].isna().sum()), "lost_trial_iterations": iterations,
           "max_epochs": max_epochs, "seconds": res["seconds"]}
    _shutdown(cluster)
    return out


def train(folder: Path, streamed: float = 0.0) -> dict:
    """(c) A 2-worker Ray Train run, one worker per node; after its second checkpoint the node of rank 1 is removed
    and a replacement node joins (as KubeRay recreates a deleted worker pod). The run must restart from its last
    checkpoint (FailureConfig(max_failures=1)) and finish every epoch. ``streamed``: on the streaming path (each
    worker's readers are pinned to its node, so the restarted group must build its pipelines on the new nodes)."""
    os.environ["STOCKTREND_HOME"] = str(folder / "home")
    import ray
    import ray.cloudpickle

    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.data.stream import open_streamed
    from stocktrend.platform.data.synthetic import planted_cross_section_universe, planted_signal_universe
    from stocktrend.platform.training.distributed import RayConfig, fit_ray
    from stocktrend.platform.training.local import TrainConfig, model_config_for
    from tests.ray import helpers
    ray.cloudpickle.register_pickle_by_value(helpers)
    if streamed:
        data = open_streamed(planted_cross_section_universe(700, 6, seed=3), DataConfig(
            tickers=(), top_k=12, sequence_length=10, label_kind="excess", features="short"), folder / "cache")
    else:
        data = build_dataset(DataConfig(tickers=(), top_k=12, sequence_length=16),
                             universe=planted_signal_universe(1500, seed=5, n_tickers=2), use_cache=False)
    cluster, nodes = _cluster(2)
    starts = folder / "starts"
    starts.mkdir(parents=True, exist_ok=True)
    epochs = 4 if streamed else 8  # streamed: the loss after 2 of 4 epochs proves the same, in less time
    tcfg = TrainConfig(preset="tiny", epochs=epochs, batch_size=64, accumulate=1, progress=False, patience=epochs)
    storage = folder / "ray"
    lost: dict = {}
    outcome: dict = {}

    def run() -> None:  # the run in a thread: Cluster.add_node installs signal handlers, main thread only
        try:
            outcome["fit"] = fit_ray(data, tcfg, model_config_for(data, "tiny"),
                                     RayConfig(workers=2, storage=str(storage), run_name="node-loss", max_failures=1,
                                               address=cluster.address),
                                     extra_callbacks=[helpers.RecordStarts(str(starts))], run_test=False)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    ray.init(address=cluster.address, log_to_driver=False)  # here, not in the thread (signal handlers)
    t0 = time.time()
    trainer = threading.Thread(target=run, daemon=True)
    trainer.start()
    end = time.monotonic() + 600
    while time.monotonic() < end and trainer.is_alive() and not lost:
        # Two reports registered by the controller (its snapshot on storage says so): a checkpoint file alone may not
        # be registered yet when the node goes, and the run would rightly start over.
        if _registered_reports(storage / "node-loss") >= 2:
            ranks = [json.loads(line) for f in starts.iterdir() for line in f.read_text().splitlines()]
            rank1 = [r for r in ranks if r["rank"] == 1]
            if rank1:
                target = next(n for n in nodes if n.node_id == rank1[-1]["node"])
                lost.update(node=target.node_id, t=time.time())
                cluster.remove_node(target, allow_graceful=False)
                nodes.append(cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE))  # the replacement
        time.sleep(0.05)
    trainer.join(timeout=600)
    if "error" in outcome:
        raise outcome["error"]
    res, info = outcome["fit"]
    out = {"lost": lost, "epochs_run": res.epochs_run, "history_epochs": [int(r["epoch"]) for r in res.history],
           "starts": sorted((json.loads(line) for f in starts.iterdir() for line in f.read_text().splitlines()),
                            key=lambda r: r["t"]),
           "epochs": epochs, "seconds": time.time() - t0}
    again = [r["t"] for r in out["starts"] if lost and r["t"] > lost["t"]]
    out["resumed_after_s"] = min(again) - lost["t"] if again else None  # node gone -> first epoch trained again
    if info.reads is not None:
        out["reads"] = {"workers": info.reads.workers, "local": info.reads.local, "blocks": info.reads.blocks,
                        "nodes": sorted(n.node_id for n in nodes)}
    _shutdown(cluster)
    return out


def endpoint(folder: Path, seconds_after: float = 10.0) -> dict:
    """(b) The endpoint with two 1-CPU replicas, one per worker node, behind Ray's proxy on the head; a client sends
    one request after another (POST /predict/ticker, idempotent: retried on a connection error or a 5xx, up to 8
    times in about 6 s). A node holding a replica is removed and a replacement node joins; the loop goes on until
    two replicas run again, then ``seconds_after`` more."""
    import httpx

    home = folder / "home"
    os.environ["STOCKTREND_HOME"] = str(home)
    from stocktrend.platform.data.dataset import DataConfig, build_dataset
    from stocktrend.platform.training.jobs import train_job
    from stocktrend.platform.training.local import TrainConfig
    from stocktrend.serve.ingress import configure_ingress
    data = build_dataset(DataConfig(top_k=12, sequence_length=20))
    train_job(data.config, TrainConfig(preset="tiny", epochs=1, batch_size=64, accumulate=1, progress=False),
              model_name="svc", data=data)  # the first version takes production
    configure_ingress(python_proxy=True)  # before the nodes start: Ray's Python proxy, on the head only
    cluster, nodes = _cluster(2)
    import ray
    from ray import serve

    from stocktrend.serve.app import app_builder
    from tests.ray.local_head import free_port
    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 10})
    serve.run(app_builder({"model": "svc@production", "min_replicas": 2, "max_replicas": 2, "num_cpus": 1,
                           "poll_interval_s": 0, "env_vars": {"STOCKTREND_HOME": str(home)}}),
              name="stocktrend", route_prefix="/")
    url = f"http://127.0.0.1:{port}/predict/ticker"
    stats = {"sent": 0, "ok": 0, "failed_first_try": 0, "failed_after_retries": 0, "retries": 0, "codes": {},
             "latency_ms": []}
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                stats["sent"] += 1
                t = time.perf_counter()
                for attempt in range(8):
                    try:
                        r = c.post(url, json={"ticker": "MSFT"})
                        code = r.status_code
                    except httpx.HTTPError as exc:
                        code = type(exc).__name__
                    if code == 200:
                        stats["ok"] += 1
                        break
                    stats["codes"][str(code)] = stats["codes"].get(str(code), 0) + 1
                    if attempt == 0:
                        stats["failed_first_try"] += 1
                    stats["retries"] += 1
                    if isinstance(code, int) and code < 500:
                        break  # a client error is not retried
                    time.sleep(min(0.1 * 2 ** attempt, 1.5))
                else:
                    stats["failed_after_retries"] += 1
                stats["latency_ms"].append((time.perf_counter() - t) * 1000)

    def replica_nodes() -> list:
        found = [_node_of_pid(pid, nodes) for pid in _pids_named("ServeReplica:stocktrend:StockTrendService")]
        return [n for n in found if n is not None]

    def running() -> int:
        st = serve.status().applications["stocktrend"].deployments["StockTrendService"]
        return int(st.replica_states.get("RUNNING", 0))

    worker = threading.Thread(target=client_loop, daemon=True)
    worker.start()
    time.sleep(3)
    before = replica_nodes()
    target = next(n for n in before if n is not None)
    sent_before = stats["sent"]
    t_lost = time.monotonic()
    cluster.remove_node(target, allow_graceful=False)
    nodes.remove(target)
    nodes.append(cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE))  # the replacement node
    replaced_s = detected_s = None
    end = time.monotonic() + 180
    while time.monotonic() < end:
        n = running()
        if detected_s is None and n < 2:
            detected_s = time.monotonic() - t_lost
        if detected_s is not None and n >= 2 and nodes[-1] in replica_nodes():
            replaced_s = time.monotonic() - t_lost
            break
        time.sleep(0.2)
    time.sleep(seconds_after)
    stop.set()
    worker.join(timeout=30)
    lat = sorted(stats.pop("latency_ms"))
    out = {**stats, "sent_before_loss": sent_before, "replicas_on_distinct_nodes": len(set(map(id, before))) == 2,
           "detected_s": detected_s, "replaced_s": replaced_s,
           "p50_ms": lat[len(lat) // 2] if lat else None, "max_ms": lat[-1] if lat else None,
           "replicas_running": running()}
    serve.shutdown()
    _shutdown(cluster)
    return out


def _shutdown(cluster) -> None:
    import ray
    ray.shutdown()
    if cluster in _CLUSTERS:
        _CLUSTERS.remove(cluster)
        cluster.shutdown()


SCENARIOS = {"search": search, "train": train, "endpoint": endpoint,
             "stream": lambda folder: train(folder, streamed=1.0)}

if __name__ == "__main__":
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    extra = [float(a) for a in sys.argv[3:]]
    try:
        result = SCENARIOS[sys.argv[1]](folder, *extra)
    finally:
        for c in list(_CLUSTERS):
            try:
                _shutdown(c)
            except Exception as exc:  # noqa: BLE001 - the scenario's own error matters more
                print(f"cluster shutdown failed: {exc}", file=sys.stderr)
    print("RESULT " + json.dumps(result, default=str), flush=True)
