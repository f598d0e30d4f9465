"""Price sources: the embedded sample universe and users' CSV/Parquet directories, with validation.

Every frame that leaves this module is a validated daily price frame: a sorted, unique ``DatetimeIndex`` named
``date`` and float64 columns ``close`` and, when the source has them, ``open, high, low`` (together) and ``volume``. Validation
errors name the file, the column and the row (1-based data row, header excluded) so a user can fix the export.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")


class DataValidationError(ValueError):
    """A data file or frame is unusable; the message names the source, column and row."""


@dataclass(frozen=True)
class ColumnAliases:
    """Accepted spellings of each canonical column, first match wins (Yahoo, Bloomberg and lowercase exports)."""

    date: tuple[str, ...] = ("Date", "date", "Dates", "DATE", "Datetime", "timestamp")
    open: tuple[str, ...] = ("Open", "open", "PX_OPEN")
    high: tuple[str, ...] = ("High", "high", "PX_HIGH")
    low: tuple[str, ...] = ("Low", "low", "PX_LOW")
    # "Close" before "Adj Close": open/high/low are unadjusted in most exports, so mixing them with an adjusted close
    # would break High >= Close checks and range features. Users who want adjusted prices pass their own aliases.
    close: tuple[str, ...] = ("Close", "close", "Adj Close", "adj_close", "PX_LAST")
    volume: tuple[str, ...] = ("Volume", "volume", "PX_VOLUME")

    @classmethod
    def with_overrides(cls, overrides: dict[str, str] | None) -> ColumnAliases:
        """Put a user's column names (canonical -> column in the file) in front of the defaults."""
        if not overrides:
            return cls()
        base = cls()
        kwargs = {}
        for canon, col in overrides.items():
            if not hasattr(base, canon):
                raise DataValidationError(f"unknown canonical column {canon!r} in column overrides; "
                                          f"expected one of date, {', '.join(OHLCV_COLUMNS)}")
            kwargs[canon] = (col, *getattr(base, canon))
        return cls(**{**{k: getattr(base, k) for k in ("date", *OHLCV_COLUMNS)}, **kwargs})


