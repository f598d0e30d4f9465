"""Where ``stocktrend score`` reads its bars: a block of tickers at a time, so no process holds every ticker's bars.

The source (a data directory or an embedded universe, its tickers and its market context) is named once by the
driver, which then surveys it ``SURVEY_TICKERS`` tickers at a time: each ticker's dates (what the range checks and the
engine's choice need) and the data hash of what is scored (``Universe.content_hash`` of the bars up to the last scored
day, fed a block at a time in the same order); the bars themselves are dropped after each block. The scoring engines
then read their tickers again, cut at the last scored day: the local engine a block at a time in this process, the Ray
Data engine in a task per block (every node must reach the data directory, as every node reaches the registry; an
embedded universe ships with the package). A source of one block (``SURVEY_TICKERS`` tickers or fewer) is read once:
the survey keeps it for the local engine and the hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, Universe, hash_frame

SURVEY_TICKERS = 1024  # tickers a block reads: ~250 MB of bars at most on a 20-year panel; most sources are one block


@dataclass(frozen=True)
class BarSource:
    """A scoring job's bars: where they are and which tickers (sorted; empty = every ticker the source has)."""

    data_dir: str | None
    universe: str | None
    tickers: tuple[str, ...]
    market: tuple[str, ...] | None = None
    indicators: tuple[str, ...] | None = None

    def load(self, tickers: list[str] | tuple[str, ...], as_of: Any) -> Universe:
        """These tickers' bars (``[]``: every ticker of the source) and the market context, as of the day."""
        from stocktrend.platform.data.universes import load_universe
        return load_universe(self.data_dir, list(tickers) or None, list(self.market) if self.market is not None
                             else None, list(self.indicators) if self.indicators is not None else None,
                             universe=self.universe, as_of=as_of)

    def blocks(self, size: int) -> list[tuple[str, ...]]:
        return _slices(self.tickers, size) or [()]  # () = every ticker of the source


def _slices(names, size: int) -> list[tuple[str, ...]]:
    return [tuple(names[i:i + size]) for i in range(0, len(names), size)]


def scoring_source(model: Any, universe: str | None, data_dir: str | None) -> BarSource:
    """The model's own universe (or another source with the same tickers): its tickers listed, no bar read."""
    return source_of(model.data_config, universe, data_dir)


def source_of(cfg: Any, universe: str | None = None, data_dir: str | None = None) -> BarSource:
    """A data config's source (or the other one named), its tickers listed: the config's own, else every ticker the
    directory or the embedded universe has. No bar is read."""
    from stocktrend.platform.data.sources import directory_tickers
    from stocktrend.platform.data.universes import spec
    if data_dir is None and universe is None:
        data_dir, universe = cfg.data_dir, cfg.universe
    own = (data_dir, universe) == (cfg.data_dir, cfg.universe)
    from stocktrend.platform.data.remote import is_remote, local_copy
    if data_dir is not None and not is_remote(str(data_dir)):
        data_dir = str(Path(data_dir).resolve())  # Ray tasks read it too, from their own working directory
    if own and cfg.tickers:
        tickers = list(cfg.tickers)
    elif data_dir is not None:
        tickers = directory_tickers(local_copy(str(data_dir)) if is_remote(str(data_dir)) else data_dir)
    else:
        tickers = list(spec(universe or "msft").known_tickers())  # a loader may leave some out: the survey says
    return BarSource(data_dir, universe, tuple(sorted(tickers)),
                     tuple(cfg.market) if cfg.market is not None and data_dir is None else None,
                     tuple(cfg.indicators) if data_dir is None else None)


def check_known(model: Any, source: BarSource, tickers: list[str]) -> None:
    trained = set(model.ckpt["tickers"])
    unknown = sorted(set(tickers) - trained)
    if unknown:
        where = f"data directory {source.data_dir}" if source.data_dir else f"universe {source.universe}"
        raise DataValidationError(f"the model was not trained for {where}: it does not know {', '.join(unknown[:8])}"
                                  f"{' ...' if len(unknown) > 8 else ''} (it was trained on "
                                  f"{', '.join(sorted(trained)[:8])}{' ...' if len(trained) > 8 else ''})")


