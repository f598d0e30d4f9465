"""Panels larger than one process's memory: a feature dataset partitioned by ticker, fitted by streaming passes, and
cut into windows one ticker at a time (the streaming path; ``dataset.prepare`` is the in-memory one).

Three pieces, each holding one ticker's rows at a time:

- ``partitioned.build_partitioned``: the feature cache as a directory ``features-<key>.dataset/`` with one Parquet file per ticker
  (the same per-ticker files a resumable in-memory build writes) and ``_manifest.json``, written last: a directory
  without a manifest is an unfinished build, and the same command resumes it (finished tickers are kept; a partition
  that cannot be read is named and recomputed). Nothing is stacked: peak memory is one ticker's features plus the raw
  universe.
- ``plan_stream``: labels, the purged/embargoed chronological split, the scaler, top-K selection and class balance
  fitted on the training segment in two streaming passes over the partitions. The rules are exactly ``prepare``'s (the
  same ``split_ticker``, the same per-ticker blocks merged for the scaler, the same selection score from per-class
  sums), so both paths choose the same samples, labels and transforms (tests/platform/test_stream.py compares them).
  Cross-sectional labels (excess, rank) need every ticker's forward return on a day: pass 1 keeps that one column for
  the whole panel (8 bytes a row), nothing else.
- ``ticker_windows`` here, ``SegmentStream`` / ``window_dataset`` in ``stream_ingest``: a ticker's samples of one segment as materialised
  windows (n, L, k), scaled and selected by the plan; over many tickers as a plain iterable (validation, test,
  scoring) or a Ray Dataset whose reading stage cuts the windows (what Ray Train workers stream their shard from).

Oversampling on the streaming path is ``RandomOverSampler``'s draw split by ticker: every class is brought to the
majority's count exactly, its extra samples drawn with replacement from the whole class (the plan allots how many
fall on each ticker; the ticker's reader draws which windows), so an epoch's length is known before it starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


import numpy as np
import pandas as pd

from stocktrend.platform.data.dataset import DataConfig, FittedTransforms, Moments, drop_short
from stocktrend.platform.data.features import feature_set
from stocktrend.platform.data.labels import LabelKind, cross_sectional_targets, forward_returns, make_labels
from stocktrend.platform.data.partitioned import PartitionedPanel, build_partitioned
from stocktrend.platform.data.sources import DataValidationError, Universe
from stocktrend.platform.data.splits import SEGMENTS, Boundaries, chronological_boundaries, split_ticker

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Streaming fit: labels, split, transforms
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class TickerPlan:
    """One ticker's share of the plan: positions (in its own rows) of each segment's samples, before oversampling."""

    rows: int
    samples: dict[str, np.ndarray]
    dates: tuple[str, str]
    purged: int
    embargoed: int
    train_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # unbalanced, per class id
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # oversampling copies, per class id

    def train_rows(self) -> int:
        """Training samples after oversampling (exact: the copies are allotted when the plan is fitted)."""
        return int(len(self.samples["train"]) + self.extra.sum())


@dataclass
class StreamPlan:
    """Everything a streamed epoch needs besides the partitions: small, picklable, put once in the object store."""

    config: DataConfig
    transforms: FittedTransforms
    boundaries: Boundaries
    tickers: list[str]
    per_ticker: dict[str, TickerPlan]
    class_counts_by_segment: dict[str, dict[str, int]]
    train_class_counts: np.ndarray  # unbalanced, per class id (empty for value labels)
    value: dict[str, np.ndarray] = field(default_factory=dict)  # cross-sectional labels: per ticker, per row
    segment_dates: dict[str, tuple[str, str]] = field(default_factory=dict)
    data_hash: str = ""
    seconds: float = 0.0

    @property
    def kind(self) -> LabelKind:
        return LabelKind(self.config.label_kind)

    @property
    def seq_len(self) -> int:
        return self.config.sequence_length

    @property
    def n_features(self) -> int:
        return len(self.transforms.input_names)

    def samples(self, segment: str, balanced: bool = False) -> int:
        """Sample count of a segment over every ticker (``balanced``: training after oversampling)."""
        if balanced and segment == "train":
            return sum(t.train_rows() for t in self.per_ticker.values())
        return sum(len(t.samples[segment]) for t in self.per_ticker.values())

    def ticker_index(self, ticker: str) -> int:
        if not hasattr(self, "_index"):
            self._index = {t: i for i, t in enumerate(self.tickers)}
        return self._index[ticker]

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights from the unbalanced training samples (as ``PreparedData.class_weights``)."""
        counts = self.train_class_counts.astype(np.float64)
        return (counts.sum() / (len(counts) * np.maximum(counts, 1))).astype(np.float32)