@dataclass
class Universe:
    """Everything one data set is built from.

    tickers: target series (one model input panel per ticker; windows never cross tickers).
    market: context series (index closes) joined to every ticker by date.
    indicators: extra numeric series (e.g. VIX) joined by date.
    """

    tickers: dict[str, pd.DataFrame]
    market: dict[str, pd.DataFrame] = field(default_factory=dict)
    indicators: dict[str, pd.DataFrame] = field(default_factory=dict)
    source: str = "custom"
    drop_short: bool = False  # a ticker too short for the features / windows is left out (logged), not refused

    def cut(self, as_of: str | pd.Timestamp | None) -> Universe:
        """The universe as it was on ``as_of``: every series ends on or before that day (None: unchanged)."""
        if as_of is None:
            return self
        day = as_of_day(as_of)
        return Universe({k: v.loc[:day] for k, v in self.tickers.items()},
                        {k: v.loc[:day] for k, v in self.market.items()},
                        {k: v.loc[:day] for k, v in self.indicators.items()}, source=self.source,
                        drop_short=self.drop_short)

    def date_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last day of any ticker."""
        firsts = [f.index[0] for f in self.tickers.values() if len(f)]
        lasts = [f.index[-1] for f in self.tickers.values() if len(f)]
        if not firsts:
            raise DataValidationError(f"{self.source}: no rows")
        return min(firsts), max(lasts)

    def content_hash(self) -> str:
        """Hash of every value and date: the feature cache key and the data hash stored in checkpoints."""
        h = hashlib.sha256()
        for group_name, group in (("t", self.tickers), ("m", self.market), ("i", self.indicators)):
            for name in sorted(group):
                hash_frame(h, group_name, name, group[name])
        return h.hexdigest()[:16]


def hash_frame(h, group_name: str, name: str, frame: pd.DataFrame) -> None:
    """One series' part of ``Universe.content_hash`` (fed in its order: tickers by name, then market, then indicators;
    ``stocktrend score`` feeds it a block of tickers at a time)."""
    h.update(f"{group_name}:{name}:{','.join(frame.columns)}".encode())
    h.update(frame.index.asi8.tobytes())
    h.update(np.ascontiguousarray(frame.to_numpy(dtype=np.float64)).tobytes())


def as_of_day(as_of: str | pd.Timestamp) -> pd.Timestamp:
    """A cut-off day from a string or timestamp, or a DataValidationError naming the bad value."""
    try:
        day = pd.Timestamp(as_of)
    except (ValueError, TypeError):
        raise DataValidationError(f"as_of {as_of!r} is not a date (use YYYY-MM-DD)") from None
    if pd.isna(day):
        raise DataValidationError(f"as_of {as_of!r} is not a date (use YYYY-MM-DD)")
    return (day.tz_localize(None) if day.tzinfo else day).normalize()


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------

def _row(i: int) -> str:
    return f"row {i + 1}"


def _pick(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        if c in columns:
            return c
    return None


def _parse_dates(raw: pd.DataFrame, date_col: str, source: str) -> pd.Series:
    dates = pd.to_datetime(raw[date_col], errors="coerce", format="mixed")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataValidationError(f"{source}: column {date_col!r} {_row(i)}: unparseable date {raw[date_col].iloc[i]!r}"
                                  f" ({bad.size} bad date(s) in total)")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    return dates.dt.normalize()


def _parse_numbers(raw: pd.DataFrame, col: str, source: str) -> np.ndarray:
    values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64)
    nonnum = np.flatnonzero(np.isnan(values) & raw[col].notna().to_numpy())
    if nonnum.size:
        i = int(nonnum[0])
        raise DataValidationError(f"{source}: column {col!r} {_row(i)}: non-numeric value {raw[col].iloc[i]!r}")
    missing = np.flatnonzero(~np.isfinite(values))
    if missing.size:
        i = int(missing[0])
        kind = "NaN/missing" if np.isnan(values[i]) else "infinite"
        raise DataValidationError(f"{source}: column {col!r} {_row(i)}: {kind} value "
                                  f"({missing.size} non-finite value(s) in this column)")
    return values


def validate_prices(
    raw: pd.DataFrame,
    source: str,
    aliases: ColumnAliases | None = None,
    required: tuple[str, ...] = OHLCV_COLUMNS,
    repair: bool = True,
    as_of: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Turn a raw export into a validated price frame, or raise DataValidationError naming source, column and row.

    With ``repair=True`` two safe repairs are made and logged with counts: rows out of date order are sorted and exact
    duplicate rows are dropped. Anything else (duplicate dates with different values, bad numbers, impossible prices)
    is an error, because guessing which value is right would silently change the data.

    ``as_of``: rows dated after that day are dropped as soon as the dates are parsed, before any value is read or
    checked (the data as it was on that day; the daily loop's and the replay's cut).
    """
    aliases = aliases or ColumnAliases()
    raw = raw.reset_index() if raw.index.name is not None and _pick([raw.index.name], aliases.date) else raw
    columns = [str(c) for c in raw.columns]
    raw.columns = columns

    date_col = _pick(columns, aliases.date)
    if date_col is None:
        raise DataValidationError(f"{source}: missing date column (looked for {', '.join(aliases.date)}); "
                                  f"found columns: {', '.join(columns) or 'none'}")
    picked: dict[str, str] = {}
    for canon in OHLCV_COLUMNS:
        col = _pick(columns, getattr(aliases, canon))
        if col is not None:
            picked[canon] = col
        elif canon in required:
            raise DataValidationError(
                f"{source}: missing required column {canon!r} (accepted names: {', '.join(getattr(aliases, canon))}); "
                f"found columns: {', '.join(columns)}")
    partial = [k for k in ("open", "high", "low") if k not in picked]
    if 0 < len(partial) < 3:  # a range needs all three; a close-only file has none of them
        raise DataValidationError(
            f"{source}: missing required column {partial[0]!r} (open, high and low come together, or not at all for "
            f"a close-only series; accepted names: {', '.join(getattr(aliases, partial[0]))}); found columns: "
            f"{', '.join(columns)}")
    if raw.empty:
        raise DataValidationError(f"{source}: no data rows")

    dates = _parse_dates(raw, date_col, source)
    if as_of is not None:
        keep = (dates <= as_of_day(as_of)).to_numpy()
        if not keep.any():
            raise DataValidationError(f"{source}: no rows on or before {as_of_day(as_of).date()} (its data start "
                                      f"{dates.min().date()})")
        raw, dates = raw[keep].reset_index(drop=True), dates[keep].reset_index(drop=True)
    out = pd.DataFrame(index=pd.DatetimeIndex(dates, name="date"))
    for canon, col in picked.items():
        values = _parse_numbers(raw, col, source)
        if canon in PRICE_COLUMNS:
            nonpos = np.flatnonzero(values <= 0)
            if nonpos.size:
                i = int(nonpos[0])
                raise DataValidationError(f"{source}: column {col!r} {_row(i)}: non-positive price {float(values[i])}")
        elif canon == "volume":
            neg = np.flatnonzero(values < 0)
            if neg.size:
                i = int(neg[0])
                raise DataValidationError(f"{source}: column {col!r} {_row(i)}: negative volume {float(values[i])}")
        out[canon] = values

    if "high" in out and "low" in out:
        bad_hl = np.flatnonzero(out["high"].to_numpy() < out["low"].to_numpy())
        if bad_hl.size:
            i = int(bad_hl[0])
            raise DataValidationError(f"{source}: {_row(i)}: High ({float(out['high'].iloc[i])}) < Low ({float(out['low'].iloc[i])})"
                                      f" on {out.index[i].date()} ({bad_hl.size} such row(s))")

    return _order_and_dedupe(out, source, repair)