@dataclass
class Survey:
    """What the driver keeps of the source: each ticker's dates and the (small) market context; no bar of a ticker.
    Duck-types the parts of ``Universe`` the range checks read (``date_range``, ``market``, ``indicators``)."""

    source: BarSource
    dates: dict[str, np.ndarray] = field(default_factory=dict)  # ticker -> its days (datetime64[ns]), sorted
    market: dict[str, pd.DataFrame] = field(default_factory=dict)
    indicators: dict[str, pd.DataFrame] = field(default_factory=dict)
    read_to: pd.Timestamp | None = None  # the cut the survey read at (None: everything); later reads use it too
    hashed_to: pd.Timestamp | None = None  # the cut the ticker part of the hash was fed with (None: uncut)
    _hash: Any = None  # sha256 over the tickers' bars, in name order
    kept: Universe | None = None  # a source of one block is kept (its bars are no more than a block): not read twice

    @property
    def tickers(self) -> list[str]:
        return sorted(self.dates)

    def date_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        firsts = [d[0] for d in self.dates.values() if len(d)]
        if not firsts:
            raise DataValidationError(f"{self.source.data_dir or self.source.universe}: no rows")
        return pd.Timestamp(min(firsts)), pd.Timestamp(max(d[-1] for d in self.dates.values() if len(d)))

    def ticker_days(self, lo: pd.Timestamp, hi: pd.Timestamp) -> int:
        a, b = np.datetime64(lo, "ns"), np.datetime64(hi, "ns")
        return int(sum(np.searchsorted(d, b, "right") - np.searchsorted(d, a, "left") for d in self.dates.values()))

    def data_hash(self, hi: pd.Timestamp) -> str:
        """``Universe.content_hash`` of the bars up to ``hi`` (every ticker, then the context), without holding them:
        the survey's hash when nothing it fed lies after ``hi``, else a second pass a block at a time."""
        late = any(len(d) and d[-1] > np.datetime64(hi, "ns") for d in self.dates.values())
        h = self._hash.copy()
        if late and (self.hashed_to is None or self.hashed_to > hi):
            h = hashlib.sha256()
            for u in self.read(hi):
                for t in sorted(u.tickers):
                    hash_frame(h, "t", t, u.tickers[t])
        for group_name, group in (("m", self.market), ("i", self.indicators)):
            for name in sorted(group):
                hash_frame(h, group_name, name, group[name].loc[:hi])
        return h.hexdigest()[:16]

    def read(self, hi: pd.Timestamp, size: int | None = None) -> Iterator[Universe]:
        """The surveyed tickers' bars up to ``hi``, a block of ``size`` tickers at a time (the kept block if any)."""
        if self.kept is not None:
            yield self.kept.cut(hi)
            return
        for tickers in self.blocks(size or SURVEY_TICKERS):
            yield self.source.load(tickers, self.read_to).cut(hi)

    def blocks(self, size: int) -> list[tuple[str, ...]]:
        """The surveyed tickers (the ones the source really has) in blocks of ``size``."""
        return _slices(self.tickers, size)


def survey(model: Any, source: BarSource, as_of: Any, hash_cut: pd.Timestamp | None) -> Survey:
    """Read the source a block at a time (each cut at ``as_of``): check every ticker is the model's, keep its dates,
    feed the hash with its bars up to ``hash_cut``; the context is kept from the first block (every block reads the
    same context)."""
    s = Survey(source, read_to=as_of, hashed_to=hash_cut, _hash=hashlib.sha256())
    blocks = source.blocks(SURVEY_TICKERS)
    for i, block in enumerate(blocks):
        u = source.load(block, as_of)
        check_known(model, source, list(u.tickers))
        if i == 0:
            s.market, s.indicators = u.market, u.indicators
            s.kept = u if len(blocks) == 1 else None
        for t in sorted(u.tickers):
            frame = u.tickers[t]
            s.dates[t] = frame.index.to_numpy(dtype="datetime64[ns]")
            hash_frame(s._hash, "t", t, frame if hash_cut is None else frame.loc[:hash_cut])
    return s


def ticker_frames(u: Universe) -> Iterator[pd.DataFrame]:
    """Each ticker's bars with a date column, in name order; a ticker with no bar (none up to the cut) is skipped."""
    for t in sorted(u.tickers):
        f = u.tickers[t]
        if len(f):
            yield f.reset_index().rename(columns={f.index.name or "index": "date"}).assign(ticker=t)
