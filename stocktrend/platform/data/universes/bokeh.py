"""The ``tech`` universe's loader: bokeh-sampledata's ``stocks`` (Quandl WIKI prices), split/dividend adjusted."""

from __future__ import annotations

import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, validate_prices


def read_tech(tickers: list[str]) -> dict[str, pd.DataFrame]:
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