def plan_stream(panel: PartitionedPanel, cfg: DataConfig, bounds: Boundaries | None = None,
                progress_every: float = 30.0) -> StreamPlan:
    """Fit labels, split and transforms on the training segment by two passes over the partitions (one ticker's rows
    in memory at a time; see the module docstring)."""
    t0 = time.perf_counter()
    kind = LabelKind(cfg.label_kind)
    if cfg.ticker_id:
        raise DataValidationError("--ticker-id is not available on the streaming path (one one-hot column per "
                                  "ticker does not scale to a whole market): leave it out")
    need = cfg.sequence_length + cfg.horizon + 1
    short = [p.ticker for p in panel.partitions if p.rows < need]
    tickers = [p.ticker for p in panel.partitions if p.rows >= need]
    if short and not (drop_short(cfg) and tickers):
        raise DataValidationError(f"too little history after the feature warm-up: {', '.join(short[:10])}"
                                  f"{' ...' if len(short) > 10 else ''}; each ticker needs at least sequence_length + "
                                  f"horizon + 1 = {need} rows")
    if short:
        log.warning("%d ticker(s) with too little history after the feature warm-up left out (need %d rows): %s",
                    len(short), need, ", ".join(short[:20]))
    if kind.cross_sectional and len(tickers) < 2:
        raise DataValidationError(f"--label {kind.value} ranks tickers against each other on the same day: it needs "
                                  f"a panel of 2 or more tickers")

    # Pass 1: dates (the timeline's boundaries) and, for cross-sectional labels, every row's forward return.
    dates_by: dict[str, np.ndarray] = {}
    fwd_parts: list[np.ndarray] = []
    last = time.perf_counter()
    for i, t in enumerate(tickers):
        f = panel.read(t, ["close"])
        d = f.index.to_numpy(dtype="datetime64[ns]")
        dates_by[t] = d
        if kind.cross_sectional:
            fwd_parts.append(forward_returns(f["close"].to_numpy(dtype=np.float64), cfg.horizon))
        if time.perf_counter() - last > progress_every:
            log.info("stream plan: pass 1 (dates, returns) %d / %d tickers", i + 1, len(tickers))
            last = time.perf_counter()
    all_dates = np.concatenate([dates_by[t] for t in tickers])
    if bounds is None:  # the timeline of every ticker, short ones included (as prepare computes it)
        timeline = [np.unique(all_dates)] + [panel.read(t, ["close"]).index.to_numpy(dtype="datetime64[ns]")
                                             for t in short]
        bounds = chronological_boundaries(pd.DatetimeIndex(np.unique(np.concatenate(timeline))), cfg.fractions)
    value: dict[str, np.ndarray] = {}
    if kind.cross_sectional:
        v = cross_sectional_targets(np.concatenate(fwd_parts), all_dates, kind)
        del fwd_parts
        a = 0
        for t in tickers:
            n = len(dates_by[t])
            value[t] = v[a:a + n].copy()
            a += n
        del v
    del all_dates

    # Pass 2: labels, split, and the training statistics (scaler blocks, per-class sums for the selection score).
    names = panel.feature_names
    n_groups = 1 if kind.is_value else kind.n_classes
    moments = Moments()
    sums = np.zeros((n_groups, len(names)))
    counts = np.zeros(n_groups)
    sq, cross = np.zeros(len(names)), np.zeros(len(names))
    t_sum, t_sq = 0.0, 0.0
    shift = None  # value labels: raw sums are taken around the first training block's mean (no cancellation)
    per_ticker: dict[str, TickerPlan] = {}
    seg_counts = {s: np.zeros(max(n_groups, 1), dtype=np.int64) for s in SEGMENTS}
    first_last: dict[str, list] = {s: [None, None] for s in SEGMENTS}
    last = time.perf_counter()
    for i, t in enumerate(tickers):
        f = panel.read(t, [*names, "close"])
        d = f.index
        fwd = forward_returns(f["close"].to_numpy(dtype=np.float64), cfg.horizon)
        source = value[t] if kind.cross_sectional else fwd
        y = make_labels(source, kind, cfg.neutral_band)
        sp = split_ticker(pd.DatetimeIndex(d), bounds, cfg.sequence_length, cfg.horizon, cfg.embargo)
        segs = sp.segments()
        per_ticker[t] = TickerPlan(len(f), {s: segs[s].astype(np.int64) for s in SEGMENTS},
                                   (str(d[0].date()), str(d[-1].date())), int(sum(sp.purged.values())),
                                   int(sum(sp.embargoed.values())),
                                   np.zeros(0, np.int64) if kind.is_value else
                                   np.bincount(y[segs["train"]], minlength=n_groups).astype(np.int64))
        for s in SEGMENTS:
            pos = segs[s]
            if len(pos):
                lo, hi = d[int(pos.min())], d[int(pos.max())]
                fl = first_last[s]
                fl[0] = lo if fl[0] is None or lo < fl[0] else fl[0]
                fl[1] = hi if fl[1] is None or hi > fl[1] else fl[1]
                if not kind.is_value:
                    seg_counts[s] += np.bincount(y[pos], minlength=n_groups)
        train = segs["train"]
        if len(train):
            values = f[names].to_numpy(dtype=np.float32)
            moments.add(values[:int(train.max()) + 1])
            x = values[train].astype(np.float64)
            tb = y[train]
            if kind.is_value:
                if shift is None:
                    shift = x.mean(0)
                x = x - shift
                tb = tb.astype(np.float64)
                sums[0] += x.sum(0)
                sq += (x ** 2).sum(0)
                cross += x.T @ tb
                counts[0] += len(x)
                t_sum += float(tb.sum())
                t_sq += float((tb ** 2).sum())
            else:
                for c in range(n_groups):
                    sel = tb == c
                    sums[c] += x[sel].sum(0)
                    counts[c] += sel.sum()
        if time.perf_counter() - last > progress_every:
            log.info("stream plan: pass 2 (labels, split, statistics) %d / %d tickers", i + 1, len(tickers))
            last = time.perf_counter()
    for s in SEGMENTS:
        if not any(len(p.samples[s]) for p in per_ticker.values()):
            raise DataValidationError(
                f"the {s} segment has no samples: too little history for sequence_length {cfg.sequence_length}, "
                f"horizon {cfg.horizon}, embargo {cfg.embargo} and split {cfg.fractions}")
    mean, std, _ = moments.result()
    std = np.where(std > 1e-12, std, 1.0)
    if kind.is_value:
        n = counts[0]
        mx = sums[0] / n
        t_mean = t_sum / n
        cov = cross / n - mx * t_mean
        denom = np.sqrt(np.maximum(sq / n - mx ** 2, 0) * max(t_sq / n - t_mean ** 2, 0.0))
        scores = np.abs(np.divide(cov, denom, out=np.zeros(len(names)), where=denom > 0))
    else:
        means = (sums / np.maximum(counts, 1)[:, None] - mean) / std  # class means of the standardised features
        means = np.where(counts[:, None] > 0, means, 0.0)
        scores = np.max(np.abs(means[:, None, :] - means[None, :, :]), axis=(0, 1))
    k = len(names) if cfg.top_k <= 0 else min(cfg.top_k, len(names))
    order = np.argsort(-scores, kind="stable")[:k]
    transforms = FittedTransforms(list(names), [names[i] for i in order], mean[order], std[order], scores[order])

    train_counts = np.zeros(0, dtype=np.int64) if kind.is_value else seg_counts["train"]
    if cfg.oversample and not kind.is_value and train_counts.max() > 0:
        _allot_copies(per_ticker, tickers, train_counts, cfg.seed)
    class_counts = {s: ({} if kind.is_value else
                        {name: int(seg_counts[s][c]) for c, name in enumerate(kind.class_names)}) for s in SEGMENTS}
    segment_dates = {s: (str(pd.Timestamp(first_last[s][0]).date()), str(pd.Timestamp(first_last[s][1]).date()))
                     for s in SEGMENTS}
    plan = StreamPlan(cfg, transforms, bounds, tickers, per_ticker, class_counts, train_counts, value,
                      segment_dates, panel.data_hash, time.perf_counter() - t0)
    log.info("stream plan: %d tickers, train %d / val %d / test %d samples, %d of %d features kept (%.0f s)",
             len(tickers), plan.samples("train"), plan.samples("val"), plan.samples("test"), k, len(names),
             plan.seconds)
    return plan


