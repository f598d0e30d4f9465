"""What a Ray Train run's workers tell the driver besides checkpoints: every epoch's metrics (the full history) and,
on the streaming path, where each worker's ticker blocks were read.

One small actor per run (``run_collector``) holds both; the Train controller's callback (``report_callback``) feeds it
the reported metrics, and a streaming worker's data module (``stream_ingest``) sends its read counts after each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def run_collector():
    """A tiny actor that keeps rank 0's metrics of every report and every worker's read counts.

    Train V2's ``Result.metrics_dataframe`` only holds the reports of the checkpoints it kept, so the full per-epoch
    history is collected here; a restart after a failure re-reports epochs, and the last report of an epoch wins.
    It lives on the driver's node: anywhere else, losing that node would fail a run that survived it. The affinity
    is hard: with a soft one Ray placed it on a worker node under load (seen: the run survived the node loss, its
    history collector did not). It needs no CPU, so the driver's node can always hold it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=ray.get_runtime_context().get_node_id(), soft=False))
    class RunCollector:
        def __init__(self):
            self.rows: dict[int, dict[str, float]] = {}
            self.reads: dict[int, dict] = {}  # per worker rank: what it trained on, by the reading node
            self.read: dict[str, list[tuple[str, int]]] = {}  # per reading node: the (ticker, epoch) it read

        def add(self, row: dict[str, float]) -> None:
            self.rows[int(row.get("epoch", len(self.rows)))] = row

        def get(self) -> list[dict[str, float]]:
            return [self.rows[k] for k in sorted(self.rows)]

        def add_reads(self, rank: int, node: str, by_reader_node: dict[str, int], partitions: int) -> None:
            self.reads[int(rank)] = {"rank": int(rank), "node": node, "by_reader_node": dict(by_reader_node),
                                     "partitions": int(partitions)}

        def add_read(self, node: str, partitions: list[tuple[str, int]]) -> None:
            self.read.setdefault(node, []).extend((str(t), int(e)) for t, e in partitions)

        def get_reads(self) -> tuple[list[dict], dict[str, list[tuple[str, int]]]]:
            return [self.reads[k] for k in sorted(self.reads)], self.read

    return RunCollector.remote()


def report_callback(collector):
    from ray.train import UserCallback

    class ForwardReports(UserCallback):
        def __init__(self, target):
            self.target = target

        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                row = {k: float(v) for k, v in metrics[0].items() if isinstance(v, (int, float))}
                self.target.add.remote(row)

    return ForwardReports(collector)


@dataclass
class StreamReads:
    """Where a streamed run's training blocks (one ticker's samples of one epoch each) were read and consumed.

    ``read``: per node, the (ticker, epoch) partitions its Ray Data readers read. ``workers``: per Train worker, its
    node, the blocks it took from its shard by the node that read them, and how many distinct partitions those were.
    Lower bounds: a pipeline stops when training does (the last blocks read may not all be taken), and a reader's
    report still in flight when the run ends is not counted."""

    workers: list[dict] = field(default_factory=list)
    read: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        """Blocks the workers took from their shards."""
        return sum(sum(w["by_reader_node"].values()) for w in self.workers)

    @property
    def local(self) -> int:
        """Blocks a worker took that were read on its own node (no transfer between machines)."""
        return sum(w["by_reader_node"].get(w["node"], 0) for w in self.workers)

    def read_by_node(self) -> dict[str, int]:
        return {node: len(parts) for node, parts in self.read.items()}

    def reread(self) -> int:
        """Partitions read more than once (by one node or several): 0 when every reader reads only its own share."""
        every = [p for parts in self.read.values() for p in parts]
        return len(every) - len(set(every))

    def summary(self) -> str:
        if not self.workers:
            return "no training block reported"
        share = self.local / self.blocks if self.blocks else 0.0
        read = sum(self.read_by_node().values())
        return (f"{read} ticker blocks read on {len(self.read)} node(s) ({self.reread()} read twice), "
                f"{self.blocks} taken by {len(self.workers)} worker(s) on "
                f"{len({w['node'] for w in self.workers})} node(s), {share:.0%} read on the worker's own node")
