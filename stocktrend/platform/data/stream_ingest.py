"""Feeding training from the streaming path: batches of a segment one ticker at a time (validation, test), ticker
blocks through a Ray Dataset into Ray Train workers, windows shuffled across a pool of tickers and cut where they are
consumed, and the LightningDataModule that puts them together (docs/data.md, "the streaming path")."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from stocktrend.platform.data.partitioned import PartitionedPanel
from stocktrend.platform.data.stream import (StreamedData, StreamPlan, cut_windows, ticker_block, ticker_windows,
                                             validating_tickers)


def batch_keys(with_return: bool, with_day: bool) -> tuple[str, ...]:
    """The order of a batch's tensors as TrendModule takes them: (x, y[, r][, meta])."""
    return ("x", "y", *(("r",) if with_return else ()), *(("meta",) if with_day else ()))


def as_batch(d: dict[str, Any], with_return: bool, with_day: bool) -> tuple:
    """A dict of arrays/tensors -> the tuple TrendModule's steps take (meta = stacked (day, forward return))."""
    import torch

    def t(v):
        return v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
    items = [t(d["x"]), t(d["y"])]
    if with_return:
        items.append(t(d["r"]))
    if with_day:
        items.append(torch.stack([t(d["day"]).float(), t(d["fwd"]).float()], dim=1))
    return tuple(items)


class SegmentStream:
    """A re-iterable of batches over some tickers' samples of one segment, one ticker read at a time (validation,
    test and scoring on the streaming path; a Ray Train worker validates on its own share of the tickers)."""

    def __init__(self, panel: PartitionedPanel, plan: StreamPlan, segment: str, tickers: list[str] | None = None,
                 batch_size: int = 256, with_return: bool = False, with_day: bool = False):
        self.panel, self.plan, self.segment = panel, plan, segment
        self.tickers = list(plan.tickers if tickers is None else tickers)
        self.batch_size, self.with_return, self.with_day = batch_size, with_return, with_day

    def __iter__(self) -> Iterator[tuple]:
        buf: list[dict[str, np.ndarray]] = []
        n = 0
        for t in self.tickers:
            if not len(self.plan.per_ticker[t].samples[self.segment]):
                continue
            w = ticker_windows(self.panel, self.plan, t, self.segment, self.with_return, self.with_day)
            buf.append(w)
            n += len(w["y"])
            while n >= self.batch_size:
                joined = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
                yield as_batch({k: v[:self.batch_size] for k, v in joined.items()}, self.with_return, self.with_day)
                rest = {k: v[self.batch_size:] for k, v in joined.items()}
                buf, n = [rest], len(rest["y"])
        if n:
            joined = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
            yield as_batch(joined, self.with_return, self.with_day)


READ_TAGS = ("read_ticker", "read_node")  # a block's ticker and the node of the reader that read it


class _ReadBlocks:
    """Ray Data's reading stage (a small actor pool): a batch of ticker names -> one row per ticker holding its
    ``ticker_block``. The panel's manifest and the plan are fetched once per actor."""

    def __init__(self, root: str, plan_ref, segment: str, with_return: bool, collector=None):
        import ray
        self.panel = PartitionedPanel.open(root)
        self.plan = ray.get(plan_ref)
        self.segment, self.with_return, self.collector = segment, with_return, collector
        self.node = ray.get_runtime_context().get_node_id()  # where it was read (training.ray_reports.StreamReads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blocks = [{**ticker_block(self.panel, self.plan, str(t), self.segment, self.with_return), "epoch": int(e),
                   READ_TAGS[0]: str(t), READ_TAGS[1]: self.node}
                  for t, e in zip(batch["ticker"], batch["epoch"])]
        if self.collector is not None:
            self.collector.add_read.remote(self.node, [(str(t), int(e)) for t, e in zip(batch["ticker"],
                                                                                      batch["epoch"])])
        out = {}
        for k in blocks[0]:
            col = np.empty(len(blocks), dtype=object)  # ragged: one array per ticker
            col[:] = [b[k] for b in blocks]
            out[k] = col
        return out


