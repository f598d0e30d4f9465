"""The data of one loop step: the universe as of a day (nothing later read) and its feature panel."""

from __future__ import annotations

import pandas as pd

from stocktrend.platform.data.sources import DataValidationError, as_of_day


def load_panel(cfg, as_of: str | None):
    """The universe as of the day (checked against the data's range) and its features, once for the whole retrain."""
    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.data.features import feature_set
    from stocktrend.platform.data.universes import load_universe
    full = load_universe(cfg.data_dir, list(cfg.tickers) or None, list(cfg.market) if cfg.market is not None else
                         None, list(cfg.indicators), universe=cfg.universe, as_of=as_of)
    if as_of is not None:
        first, last = full.date_range()
        day = as_of_day(as_of)
        if day > last + pd.Timedelta(days=7) or day < first:
            # The cut loads nothing after the day; a day past the end shows as a last bar far before it.
            raise DataValidationError(f"--as-of {day.date()} is outside the data ({first.date()} .. {last.date()})")
    panel = load_or_build_panel(full, feature_set(cfg.features), use_cache=as_of is None)
    return full, panel
