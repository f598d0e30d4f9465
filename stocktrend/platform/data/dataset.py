"""From cached features to model-ready windows: labels, split, fit-on-train transforms, oversampling, DataModule.

Leakage rules (docs/data.md, "Features, labels, splits"): the scaler is fitted on the rows of the training segment only,
feature selection on the training samples only, and RandomOverSampler resamples training sample *indices* only.
Validation and test are never resampled. Windows are views into one float32 matrix: a sample is the row of its last
input day, and its window is the ``sequence_length`` rows ending there (never crossing a ticker boundary).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

from stocktrend.models.rank_ic import MIN_NAMES
from stocktrend.platform.data.cache import FeaturePanel, load_or_build_panel, ticker_offsets
from stocktrend.platform.data.features import FeatureConfig, feature_set
from stocktrend.platform.data.labels import LabelKind, cross_sectional_targets, forward_returns, make_labels
from stocktrend.platform.data.splits import (SEGMENTS, Boundaries, chronological_boundaries, split_ticker)
from stocktrend.platform.data.sources import DataValidationError, Universe
from stocktrend.platform.data.universes import config_universe

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class DataConfig:
    """Everything that defines a data set. Part of every checkpoint (``asdict``)."""

    tickers: tuple[str, ...] = ()  # target series (empty = every ticker of the universe / directory)
    data_dir: str | None = None  # a directory of CSV/Parquet files; None = the embedded universe ``universe``
    universe: str = "msft"  # named embedded universe (stocktrend.platform.data.universes); ignored with data_dir
    market: tuple[str, ...] | None = None  # embedded market context (None = SP500 + NASDAQ); ignored with data_dir
    indicators: tuple[str, ...] = ()  # embedded indicators (e.g. VIX); ignored with data_dir
    horizon: int = 5  # label = direction of the forward return over this many days
    # binary (Bajista < 0 <= Alcista), ternary (neutral band), regression (the return); market-neutral (panels):
    # excess (direction vs the day's mean), excess_regression (the excess return), rank (the day's rank in [-1, 1])
    label_kind: str = "binary"
    neutral_band: float = 0.005  # |forward return| <= band is Neutral (ternary only)
    sequence_length: int = 30  # days per input window
    top_k: int = 50  # features kept by the inter-class mean-difference ranking (0 = keep all)
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test share of the timeline
    embargo: int = 5  # extra days dropped after each purged boundary
    oversample: bool = True  # RandomOverSampler on training samples (classification only)
    seed: int = 42  # oversampling seed
    ticker_id: bool = False  # append the ticker's identity (one-hot, one column per training ticker) to every day
    as_of: str | None = None  # the data as it was on this day (YYYY-MM-DD): nothing dated later is read; None = all
    features: str = "standard"  # feature set (stocktrend.platform.data.features.FEATURE_SETS): standard | short


@dataclass
class FittedTransforms:
    """Fitted on the training segment only; stored in checkpoints as plain lists (safe for weights_only loading)."""

    feature_names: list[str]  # every engineered feature, in cache order
    selected: list[str]  # the top-K kept, in model input order
    mean: np.ndarray  # per selected feature
    scale: np.ndarray  # per selected feature (std; 1 where the training std is 0)
    scores: np.ndarray  # selection score of each selected feature
    tickers: list[str] = field(default_factory=list)  # one-hot ticker columns after the features (ticker_id only)

    @property
    def input_names(self) -> list[str]:
        """The model's input columns, in order: the selected features, then ``ticker=<T>`` per training ticker."""
        return [*self.selected, *(f"ticker={t}" for t in self.tickers)]

    def ticker_codes(self, names: list[str] | np.ndarray) -> np.ndarray:
        """Positions of ticker names among the one-hot columns; an unknown ticker is a clear error."""
        pos = {t: i for i, t in enumerate(self.tickers)}
        unknown = sorted({str(n) for n in names} - set(pos))
        if unknown:
            raise DataValidationError(f"this model takes the ticker's identity and was trained on "
                                      f"{', '.join(self.tickers)}; unknown ticker(s): {', '.join(unknown)}")
        return np.array([pos[str(n)] for n in names], dtype=np.int64)

    def transform(self, features: pd.DataFrame | np.ndarray, tickers: str | np.ndarray | None = None) -> np.ndarray:
        """Raw feature rows -> scaled, selected float32 model inputs (the one path for training and serving).

        ``tickers`` (a ticker name for every row, or a per-row array of names) is needed when the model takes the
        ticker's identity (``ticker_id``)."""
        x = self._scaled(features)
        if not self.tickers:
            return x
        if tickers is None:
            raise DataValidationError(f"this model takes the ticker's identity (trained on "
                                      f"{', '.join(self.tickers)}): say which ticker the rows belong to")
        names = np.full(len(x), tickers, dtype=object) if isinstance(tickers, str) else np.asarray(tickers)
        out = np.zeros((len(x), x.shape[1] + len(self.tickers)), dtype=np.float32)
        out[:, :x.shape[1]] = x
        out[np.arange(len(x)), x.shape[1] + self.ticker_codes(names)] = 1.0
        return out

    def _scaled(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(features, pd.DataFrame):
            missing = [c for c in self.selected if c not in features.columns]
            if missing:
                raise DataValidationError(f"features missing for this model: {', '.join(missing[:5])}"
                                          f"{' ...' if len(missing) > 5 else ''}")
            values, cols = features[self.selected].to_numpy(), slice(None)
        else:
            values, cols = features, self._selected_idx()
        out = np.empty((len(values), len(self.selected)), dtype=np.float32)
        for a in range(0, len(values), CHUNK_ROWS):  # row chunks keep float64 temporaries small on big panels
            block = np.asarray(values[a:a + CHUNK_ROWS], dtype=np.float64)[:, cols]
            out[a:a + CHUNK_ROWS] = (block - self.mean) / self.scale
        return out

    def _selected_idx(self) -> np.ndarray:
        pos = {n: i for i, n in enumerate(self.feature_names)}
        return np.array([pos[n] for n in self.selected])

    def to_dict(self) -> dict[str, Any]:
        return {"feature_names": list(self.feature_names), "selected": list(self.selected),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "scores": self.scores.tolist(),
                "tickers": list(self.tickers)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FittedTransforms:
        return cls(list(d["feature_names"]), list(d["selected"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64), np.asarray(d["scores"], dtype=np.float64),
                   list(d.get("tickers", [])))


class Moments:
    """Mean and sum of squared deviations over row blocks, merged block by block without stacking them (Chan et al.
    pairwise merge, float64). The in-memory and the streaming path (``stream.plan_stream``) add the same per-ticker
    blocks in the same order, so they get the same scaler."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, b: np.ndarray) -> None:
        if len(b) == 0:
            return
        nb = len(b)
        mb = b.mean(axis=0, dtype=np.float64)
        m2b = ((b - mb) ** 2).sum(axis=0)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        delta = mb - self.mean
        tot = self.n + nb
        self.mean = self.mean + delta * nb / tot
        self.m2 = self.m2 + m2b + delta ** 2 * self.n * nb / tot
        self.n = tot

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(mean, sample std, count); an empty training segment is a clear error."""
        if self.mean is None:
            raise DataValidationError("the training segment is empty")
        return self.mean, np.sqrt(self.m2 / max(self.n - 1, 1)), self.n


def fit_transforms(values: np.ndarray, names: list[str], fit_rows: list[tuple[int, int]], sample_rows: np.ndarray,
                   sample_targets: np.ndarray, kind: LabelKind, top_k: int) -> FittedTransforms:
    """Scaler on the training rows ``fit_rows`` (row ranges), selection on the training samples only."""
    moments = Moments()
    for a, b in fit_rows:
        moments.add(values[a:b])
    mean, std, _ = moments.result()
    std = np.where(std > 1e-12, std, 1.0)
    n_groups = 1 if kind.is_value else kind.n_classes
    sums, counts = np.zeros((n_groups, len(names))), np.zeros(n_groups)
    sq, cross = np.zeros(len(names)), np.zeros(len(names))
    t = sample_targets.astype(np.float64)
    for a in range(0, len(sample_rows), CHUNK_ROWS):  # chunked: a big panel's samples never sit in float64 at once
        x = (np.asarray(values[sample_rows[a:a + CHUNK_ROWS]], dtype=np.float64) - mean) / std
        tb = t[a:a + CHUNK_ROWS]
        if kind.is_value:
            sums[0] += x.sum(0)
            sq += (x ** 2).sum(0)
            cross += x.T @ tb
            counts[0] += len(x)
        else:
            for c in range(n_groups):
                sel = tb == c
                sums[c] += x[sel].sum(0)
                counts[c] += sel.sum()
    if kind.is_value:
        n = counts[0]
        cov = cross / n - (sums[0] / n) * t.mean()
        denom = np.sqrt(np.maximum(sq / n - (sums[0] / n) ** 2, 0) * t.var())
        scores = np.abs(np.divide(cov, denom, out=np.zeros(len(names)), where=denom > 0))
    else:
        # The seeds' ranking: distance between class means of the standardised feature (max over class pairs).
        means = sums / np.maximum(counts, 1)[:, None]
        scores = np.max(np.abs(means[:, None, :] - means[None, :, :]), axis=(0, 1))
    k = len(names) if top_k <= 0 else min(top_k, len(names))
    order = np.argsort(-scores, kind="stable")[:k]
    return FittedTransforms(list(names), [names[i] for i in order], mean[order], std[order], scores[order])


@dataclass
class PreparedData:
    """Model-ready data: one scaled float32 matrix, per-row targets, and sample rows per segment."""

    config: DataConfig
    x: np.ndarray  # (rows, k) float32, scaled + selected, tickers stacked
    y: np.ndarray  # per row: class id (int64, -1 = unknown) or forward return (float32)
    forward_return: np.ndarray  # per row, float64 (NaN where unknown)
    dates: np.ndarray  # per row, datetime64[ns]
    tickers: list[str]
    offsets: np.ndarray  # row where each ticker starts (len(tickers) + 1)
    samples: dict[str, np.ndarray]  # segment -> rows of the last input day; "train" is oversampled
    train_unbalanced: np.ndarray
    transforms: FittedTransforms
    panel: FeaturePanel
    purged: dict[str, int] = field(default_factory=dict)
    embargoed: dict[str, int] = field(default_factory=dict)
    per_ticker: dict[str, dict[str, Any]] = field(default_factory=dict)  # dates, samples, purge/embargo per ticker
    value: np.ndarray | None = None  # per row, the number the label derives from when it is not the forward return

    @property
    def target_value(self) -> np.ndarray:
        """Per row, the number behind the label: the forward return, or for the market-neutral labels the excess
        return / the day's rank (what regressors and a multi-task model's return head learn)."""
        return self.forward_return if self.value is None else self.value

    @property
    def kind(self) -> LabelKind:
        return LabelKind(self.config.label_kind)

    @property
    def is_panel(self) -> bool:
        """Enough tickers for a daily cross-section (rank IC, long-short) to mean something."""
        return len(self.tickers) >= MIN_NAMES

    @property
    def seq_len(self) -> int:
        return self.config.sequence_length

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def ticker_of(self, rows: np.ndarray) -> np.ndarray:
        """The ticker name of each row."""
        return np.asarray(self.tickers, dtype=object)[np.searchsorted(self.offsets, np.asarray(rows), side="right") - 1]

    def with_transforms(self, transforms: FittedTransforms) -> PreparedData:
        """The same samples expressed through other fitted transforms (a checkpoint's), for fine-tuning and
        evaluation: a model always sees inputs scaled and selected exactly as during its own training."""
        rows_tickers = self.panel.meta["ticker"].astype(str).to_numpy() if transforms.tickers else None
        if transforms.feature_names == self.panel.feature_names:
            x = transforms.transform(self.panel.values, rows_tickers)
        else:
            x = transforms.transform(self.panel.frame(), rows_tickers)
        return replace(self, x=x, transforms=transforms)

    def window_view(self) -> np.ndarray:
        """All windows as a zero-copy view: ``view[r - L + 1]`` is the (L, k) window ending at row r."""
        return sliding_window_view(self.x, self.seq_len, axis=0).transpose(0, 2, 1)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """Materialised windows (n, L, k) for the given sample rows (for sklearn baselines and batch inference)."""
        return self.window_view()[np.asarray(rows) - self.seq_len + 1]

    def targets(self, rows: np.ndarray) -> np.ndarray:
        return self.y[np.asarray(rows)]

    def class_counts(self, segment: str) -> dict[str, int]:
        if self.kind.is_value:
            return {}
        y = self.y[self.samples[segment]]
        return {name: int((y == c).sum()) for c, name in enumerate(self.kind.class_names)}

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights from the *unbalanced* training samples (1s after oversampling would hide it)."""
        y = self.y[self.train_unbalanced]
        counts = np.bincount(y, minlength=self.kind.n_classes).astype(np.float64)
        return (counts.sum() / (len(counts) * np.maximum(counts, 1))).astype(np.float32)

    def date_range(self, segment: str) -> tuple[str, str]:
        d = self.dates[self.samples[segment]]
        return str(pd.Timestamp(d.min()).date()), str(pd.Timestamp(d.max()).date())

    def summary(self) -> dict[str, Any]:
        segs = {}
        for seg in SEGMENTS:
            segs[seg] = {"samples": int(len(self.samples[seg])), "dates": self.date_range(seg),
                         "class_counts": self.class_counts(seg), "purged": self.purged.get(seg, 0),
                         "embargoed": self.embargoed.get(seg, 0)}
        segs["train"]["before_oversampling"] = int(len(self.train_unbalanced))
        segs["train"]["class_counts_before_oversampling"] = (
            {} if self.kind.is_value else
            {n: int((self.y[self.train_unbalanced] == c).sum()) for c, n in enumerate(self.kind.class_names)})
        return {"tickers": self.tickers, "per_ticker": self.per_ticker, "rows": int(len(self.x)), "features_total": len(self.transforms.feature_names),
                "features_kept": len(self.transforms.selected), "selected": self.transforms.selected,
                "sequence_length": self.seq_len, "horizon": self.config.horizon, "label_kind": self.config.label_kind,
                "segments": segs, "cache_path": str(self.panel.path) if self.panel.path else None,
                "cache_hit": self.panel.cache_hit, "data_hash": self.panel.data_hash}


def prepare(panel: FeaturePanel, cfg: DataConfig, bounds: Boundaries | None = None) -> PreparedData:
    """Labels, split, transforms and oversampling on a cached feature panel (cheap: no feature computation)."""
    kind = LabelKind(cfg.label_kind)
    names, offsets = ticker_offsets(panel.meta)
    dates = panel.meta["date"].to_numpy(dtype="datetime64[ns]")
    close = panel.meta["close"].to_numpy(dtype=np.float64)
    values = panel.values
    bounds = bounds or chronological_boundaries(pd.DatetimeIndex(dates), cfg.fractions)

    need = cfg.sequence_length + cfg.horizon + 1
    short = [f"{t} ({offsets[i + 1] - offsets[i]} rows)" for i, t in enumerate(names)
             if offsets[i + 1] - offsets[i] < need]
    if short and drop_short(cfg) and len(short) < len(names):
        panel = panel.without([s.split(" ")[0] for s in short])
        log.warning("%d ticker(s) with too little history after the feature warm-up left out (need %d rows): %s",
                    len(short), need, ", ".join(short))
        return prepare(panel, cfg, bounds)
    if short:
        raise DataValidationError(
            f"too little history after the feature warm-up: {', '.join(short[:10])}{' ...' if len(short) > 10 else ''}"
            f"; each ticker needs at least sequence_length + horizon + 1 = {need} rows after the first "
            f"{feature_set(cfg.features).warmup} days{_hint(cfg)}")

    fwd = np.concatenate([forward_returns(close[a:b], cfg.horizon) for a, b in zip(offsets[:-1], offsets[1:])])
    value = None
    if kind.cross_sectional:
        if len(names) < 2:
            raise DataValidationError(f"--label {kind.value} ranks tickers against each other on the same day: it "
                                      f"needs a panel of 2 or more tickers, got {', '.join(names)}")
        value = cross_sectional_targets(fwd, dates, kind)
        y = make_labels(value, kind, cfg.neutral_band)
    else:
        y = make_labels(fwd, kind, cfg.neutral_band)
    seg_rows: dict[str, list[np.ndarray]] = {s: [] for s in SEGMENTS}
    purged = dict.fromkeys(SEGMENTS, 0)
    embargoed = dict.fromkeys(SEGMENTS, 0)
    fit_rows = []
    per_ticker: dict[str, dict[str, Any]] = {}
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        sp = split_ticker(pd.DatetimeIndex(dates[a:b]), bounds, cfg.sequence_length, cfg.horizon, cfg.embargo)
        per_ticker[names[i]] = {"rows": int(b - a), "dates": (str(pd.Timestamp(dates[a]).date()),
                                                               str(pd.Timestamp(dates[b - 1]).date())),
                                "samples": {seg: int(len(pos)) for seg, pos in sp.segments().items()},
                                "purged": int(sum(sp.purged.values())), "embargoed": int(sum(sp.embargoed.values()))}
        for seg, pos in sp.segments().items():
            seg_rows[seg].append(pos + a)
            purged[seg] += sp.purged.get(seg, 0)
            embargoed[seg] += sp.embargoed.get(seg, 0)
        if len(sp.train):
            fit_rows.append((a, a + int(sp.train.max()) + 1))  # the input days of this ticker's training samples
    samples = {s: np.concatenate(v) if v else np.zeros(0, np.int64) for s, v in seg_rows.items()}
    for seg, rows in samples.items():
        if len(rows) == 0:
            raise DataValidationError(
                f"the {seg} segment has no samples: too little history for sequence_length {cfg.sequence_length}, "
                f"horizon {cfg.horizon}, embargo {cfg.embargo} and split {cfg.fractions} (purge and embargo drop "
                f"sequence_length + horizon + embargo days before each boundary){_hint(cfg)}")

    train = samples["train"]
    transforms = fit_transforms(values, panel.feature_names, fit_rows, train, y[train], kind, cfg.top_k)
    row_tickers = None
    if cfg.ticker_id:
        transforms.tickers = list(names)
        row_tickers = np.repeat(np.array(names, dtype=object), np.diff(offsets))
    x = transforms.transform(values, row_tickers)

    train_unbalanced = train
    if cfg.oversample and not kind.is_value:
        from imblearn.over_sampling import RandomOverSampler
        ros = RandomOverSampler(random_state=cfg.seed)
        resampled, _ = ros.fit_resample(train.reshape(-1, 1), y[train])
        samples["train"] = np.sort(resampled.ravel())
    return PreparedData(cfg, x, y, fwd, dates, names, offsets, samples, train_unbalanced, transforms, panel,
                        purged, embargoed, per_ticker, value)


def drop_short(cfg: DataConfig) -> bool:
    """Whether the named universe leaves short tickers out (breadth universes) instead of refusing them."""
    if cfg.data_dir is not None:
        return False
    from stocktrend.platform.data.universes import UNIVERSES
    s = UNIVERSES.get(cfg.universe)
    return bool(s and s.drop_short)


def _hint(cfg: DataConfig) -> str:
    if cfg.data_dir is not None:
        return ""
    from stocktrend.platform.data.universes import UNIVERSES
    s = UNIVERSES.get(cfg.universe)
    return f" ({s.name}: {s.caveats})" if s and s.caveats else ""


def build_dataset(cfg: DataConfig | None = None, universe: Universe | None = None, cache_dir: str | Path | None = None,
                  use_cache: bool = True, feature_config: FeatureConfig | None = None, n_jobs: int = 1,
                  bounds: Boundaries | None = None) -> PreparedData:
    """The whole data path: sources -> validate -> features (cached) -> labels -> split -> transforms -> windows."""
    cfg = cfg or DataConfig()
    if universe is None:
        universe = config_universe(cfg)
    elif cfg.as_of is not None:
        universe = universe.cut(cfg.as_of)
    # A cut universe is one day's snapshot: caching its features would only fill the disk (the next day's data has
    # another hash), so it is computed in memory.
    panel = load_or_build_panel(universe, feature_config or feature_set(cfg.features), cache_dir,
                                use_cache=use_cache and cfg.as_of is None, n_jobs=n_jobs)
    return prepare(panel, cfg, bounds)


def config_dict(cfg: DataConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


class WindowDataset(torch.utils.data.Dataset):
    """Lazy windows: ``__getitem__`` slices a view of the shared matrix; only the collated batch is a copy.

    Items are (window, target), or (window, class, forward return) with ``with_return`` (multi-task models); with
    ``with_day`` (the evaluation segments of a panel) a last element ``(day, forward return)`` (float32, the day as
    days since the epoch) lets the module compute the daily cross-sectional rank IC (``val_rank_ic``)."""

    def __init__(self, data: PreparedData, rows: np.ndarray, with_return: bool = False, with_day: bool = False):
        self.x = torch.from_numpy(data.x)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.L = data.seq_len
        targets = data.y[self.rows]
        self.y = torch.from_numpy(targets.astype(np.float32 if data.kind.is_value else np.int64))
        self.r = torch.from_numpy(data.target_value[self.rows].astype(np.float32)) if with_return else None
        self.meta = None
        if with_day:
            # float32 (exact for day numbers below 2^24; MPS has no float64)
            day = data.dates[self.rows].astype("datetime64[D]").astype(np.int64).astype(np.float32)
            fwd = data.forward_return[self.rows].astype(np.float32)
            self.meta = torch.from_numpy(np.stack([day, fwd], axis=1))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        r = int(self.rows[i])
        item: tuple[torch.Tensor, ...] = (self.x[r - self.L + 1: r + 1], self.y[i])
        if self.r is not None:
            item = (*item, self.r[i])
        if self.meta is not None:
            item = (*item, self.meta[i])
        return item
