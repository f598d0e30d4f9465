"""The streaming path on a simulated multi-node cluster: which node reads which partitions (issue 41, item 4).

    python bench/stream_nodes.py                              # 3 nodes, 60 tickers x 1,500 days, 2 epochs
    python bench/stream_nodes.py --nodes 3 --tickers 120 --epochs 2

A ``ray.cluster_utils.Cluster`` (a head with no CPUs and ``--nodes`` worker nodes of one CPU each, every node its own
raylet on this machine, as tests/ray/node_loss.py builds it) trains the tiny lstm with one Ray Train worker per node on
a partitioned random-walk panel (``--data-transport stream``), one Ray Data reader per worker. The run's collector
(``training.ray_reports``) says which (ticker, epoch) partitions each node's readers read and, per worker, the blocks it
trained on by the node that read them. Printed: per node, the partitions read and the blocks its worker took (and how
many of those were read on its own node); the partitions read twice; the run's time. What it shows: the panel is read
once per epoch across the cluster, a share per node (no node reads all of it, as every worker did on the
``shared-path`` transport), and each share on the node of the worker that trains on it (every worker has its own
pipeline, its readers placed on its node: stream_ingest.ticker_split_config). Counted, not assumed. Benchmarks print figures; they assert nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OBJECT_STORE = 300 * 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--tickers", type=int, default=60)
    ap.add_argument("--days", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--epoch-windows", type=int, default=6000, help="training windows per epoch, all workers (0: all)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="stocktrend-bench-nodes-"))
    os.environ["STOCKTREND_HOME"] = str(tmp / "home")
    import ray
    from ray.cluster_utils import Cluster

    from stocktrend.platform.data.dataset import DataConfig
    from stocktrend.platform.data.stream import open_streamed
    from stocktrend.platform.data.synthetic import random_walk_universe
    from stocktrend.platform.training.distributed import RayConfig, fit_ray
    from stocktrend.platform.training.local import TrainConfig, model_config_for

    t0 = time.perf_counter()
    cfg = DataConfig(tickers=(), label_kind="excess", sequence_length=16, top_k=12, features="short")
    data = open_streamed(random_walk_universe(args.days, n_tickers=args.tickers, seed=0), cfg, tmp / "cache",
                         n_jobs=2)
    print(f"panel        : {args.tickers} tickers x {args.days} days, partitioned in "
          f"{time.perf_counter() - t0:.0f} s ({data.plan.samples('train', balanced=True):,} training windows)")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE})
    try:
        nodes = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE) for _ in range(args.nodes)]
        cluster.wait_for_nodes()
        names = {n.node_id: f"node-{i + 1}" for i, n in enumerate(nodes)}
        names[cluster.head_node.node_id] = "head"
        ray.init(address=cluster.address, log_to_driver=False)
        batch = 64
        tcfg = TrainConfig(preset="tiny", model="lstm", epochs=args.epochs, batch_size=batch, accumulate=1,
                           progress=False, patience=args.epochs,
                           epoch_windows=args.epoch_windows, monitor="val_rank_ic", monitor_mode="max")
        rcfg = RayConfig(workers=args.nodes, readers=1, storage=str(tmp / "ray"), run_name="nodes",
                         max_failures=0, address=cluster.address)
        t1 = time.perf_counter()
        _, info = fit_ray(data, tcfg, model_config_for(data, "tiny", "lstm"), rcfg, run_test=False)
        seconds = time.perf_counter() - t1
        reads = info.reads
        training = sum(1 for t in data.tickers if len(data.plan.per_ticker[t].samples["train"]))
        print(f"run          : {args.nodes} nodes x 1 CPU, {args.nodes} Train workers, {args.epochs} epochs, "
              f"{seconds:.0f} s")
        print(f"partitions   : {training} tickers with training samples x {args.epochs} epochs = "
              f"{training * args.epochs}; read {sum(reads.read_by_node().values())}, read twice {reads.reread()}")
        print(f"{'node':8} {'read':>6} {'share':>6} {'worker':>7} {'taken':>6} {'local':>6}")
        read = reads.read_by_node()
        total = max(1, sum(read.values()))
        by_node_worker = {w["node"]: w for w in reads.workers}
        for node_id, name in sorted(names.items(), key=lambda kv: kv[1]):
            w = by_node_worker.get(node_id)
            taken = sum(w["by_reader_node"].values()) if w else 0
            local = w["by_reader_node"].get(node_id, 0) if w else 0
            print(f"{name:8} {read.get(node_id, 0):>6} {read.get(node_id, 0) / total:>6.0%} "
                  f"{(w['rank'] if w else '-'):>7} {taken:>6} {local:>6}")
        print(f"summary      : {reads.summary()}")
    finally:
        ray.shutdown()
        cluster.shutdown()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
