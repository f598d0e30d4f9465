"""Engineered-feature cache: one Parquet file per (data, feature config), reused by every sequence length and label.

The cached panel holds ``ticker, date, close`` and the float32 features of every ticker, warm-up already trimmed.
Labels, splits, scaling, selection and windows are derived from it cheaply, so changing ``sequence_length``,
``horizon``, the label kind or ``top_k`` never recomputes features. Files are written to a temporary name and renamed,
so an interrupted build never leaves a half-written cache entry.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.platform.features import FeatureConfig, build_features
from stocktrend.platform.sources import DataValidationError, Universe

log = logging.getLogger(__name__)

# How many times features were actually computed in this process (tests assert that a cache hit adds nothing).
COMPUTE_COUNT = {"tickers": 0}


def default_home() -> Path:
    """The project's run directory: $STOCKTREND_HOME, else ./stocktrend-runs."""
    return Path(os.environ.get("STOCKTREND_HOME", "stocktrend-runs")).resolve()


@dataclass
class FeaturePanel:
    frame: pd.DataFrame  # columns: ticker, date, close, <features>; rows grouped by ticker, sorted by date
    feature_names: list[str]
    data_hash: str  # hash of the raw input values
    cache_key: str  # data hash + feature config
    path: Path | None
    cache_hit: bool
    seconds: float

    @property
    def tickers(self) -> list[str]:
        return list(dict.fromkeys(self.frame["ticker"].tolist()))


def _one(args: tuple) -> pd.DataFrame:
    name, frame, market, indicators, cfg = args
    feats = build_features(frame, market, indicators, cfg, name=name)
    feats.insert(0, "date", feats.index)
    feats.insert(0, "ticker", name)
    return feats.reset_index(drop=True)


def compute_panel(universe: Universe, cfg: FeatureConfig, n_jobs: int = 1) -> pd.DataFrame:
    """Features of every ticker (in parallel processes when ``n_jobs > 1``), concatenated in ticker order."""
    jobs = [(name, frame, universe.market, universe.indicators, cfg) for name, frame in universe.tickers.items()]
    if n_jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            parts = list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (4 * n_jobs))))
    else:
        parts = [_one(j) for j in jobs]
    COMPUTE_COUNT["tickers"] += len(jobs)
    empty = [p["ticker"].iloc[0] if len(p) else j[0] for p, j in zip(parts, jobs) if len(p) == 0]
    if empty:
        raise DataValidationError(f"too little history: no rows left after the {cfg.warmup}-day feature warm-up for "
                                  f"{', '.join(map(str, empty))}")
    panel = pd.concat(parts, ignore_index=True)
    panel["ticker"] = panel["ticker"].astype("string")
    return panel


def load_or_build_panel(universe: Universe, cfg: FeatureConfig | None = None, cache_dir: Path | str | None = None,
                        use_cache: bool = True, n_jobs: int = 1) -> FeaturePanel:
    cfg = cfg or FeatureConfig()
    t0 = time.perf_counter()
    data_hash = universe.content_hash()
    key = f"{data_hash}-{cfg.key()}"
    path = None
    if use_cache:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_home() / "cache"
        path = cache_dir / f"features-{key}.parquet"
        if path.is_file():
            try:
                frame = pd.read_parquet(path)
                names = [c for c in frame.columns if c not in ("ticker", "date", "close")]
                return FeaturePanel(frame, names, data_hash, key, path, True, time.perf_counter() - t0)
            except (OSError, ValueError) as exc:  # a corrupt entry is rebuilt, not trusted
                log.warning("feature cache %s unreadable (%s); rebuilding", path, exc)
    frame = compute_panel(universe, cfg, n_jobs=n_jobs)
    names = [c for c in frame.columns if c not in ("ticker", "date", "close")]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return FeaturePanel(frame, names, data_hash, key, path, False, time.perf_counter() - t0)


def ticker_offsets(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Ticker names in row order and the row offset where each starts (length n_tickers + 1)."""
    codes = frame["ticker"].to_numpy()
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change, [len(codes)]]).astype(np.int64)
    names = [str(codes[s]) for s in starts[:-1]]
    if len(set(names)) != len(names):
        raise ValueError("feature panel rows are not grouped by ticker")
    return names, starts