# --------------------------------------------------------------------------------------------------------------------
# Windows, one ticker at a time
# --------------------------------------------------------------------------------------------------------------------

def _allot_copies(per_ticker: dict[str, TickerPlan], tickers: list[str], counts: np.ndarray, seed: int) -> None:
    """RandomOverSampler's draw, split by ticker: each class gets ``max(counts) - count`` extra samples drawn with
    replacement from the whole class; how many land on each ticker is multinomial in the ticker's share of the class
    (drawn here, seeded), and which of its windows they copy is drawn when the ticker is read (``_oversampled``)."""
    rng = np.random.default_rng([seed, 7919])
    share = np.stack([per_ticker[t].train_classes for t in tickers])  # (tickers, classes)
    extra = np.zeros_like(share)
    for c in range(share.shape[1]):
        need = int(counts.max() - counts[c])
        if need > 0 and counts[c] > 0:
            extra[:, c] = rng.multinomial(need, share[:, c] / share[:, c].sum())
    for t, e in zip(tickers, extra):
        per_ticker[t].extra = e.astype(np.int64)


def _oversampled(pos: np.ndarray, y: np.ndarray, tp: TickerPlan, seed: int, ticker_index: int) -> np.ndarray:
    """A ticker's training positions plus its allotted copies (uniform with replacement within each class)."""
    if not len(tp.extra) or not tp.extra.any() or not len(pos):
        return pos
    rng = np.random.default_rng([seed, ticker_index])
    labels = y[pos]
    copies = [pos]
    for c, n in enumerate(tp.extra):
        if n:
            members = pos[labels == c]
            copies.append(members[rng.integers(0, len(members), int(n))])
    return np.sort(np.concatenate(copies))