def _order_and_dedupe(out: pd.DataFrame, source: str, repair: bool) -> pd.DataFrame:
    idx = out.index
    if not idx.is_monotonic_increasing:
        n_out_of_order = int((np.diff(idx.asi8) < 0).sum())
        if not repair:
            i = int(np.flatnonzero(np.diff(idx.asi8) < 0)[0]) + 1
            raise DataValidationError(f"{source}: dates are not sorted: {_row(i)} ({idx[i].date()}) comes after "
                                      f"{idx[i - 1].date()}")
        out = out.sort_index(kind="stable")
        log.warning("%s: sorted rows by date (%d row(s) were out of order)", source, n_out_of_order)
    dup_rows = out.reset_index().duplicated().to_numpy()
    if dup_rows.any():
        if not repair:
            raise DataValidationError(f"{source}: {int(dup_rows.sum())} duplicate row(s), first on "
                                      f"{out.index[np.flatnonzero(dup_rows)[0]].date()}")
        out = out[~dup_rows]
        log.warning("%s: dropped %d exact duplicate row(s)", source, int(dup_rows.sum()))
    dup_dates = out.index.duplicated(keep=False)
    if dup_dates.any():
        first = out.index[np.flatnonzero(dup_dates)[0]]
        raise DataValidationError(f"{source}: duplicate date {first.date()} with different values "
                                  f"({int(out.index.duplicated().sum())} duplicated date(s)); keep one row per date")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Files and directories
# ---------------------------------------------------------------------------------------------------------------------

