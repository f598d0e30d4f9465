"""The ``sp20`` universe's loader: skfolio's ``sp500_dataset.csv.gz`` read from the installed package's files (skfolio
itself is not imported: its import pulls cvxpy and plotly)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, validate_prices

SP20_TICKERS = ("AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP", "PFE",
                "PG", "RRC", "UNH", "WMT", "XOM")


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