def shuffled_batches(blocks, seq_len: int, batch_size: int, n_batches: int, with_return: bool = False,
                     pool: int = 20_000, seed: int | tuple[int, ...] = 0, state: dict | None = None):
    """Training batches from a stream of ticker blocks: windows of the blocks held in a pool of about ``pool``
    samples are shuffled together (so a batch mixes tickers) and cut only when batched. Exactly ``n_batches`` whole
    batches are yielded: a stream that holds more stops there; one that ends early is topped up by drawing again from
    its last pool of at least ``batch_size`` samples (or, with ``state``, the previous call's), so every DDP rank
    steps the same number of times. A stream with no sample at all, and nothing to fall back on, is an error (a rank
    without data would leave the others waiting)."""
    rng = np.random.default_rng(seed)
    state = state if state is not None else {}
    held: list[dict[str, np.ndarray]] = []
    count = done = 0

    def drain(keep_tail: bool):
        nonlocal held, count, done
        if not held:
            return
        owner = np.concatenate([np.full(len(b["pos"]), i) for i, b in enumerate(held)])
        idx = np.concatenate([np.arange(len(b["pos"])) for b in held])
        if len(idx) >= batch_size:
            state["last"] = held  # what a short stream is topped up from
        order = rng.permutation(len(idx))
        full = (len(order) // batch_size) * batch_size
        for a in range(0, full, batch_size):
            if done >= n_batches:
                break
            yield _gather(held, owner[order[a:a + batch_size]], idx[order[a:a + batch_size]], seq_len, with_return)
            done += 1
        rest = order[full:]
        if keep_tail and len(rest):  # the leftover samples stay for the next pool
            tail_owner, tail_idx = owner[rest], idx[rest]
            kept = []
            for o in np.unique(tail_owner):
                b = held[int(o)]
                sel = tail_idx[tail_owner == o]
                kept.append({k: (v if k == "x" else v[sel]) for k, v in b.items()})
            held = kept
            count = sum(len(b["pos"]) for b in held)
        else:
            if len(rest) and "last" not in state:
                state["last"] = held
            held, count = [], 0

    for block in blocks:
        if done >= n_batches:
            break
        if len(block["pos"]):
            held.append(block)
            count += len(block["pos"])
        if count >= pool:
            yield from drain(keep_tail=True)
    yield from drain(keep_tail=False)
    last = state.get("last")
    if done < n_batches and not last:
        raise RuntimeError("this worker received no training window in this epoch (too few tickers for the workers: "
                           "lower --workers)")
    if done < n_batches:
        owner = np.concatenate([np.full(len(b["pos"]), i) for i, b in enumerate(last)])
        idx = np.concatenate([np.arange(len(b["pos"])) for b in last])
    while done < n_batches:  # the stream ran short: top up from the last pool
        pick = rng.integers(0, len(idx), batch_size)
        yield _gather(last, owner[pick], idx[pick], seq_len, with_return)
        done += 1


def _gather(held, owner: np.ndarray, idx: np.ndarray, seq_len: int, with_return: bool) -> tuple:
    import torch
    xs, ys, rs = [], [], []
    for o in np.unique(owner):
        b = held[int(o)]
        sel = idx[owner == o]
        xs.append(cut_windows(b["x"], b["pos"][sel], seq_len))
        ys.append(b["y"][sel])
        if with_return:
            rs.append(b["r"][sel])
    out = [torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))]
    if with_return:
        out.append(torch.from_numpy(np.concatenate(rs)))
    return tuple(out)


def ticker_shares(plan: StreamPlan, segment: str, world: int) -> list[list[str]]:
    """The tickers with samples in ``segment`` dealt to ``world`` workers, largest first to the lightest share, by
    the samples an epoch draws (training: after oversampling), so the shares hold about the same number; fixed for the
    run, so a worker reads the same partitions every epoch."""
    def size(t: str) -> int:
        tp = plan.per_ticker[t]
        return tp.train_rows() if segment == "train" else len(tp.samples[segment])
    tickers = sorted((t for t in plan.tickers if len(plan.per_ticker[t].samples[segment])), key=lambda t: (-size(t), t))
    shares: list[list[str]] = [[] for _ in range(max(1, world))]
    load = [0] * len(shares)
    for t in tickers:
        i = min(range(len(shares)), key=lambda j: (load[j], j))
        shares[i].append(t)
        load[i] += size(t)
    return shares


