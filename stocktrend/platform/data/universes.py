"""Named embedded universes: real daily prices shipped inside PyPI packages, offline after install.

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

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from stocktrend.platform.data.sources import (ColumnAliases, DataValidationError, Universe, load_directory,
                                              load_embedded, validate_prices)

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


def _msft(tickers: list[str]) -> dict[str, pd.DataFrame]:
    return load_embedded(tickers, market=[]).tickers


def _bokeh(tickers: list[str]) -> dict[str, pd.DataFrame]:
    try:
        from bokeh_sampledata import stocks
    except ImportError:
        raise DataValidationError("universe 'tech' needs the bokeh-sampledata package (pip install "
                                  "bokeh-sampledata; a dependency of stocktrend)") from None
    raw = stocks.data
    out = {}
    for t in tickers:
        frame = raw[raw["ticker"] == t].sort_values("date")
        factor = (frame["adj_close"] / frame["close"]).to_numpy()
        adj = pd.DataFrame({"Date": pd.to_datetime(frame["date"]).dt.normalize().to_numpy(),
                            **{c: frame[c].to_numpy() * factor for c in ("open", "high", "low", "close")},
                            "volume": frame["volume"].to_numpy() / factor})
        out[t] = validate_prices(adj, f"embedded {t} (bokeh-sampledata, split/dividend adjusted)")
    return out


def sp20_file() -> Path:
    """skfolio's data file, found without importing skfolio."""
    spec = importlib.util.find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise DataValidationError("universe 'sp20' needs the skfolio package: pip install 'stocktrend[sp20]' "
                                  "(about 600 MB with its dependencies)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "sp500_dataset.csv.gz"
    if not path.is_file():
        raise DataValidationError(f"skfolio is installed but {path} is missing")
    return path


def read_sp20(path: Path, tickers: list[str]) -> dict[str, pd.DataFrame]:
    """A wide CSV (Date + one adjusted-close column per ticker) -> close-only price frames."""
    wide = pd.read_csv(path)
    date_col = wide.columns[0]
    out = {}
    for t in tickers:
        if t not in wide.columns:
            raise DataValidationError(f"{path}: no column {t!r}")
        frame = wide[[date_col, t]].dropna()
        out[t] = validate_prices(frame.rename(columns={date_col: "Date", t: "close"}), f"embedded {t} (skfolio)",
                                 required=("close",))
    return out


SP20_TICKERS = ("AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP", "PFE",
                "PG", "RRC", "UNH", "WMT", "XOM")

UNIVERSES: dict[str, UniverseSpec] = {
    "msft": UniverseSpec("msft", ("MSFT",), "OHLCV", "1986-03-13 .. 2017-11-10", "pmdarima.datasets.load_msft",
                         "pmdarima's bundled sample data (MIT package)", _msft),
    "tech": UniverseSpec("tech", ("AAPL", "IBM", "MSFT", "GOOG"), "OHLCV (split/dividend adjusted)",
                         "2000-03-01 .. 2013-03-01 (GOOG from 2004-08-19)", "bokeh_sampledata.stocks (Quandl WIKI)",
                         "public domain (bokeh-sampledata licenses/datasets.json)", _bokeh),
    "sp20": UniverseSpec("sp20", SP20_TICKERS, "adjusted close only", "1990-01-02 .. 2022-12-28",
                         "skfolio datasets/data/sp500_dataset.csv.gz",
                         "BSD-3 package; data for testing and examples only, not investment or commercial use",
                         lambda tickers: read_sp20(sp20_file(), tickers), extra="sp20"),
}


def spec(name: str) -> UniverseSpec:
    if name not in UNIVERSES:
        raise DataValidationError(f"unknown universe {name!r}; available: {', '.join(UNIVERSES)} "
                                  f"(stocktrend data universes lists them; --data DIR for your own files)")
    return UNIVERSES[name]


def load_named(name: str, tickers: list[str] | None = None, market: list[str] | None = None,
               indicators: list[str] | None = None) -> Universe:
    """A named universe (optionally a subset of its tickers) with its market context."""
    s = spec(name)
    if name == "msft":  # the historical default: MSFT, or GOOG/MSFT from the same embedded set
        return load_embedded(tickers or list(s.tickers), market, indicators)
    tickers = tickers or list(s.tickers)
    unknown = [t for t in tickers if t not in s.tickers]
    if unknown:
        raise DataValidationError(f"unknown ticker(s) {', '.join(unknown)} in universe {name!r}; available: "
                                  f"{', '.join(s.tickers)}")
    base = load_embedded(["MSFT"], list(s.market) if market is None else market, indicators)
    return Universe(tickers=s.loader(tickers), market=base.market, indicators=base.indicators, source=f"universe:{name}")


def describe() -> list[dict[str, str]]:
    """What ``stocktrend data universes`` prints (no data is loaded)."""
    return [{"name": s.name, "tickers": ", ".join(s.tickers), "columns": s.columns, "dates": s.dates,
             "market": ", ".join(s.market), "source": s.source, "licence": s.licence,
             "install": f"pip install 'stocktrend[{s.extra}]'" if s.extra else "included"} for s in UNIVERSES.values()]


def load_universe(data_dir: str | Path | None = None, tickers: list[str] | None = None,
                  market: list[str] | None = None, indicators: list[str] | None = None,
                  aliases: ColumnAliases | None = None, universe: str | None = None) -> Universe:
    """One entry point for the CLI and the library: a directory if given, else a named embedded universe
    (default ``msft``)."""
    if data_dir is not None:
        return load_directory(data_dir, tickers=tickers, aliases=aliases)
    if universe and universe != "msft":
        return load_named(universe, tickers, market, indicators)
    return load_embedded(tickers, market, indicators)