def read_table(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file as raw strings/numbers; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be read as {suffix[1:].upper()}: {exc}") from None
    raise DataValidationError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def load_price_file(path: Path | str, aliases: ColumnAliases | None = None,
                    required: tuple[str, ...] = OHLCV_COLUMNS, repair: bool = True,
                    as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    path = Path(path)
    return validate_prices(read_table(path), str(path), aliases, required=required, repair=repair, as_of=as_of)


def load_indicator_file(path: Path | str, aliases: ColumnAliases | None = None,
                        as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """An indicator file: a date column plus any numeric columns (e.g. VIX, rates); all must be finite."""
    path = Path(path)
    aliases = aliases or ColumnAliases()
    raw = read_table(path)
    date_col = _pick([str(c) for c in raw.columns], aliases.date)
    if date_col is None:
        raise DataValidationError(f"{path}: missing date column (looked for {', '.join(aliases.date)})")
    value_cols = [str(c) for c in raw.columns if c != date_col]
    if not value_cols:
        raise DataValidationError(f"{path}: no indicator columns besides {date_col!r}")
    raw.columns = [str(c) for c in raw.columns]
    # Indicators may be zero or negative (rates, spreads): only dates and finiteness are checked.
    dates = _parse_dates(raw, date_col, str(path))
    if as_of is not None:
        keep = (dates <= as_of_day(as_of)).to_numpy()
        raw, dates = raw[keep].reset_index(drop=True), dates[keep].reset_index(drop=True)
    out = pd.DataFrame({c: _parse_numbers(raw, c, str(path)) for c in value_cols},
                       index=pd.DatetimeIndex(dates, name="date"))
    return _order_and_dedupe(out, str(path), repair=True)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def directory_tickers(directory: Path | str) -> list[str]:
    """The tickers of a data directory (its files' stems; no file is read), or one line saying why there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataValidationError(f"{directory}: data directory does not exist")
    files = sorted({p.stem for p in _files(directory)})  # MSFT.csv beside MSFT.parquet: one ticker (as load_directory)
    if not files:
        raise DataValidationError(f"{directory}: no .csv or .parquet ticker files found")
    return files


def load_directory(directory: Path | str, tickers: list[str] | None = None, aliases: ColumnAliases | None = None,
                   repair: bool = True, as_of: str | pd.Timestamp | None = None) -> Universe:
    """A user's data directory.

    Layout: one OHLCV file per ticker at the top level (``MSFT.csv``, ``AAPL.parquet``; the file stem is the
    ticker); optional ``market/`` with index series (only a close column is required; e.g. ``SPX.csv``); optional
    ``indicators/`` with date + numeric columns (e.g. ``VIX.csv``).
    """
    directory = Path(directory)
    directory_tickers(directory)  # the directory and at least one ticker file, or one line
    files = {p.stem: p for p in _files(directory)}
    if tickers:
        unknown = [t for t in tickers if t not in files]
        if unknown:
            raise DataValidationError(f"unknown ticker(s) {', '.join(unknown)} in {directory}; "
                                      f"available: {', '.join(sorted(files))}")
        files = {t: files[t] for t in tickers}
    # Tickers need a close; open/high/low (together) and volume are optional: features that need them are left out.
    universe = Universe(tickers={t: load_price_file(p, aliases, required=("close",), repair=repair, as_of=as_of)
                                 for t, p in files.items()}, source=str(directory))
    if (directory / "market").is_dir():
        universe.market = {p.stem: load_price_file(p, aliases, required=("close",), repair=repair, as_of=as_of)
                           for p in _files(directory / "market")}
    if (directory / "indicators").is_dir():
        universe.indicators = {p.stem: load_indicator_file(p, aliases, as_of=as_of)
                               for p in _files(directory / "indicators")}
    return universe


# ---------------------------------------------------------------------------------------------------------------------
# Embedded sample universe (shipped inside PyPI packages; loaded through them, never copied into this repository)
# ---------------------------------------------------------------------------------------------------------------------

def _load_msft() -> pd.DataFrame:
    from pmdarima.datasets import load_msft
    return validate_prices(load_msft().drop(columns=["OpenInt"]), "embedded MSFT (pmdarima)")


def _load_arch(name: str) -> pd.DataFrame:
    import importlib
    frame = importlib.import_module(f"arch.data.{name}").load()
    return validate_prices(frame.drop(columns=["Adj Close"]), f"embedded {name.upper()} (arch)")


def _load_goog() -> pd.DataFrame:
    from backtesting.test import GOOG
    return validate_prices(GOOG.rename_axis("Date"), "embedded GOOG (backtesting.py)")


def _load_vix() -> pd.DataFrame:
    from arch.data import vix
    return vix.load().rename(columns={"vix": "VIX"}).rename_axis("date").astype(np.float64)


EMBEDDED_TICKERS = {"MSFT": _load_msft, "GOOG": _load_goog}
EMBEDDED_MARKET = {"SP500": lambda: _load_arch("sp500"), "NASDAQ": lambda: _load_arch("nasdaq")}
EMBEDDED_INDICATORS = {"VIX": _load_vix}


def load_embedded(tickers: list[str] | None = None, market: list[str] | None = None,
                  indicators: list[str] | None = None) -> Universe:
    """The offline sample universe. Default: MSFT as target, S&P 500 and NASDAQ as market context.

    VIX (2014-2019) is opt-in: joining it would cut the common history to 2014-2017 (about 950 days).
    """
    tickers = tickers or ["MSFT"]
    market = ["SP500", "NASDAQ"] if market is None else market
    indicators = indicators or []
    for names, table, what in ((tickers, EMBEDDED_TICKERS, "ticker"), (market, EMBEDDED_MARKET, "market series"),
                               (indicators, EMBEDDED_INDICATORS, "indicator")):
        unknown = [n for n in names if n not in table]
        if unknown:
            raise DataValidationError(f"unknown embedded {what} {', '.join(unknown)}; "
                                      f"available: {', '.join(table)} (use --data DIR for your own files)")
    return Universe(tickers={t: EMBEDDED_TICKERS[t]() for t in tickers},
                    market={m: EMBEDDED_MARKET[m]() for m in market},
                    indicators={i: EMBEDDED_INDICATORS[i]() for i in indicators},
                    source="embedded")