def ticker_block(panel: PartitionedPanel, plan: StreamPlan, ticker: str, segment: str, with_return: bool = False,
                 with_day: bool = False) -> dict[str, np.ndarray]:
    """One ticker's model inputs and its samples of a segment, before windows are cut: ``x`` (rows, k) float32 scaled
    and selected by the plan, ``pos`` the row of each sample's last input day (training samples oversampled, see the
    module docstring), ``y`` per sample; ``r`` (the value behind the label) with ``with_return``; ``day`` (days since
    the epoch, float32) and ``fwd`` (the forward return) with ``with_day``. A window is the ``sequence_length`` rows
    ending at its ``pos``: sending the block instead of its windows moves L times fewer bytes."""
    kind = plan.kind
    cfg = plan.config
    tp = plan.per_ticker[ticker]
    pos = tp.samples[segment]
    f = panel.read(ticker, [*plan.transforms.selected, "close"])
    fwd = forward_returns(f["close"].to_numpy(dtype=np.float64), cfg.horizon)
    source = plan.value[ticker] if kind.cross_sectional else fwd
    y = make_labels(source, kind, cfg.neutral_band)
    if segment == "train" and cfg.oversample and not kind.is_value:
        pos = _oversampled(pos, y, tp, cfg.seed, plan.ticker_index(ticker))
    out = {"x": plan.transforms.transform(f), "pos": pos.astype(np.int64),
           "y": y[pos].astype(np.float32 if kind.is_value else np.int64)}
    if with_return:
        out["r"] = source[pos].astype(np.float32)
    if with_day:
        out["day"] = f.index.to_numpy(dtype="datetime64[ns]")[pos].astype("datetime64[D]").astype(
            np.int64).astype(np.float32)
        out["fwd"] = fwd[pos].astype(np.float32)
    return out


def cut_windows(x: np.ndarray, pos: np.ndarray, seq_len: int) -> np.ndarray:
    """Windows (n, L, k) of a ticker's inputs ending at rows ``pos`` (a copy)."""
    from numpy.lib.stride_tricks import sliding_window_view
    view = sliding_window_view(x, seq_len, axis=0).transpose(0, 2, 1)
    return np.ascontiguousarray(view[np.asarray(pos) - seq_len + 1])


def ticker_windows(panel: PartitionedPanel, plan: StreamPlan, ticker: str, segment: str,
                   with_return: bool = False, with_day: bool = False) -> dict[str, np.ndarray]:
    """``ticker_block`` with its windows cut: ``x`` (n, L, k) float32, ``y``, and ``r`` / ``day`` / ``fwd``."""
    b = ticker_block(panel, plan, ticker, segment, with_return, with_day)
    b["x"] = cut_windows(b.pop("x"), b.pop("pos"), plan.seq_len)
    return b


