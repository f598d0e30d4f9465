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


class _ReadBlocks:
    """Ray Data's reading stage (a small actor pool): a batch of ticker names -> one row per ticker holding its
    ``ticker_block``. The panel's manifest and the plan are fetched once per actor."""

    def __init__(self, root: str, plan_ref, segment: str, with_return: bool):
        import ray
        self.panel = PartitionedPanel.open(root)
        self.plan = ray.get(plan_ref)
        self.segment, self.with_return = segment, with_return

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blocks = [{**ticker_block(self.panel, self.plan, str(t), self.segment, self.with_return), "epoch": int(e)}
                  for t, e in zip(batch["ticker"], batch["epoch"])]
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


def window_dataset(panel: PartitionedPanel, plan_ref, plan: StreamPlan, segment: str = "train",
                   with_return: bool = False, seed: int = 0, epochs: int = 1, reader_cpus: float = 0.0,
                   readers: int = 2, tickers_per_read: int = 0):
    """A Ray Dataset of a segment's ticker blocks (``ticker_block``; one row per ticker) for ``epochs`` passes, each
    in its own random ticker order: one execution serves the whole fit (a Ray Data pipeline starts in seconds; once,
    not every epoch), and a worker's epochs take their batches from it in turn (``stream_data_module``). The reading
    stage is a pool of ``readers`` actors of ``reader_cpus`` logical CPUs (light next to training: it must not wait
    for CPUs the Train workers hold), ``tickers_per_read`` tickers a call. Windows are cut where they are consumed
    (``shuffled_batches``)."""
    import ray
    tickers = [t for t in plan.tickers if len(plan.per_ticker[t].samples[segment])]
    items = [{"ticker": tickers[i], "epoch": e} for e in range(max(1, epochs))
             for i in np.random.default_rng([seed, e]).permutation(len(tickers))]
    if tickers_per_read <= 0:  # small panels: one ticker a block, so that every worker's share holds some
        tickers_per_read = 1 if len(tickers) < 64 else 4
    ray.data.DataContext.get_current().enable_progress_bars = False  # the run's own log lines say how it goes
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(-(-len(items) // tickers_per_read), 4096)))
    return ds.map_batches(_ReadBlocks, fn_constructor_kwargs={"root": str(panel.root), "plan_ref": plan_ref,
                                                              "segment": segment, "with_return": with_return},
                          batch_size=tickers_per_read, batch_format="numpy", num_cpus=reader_cpus,
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, readers)))


def stream_data_module(data: StreamedData, batch_size: int, eval_batch_size: int = 256, with_return: bool = False,
                       shuffle_buffer: int = 20_000):
    """A LightningDataModule over a streamed data set. Training batches come from this Ray Train worker's shard of the
    ``train`` Ray Dataset (``window_dataset``), mixed across tickers by a local shuffle buffer; a worker validates on
    its own share of the tickers (rank r of w takes every w-th ticker: every validation sample is scored once, and
    the rank IC metric gathers the cross-section from all workers); test (on the driver) reads every ticker."""
    import lightning.pytorch as pl

    with_day = data.is_panel

    class _Shard:
        """This worker's training batches: its shard of the ticker blocks (Ray Data), windows shuffled across the
        tickers of a pool and cut when batched; exactly ``len`` batches per epoch on every worker (the oversampled
        count, known in advance, divided among the workers), so DDP ranks step together and the learning-rate
        schedule knows the epoch's length."""

        def __init__(self, rank: int, world: int):
            import ray.train
            self.shard = ray.train.get_dataset_shard("train")
            self.n = max(1, data.plan.samples("train", balanced=True) // max(1, world) // batch_size)
            self.rank, self.epoch = rank, 0
            self.blocks, self.pending, self.state = None, None, {}

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
                yield {k: v for k, v in block.items() if k != "epoch"}

        def __iter__(self):
            # one execution of the dataset serves every epoch (it holds one ticker order per epoch, each row tagged
            # with its epoch): Lightning's epoch e takes the blocks tagged e, then exactly n batches from them
            if self.blocks is None:
                rows = self.shard.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=4)
                self.blocks = ({k: v[0] for k, v in row.items()} for row in rows)
            e, self.epoch = self.epoch, self.epoch + 1
            yield from shuffled_batches(self._epoch_blocks(e), data.plan.seq_len, batch_size, self.n, with_return,
                                        pool=shuffle_buffer, seed=(data.config.seed, self.rank, e), state=self.state)

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
    """Every worker validates on its own tickers: there must be at least one with validation samples per worker."""
    n_val = len(validating_tickers(data))
    if n_val < workers:
        raise ValueError(f"the streaming path validates each worker on its own tickers: {n_val} ticker(s) with "
                         f"validation samples cannot feed {workers} workers; lower --workers")


def ticker_split_config():
    """Ray Train's DataConfig splitting only ``train``, by rows without equalising them (Ray's default drops rows to
    give every worker the same count; here a row is a whole ticker, and ``shuffled_batches`` evens the steps)."""
    import ray.train

    class _TickerSplit(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            # DataConfig.configure (Ray 2.60) with equal=False
            ds = datasets["train"]
            if ds.name is None:
                ds.set_name("train")
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options("train")
            locality = worker_node_ids if self._enable_shard_locality else None
            return [{"train": s} for s in ds.streaming_split(world_size, equal=False, locality_hints=locality)]

    return _TickerSplit(datasets_to_split=["train"])