def window_dataset(root: str, plan_ref, tickers: list[str], segment: str = "train", with_return: bool = False,
                   seed: int = 0, epochs: int = 1, reader_cpus: float = 0.0, readers: int = 1,
                   tickers_per_read: int = 0, collector=None, rank: int = 0, node_id: str | None = None):
    """A Ray Dataset of one worker's ticker blocks (``ticker_block``; one row per ticker): its share ``tickers``
    (``ticker_shares``) for ``epochs`` passes, each in its own random order. One execution serves the whole fit (a Ray
    Data pipeline starts in seconds; once, not every epoch), and the worker's epochs take their batches from it in
    turn (``stream_data_module``). The reading stage is a pool of ``readers`` actors, ``tickers_per_read`` tickers a
    call, placed on ``node_id`` (the worker's node), so that each node reads only its own worker's partitions. They
    hold no logical CPU (light next to training; the worker's CPUs are its placement group's, so a reader pinned to
    its node and asking for a CPU could wait there forever). The placement is hard: a soft one put the readers
    elsewhere (0% and 67% local in two runs on 3 nodes, bench/stream_nodes.py); if the node goes, its worker goes with
    it and the restarted group builds new pipelines on the new nodes (``ticker_split_config``). Windows are cut where
    they are consumed (``shuffled_batches``). ``collector``: the run's (training.ray_reports), told which partitions
    each node read. Only the plan's reference travels (the plan itself grows with the panel)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    if node_id and reader_cpus > 0:
        raise ValueError("the streaming path's readers are pinned to their worker's node, whose CPUs the worker "
                         "holds: reader_cpus must be 0")
    items = [{"ticker": tickers[i], "epoch": e} for e in range(max(1, epochs))
             for i in np.random.default_rng([seed, e, rank]).permutation(len(tickers))]
    if tickers_per_read <= 0:  # small shares: one ticker a block, so that the shuffle pool mixes several
        tickers_per_read = 1 if len(tickers) < 64 else 4
    ray.data.DataContext.get_current().enable_progress_bars = False  # the run's own log lines say how it goes
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(-(-len(items) // tickers_per_read), 4096)))
    place = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)} if node_id else {}
    return ds.map_batches(_ReadBlocks, fn_constructor_kwargs={"root": str(root), "plan_ref": plan_ref,
                                                              "segment": segment, "with_return": with_return,
                                                              "collector": collector},
                          batch_size=tickers_per_read, batch_format="numpy", num_cpus=reader_cpus,
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, readers)), **place)


def stream_data_module(data: StreamedData, batch_size: int, eval_batch_size: int = 256, with_return: bool = False,
                       shuffle_buffer: int = 20_000, seed: int = 0):
    """A LightningDataModule over a streamed data set. Training batches come from this Ray Train worker's shard of the
    ``train`` Ray Dataset (``window_dataset``; outside Ray Train, from the partitions read in process), mixed across
    tickers by a local shuffle buffer; a worker validates on its own share of the tickers (rank r of w takes every
    w-th ticker: every validation sample is scored once, and the rank IC metric gathers the cross-section from all
    workers); test (on the driver) reads every ticker. ``seed``: the training seed (ticker order, shuffles)."""
    import lightning.pytorch as pl

    with_day = data.is_panel

    class _Shard:
        """This worker's training batches: its shard of the ticker blocks (Ray Data), windows shuffled across the
        tickers of a pool and cut when batched; exactly ``len`` batches per epoch on every worker (the oversampled
        count, known in advance, divided among the workers), so DDP ranks step together and the learning-rate
        schedule knows the epoch's length."""

        def __init__(self, rank: int, world: int):
            import ray
            import ray.train
            # a Ray Train worker of fit_ray (it set the run's collector) reads its Ray Dataset shard; anything else
            # (training.fit in one process, a search trial) reads the partitions itself
            self.shard = ray.train.get_dataset_shard("train") if data.reads_to is not None else None
            self.n = max(1, data.plan.samples("train", balanced=True) // max(1, world) // batch_size)
            self.rank, self.epoch = rank, 0
            self.blocks, self.pending, self.state = None, None, {}
            self.by_node: dict[str, int] = {}  # blocks trained on, by the node that read them
            self.seen: set[tuple[str, int]] = set()  # distinct (ticker, epoch) partitions among them
            self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"

        def __len__(self) -> int:
            return self.n

        def _epoch_blocks(self, e: int):
            """This worker's blocks tagged with dataset epoch ``e``; leftovers of earlier epochs are skipped, the
            first block of the next epoch waits for it."""
            while True:
                if self.pending is None:
                    try:
                        self.pending = next(self.blocks)
                    except StopIteration:
                        return
                tag = int(self.pending["epoch"])
                if tag < e:
                    self.pending = None
                    continue
                if tag > e:
                    return
                block, self.pending = self.pending, None
                node = str(block[READ_TAGS[1]])
                self.by_node[node] = self.by_node.get(node, 0) + 1
                self.seen.add((str(block[READ_TAGS[0]]), tag))
                yield {k: v for k, v in block.items() if k not in ("epoch", *READ_TAGS)}

        def __iter__(self):
            # one execution of the dataset serves every epoch (it holds one ticker order per epoch, each row tagged
            # with its epoch): Lightning's epoch e takes the blocks tagged e, then exactly n batches from them
            if self.shard is None:  # in process: this epoch's tickers, each read only when its turn comes
                self.blocks, self.pending = self._local_blocks(self.epoch), None
            elif self.blocks is None:
                rows = self.shard.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=4)
                self.blocks = ({k: v[0] for k, v in row.items()} for row in rows)
            e, self.epoch = self.epoch, self.epoch + 1
            try:
                yield from shuffled_batches(self._epoch_blocks(e), data.plan.seq_len, batch_size, self.n,
                                            with_return, pool=shuffle_buffer, seed=(seed, self.rank, e),
                                            state=self.state)
            finally:  # also when Lightning stops at its batch limit and drops the iterator
                self._report()

        def _local_blocks(self, e: int):
            """Outside Ray Train (``training.fit`` on a streamed data set, a search trial): epoch ``e``'s training
            blocks read in this process in the epoch's random order (as ``window_dataset``'s), lazily: an epoch cut
            short (``--epoch-windows``) reads no more tickers than it trains on."""
            tickers = ticker_shares(data.plan, "train", 1)[0]
            for i in np.random.default_rng([seed, e, 0]).permutation(len(tickers)):
                block = ticker_block(data.panel, data.plan, tickers[i], "train", with_return)
                yield {**block, "epoch": e, READ_TAGS[0]: tickers[i], READ_TAGS[1]: self.node}

        def _report(self) -> None:
            """Where this worker's blocks so far were read, to the run's collector (training.ray_reports)."""
            if data.reads_to is not None:
                import ray
                try:  # waited for (briefly): the worker may be torn down right after its last epoch
                    ray.wait([data.reads_to.add_reads.remote(self.rank, self.node, dict(self.by_node),
                                                             len(self.seen))], timeout=10)
                except Exception:  # noqa: BLE001 - a count, never a reason to fail the epoch
                    pass

    def rank_world() -> tuple[int, int]:
        try:
            import ray.train
            ctx = ray.train.get_context()
            return ctx.get_world_rank(), ctx.get_world_size()
        except Exception:  # noqa: BLE001 - outside a Train worker
            return 0, 1

    class StreamDataModule(pl.LightningDataModule):
        def _part(self) -> list[str]:
            rank, world = rank_world()
            return validating_tickers(data)[rank::world]

        def train_dataloader(self):
            return _Shard(*rank_world())

        def val_dataloader(self):
            return SegmentStream(data.panel, data.plan, "val", self._part(), eval_batch_size, with_return, with_day)

        def test_dataloader(self):
            return SegmentStream(data.panel, data.plan, "test", None, eval_batch_size, with_return, with_day)

    return StreamDataModule()