# --------------------------------------------------------------------------------------------------------------------
# The streamed data set as training sees it
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class StreamedData:
    """A partitioned panel and its fitted plan, answering what training asks of ``PreparedData`` (sizes, label kind,
    class weights, transforms, segment dates) without holding any rows."""

    panel: PartitionedPanel
    plan: StreamPlan
    reads_to: Any = field(default=None, compare=False, repr=False)  # on a Train worker: where to report its reads

    @property
    def config(self) -> DataConfig:
        return self.plan.config

    @property
    def transforms(self) -> FittedTransforms:
        return self.plan.transforms

    @property
    def tickers(self) -> list[str]:
        return self.plan.tickers

    @property
    def kind(self) -> LabelKind:
        return self.plan.kind

    @property
    def is_panel(self) -> bool:
        from stocktrend.models.rank_ic import MIN_NAMES
        return len(self.tickers) >= MIN_NAMES

    @property
    def seq_len(self) -> int:
        return self.plan.seq_len

    @property
    def n_features(self) -> int:
        return self.plan.n_features

    def class_weights(self) -> np.ndarray:
        return self.plan.class_weights()

    def class_counts(self, segment: str) -> dict[str, int]:
        return self.plan.class_counts_by_segment[segment]

    def date_range(self, segment: str) -> tuple[str, str]:
        return self.plan.segment_dates[segment]


def open_streamed(universe: Universe, cfg: DataConfig, cache_dir: Path | str | None = None, n_jobs: int = 1,
                  bounds: Boundaries | None = None) -> StreamedData:
    """The streaming counterpart of ``dataset.build_dataset``: partitioned features (built or reused) and the plan."""
    panel = build_partitioned(universe, feature_set(cfg.features), cache_dir, n_jobs)
    return StreamedData(panel, plan_stream(panel, cfg, bounds))


def prepare_any(panel, cfg: DataConfig, bounds: Boundaries | None = None):
    """``dataset.prepare`` for an in-memory feature panel; the streamed plan (``StreamedData``) for a partitioned one
    (what a search trial receives on the streaming path)."""
    if isinstance(panel, PartitionedPanel):
        return StreamedData(panel, plan_stream(panel, cfg, bounds))
    from stocktrend.platform.data.dataset import prepare
    return prepare(panel, cfg, bounds)


def validating_tickers(data: StreamedData) -> list[str]:
    """The tickers with validation samples: the workers share them (every worker must have some, or one would skip
    the epoch-end reductions the others wait in)."""
    return [t for t in data.tickers if len(data.plan.per_ticker[t].samples["val"])]


def reference_sample(data: StreamedData, max_windows: int = 20_000, max_rows: int = 200_000, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a checkpoint's drift reference and regression calibration need, read ticker by ticker in a seeded order
    until the bounds are met: validation windows (n, L, k) with their label values, and the model inputs of the last
    day of training windows (unbalanced). The in-memory path uses every training row; this one at most ``max_rows``."""
    plan, panel = data.plan, data.panel
    order = np.random.default_rng(seed).permutation(len(plan.tickers))
    wins, vals, rows = [], [], []
    n_w = n_r = 0
    for i in order:
        t = plan.tickers[int(i)]
        tp = plan.per_ticker[t]
        if n_w < max_windows and len(tp.samples["val"]):
            w = ticker_windows(panel, plan, t, "val", with_return=True)
            wins.append(w["x"][:max_windows - n_w])
            vals.append(w["r"][:max_windows - n_w])
            n_w += len(wins[-1])
        if n_r < max_rows and len(tp.samples["train"]):
            f = panel.read(t, plan.transforms.selected)
            x = plan.transforms.transform(f)[np.unique(tp.samples["train"])]
            rows.append(x[:max_rows - n_r])
            n_r += len(rows[-1])
        if n_w >= max_windows and n_r >= max_rows:
            break
    k, L = plan.n_features, plan.seq_len
    return (np.concatenate(wins) if wins else np.zeros((0, L, k), np.float32),
            np.concatenate(vals) if vals else np.zeros(0, np.float32),
            np.concatenate(rows) if rows else np.zeros((0, k), np.float32))


def build_streamed(cfg: DataConfig, cache_dir: Path | str | None = None, n_jobs: int = 1) -> StreamedData:
    """``build_dataset``'s sources (embedded universe or a data directory, ``as_of`` cut) on the streaming path."""
    from stocktrend.platform.data.universes import config_universe
    return open_streamed(config_universe(cfg), cfg, cache_dir, n_jobs)