def check_workers(data: StreamedData, workers: int) -> None:
    """Every worker trains and validates on its own tickers: at least one with samples of each per worker."""
    n_val = len(validating_tickers(data))
    if n_val < workers:
        raise ValueError(f"the streaming path validates each worker on its own tickers: {n_val} ticker(s) with "
                         f"validation samples cannot feed {workers} workers; lower --workers")
    n_train = sum(1 for t in data.tickers if len(data.plan.per_ticker[t].samples["train"]))
    if n_train < workers:
        raise ValueError(f"the streaming path trains each worker on its own tickers: {n_train} ticker(s) with "
                         f"training samples cannot feed {workers} workers; lower --workers")


def ticker_split_config(build, shares: list[list[str]]):
    """Ray Train's DataConfig for the streaming path: instead of one pipeline split between the workers
    (``streaming_split``; its locality hints are a preference: on 3 nodes 31% of the blocks reached the worker on the
    node that read them, and one node read 62% of the panel, bench/stream_nodes.py), every worker gets its own
    pipeline over its share of the tickers (``shares[rank]``, ``ticker_shares``), read on its own node:
    ``build(tickers=..., rank=..., node_id=...)`` -> the worker's Ray Dataset (``window_dataset``). Called again with
    the new nodes when a worker group restarts."""
    import ray.train

    class _TickerShares(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            if world_size != len(shares):
                raise ValueError(f"{world_size} workers for {len(shares)} ticker shares")
            nodes = worker_node_ids or [None] * world_size
            out = []
            for rank in range(world_size):
                ds = build(tickers=shares[rank], rank=rank, node_id=nodes[rank])
                ds.set_name(f"train-{rank}")
                ds.context.execution_options = self._resolve_execution_options("train")
                out.append({"train": ds.iterator()})
            return out

    return _TickerShares(datasets_to_split=[])
