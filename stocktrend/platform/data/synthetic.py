"""Synthetic price panels for tests and benchmarks: a pure random walk (no signal) and a planted-signal variant.

Planted signal: the ticker's daily log return on day t is the market's return on day t - ``lag`` (lag = the label
horizon) plus noise, so the ticker's forward ``lag``-day return equals the market's trailing ``lag``-day return, a
feature known at day t (``<market>_ret_<lag>``). A leak-free pipeline must find it; a random walk has nothing to find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stocktrend.platform.data.sources import Universe


def ohlcv_from_log_returns(log_ret: np.ndarray, dates: pd.DatetimeIndex, rng: np.random.Generator,
                           start_price: float = 50.0) -> pd.DataFrame:
    close = start_price * np.exp(np.cumsum(log_ret))
    prev = np.concatenate([[start_price], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.002, len(close)))
    spread = np.abs(rng.normal(0, 0.006, len(close)))
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.006, len(close))))
    volume = np.round(rng.lognormal(14, 0.4, len(close)))
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume},
                        index=pd.DatetimeIndex(dates, name="date"))


def business_days(n: int, start: str = "2000-01-03") -> pd.DatetimeIndex:
    return pd.bdate_range(start, periods=n, name="date")


def random_walk_universe(n_days: int = 3000, n_tickers: int = 1, seed: int = 0, vol: float = 0.015,
                         with_market: bool = True) -> Universe:
    """Independent Gaussian random walks: no feature can predict the forward return."""
    rng = np.random.default_rng(seed)
    dates = business_days(n_days)
    tickers = {f"RW{i}": ohlcv_from_log_returns(rng.normal(0, vol, n_days), dates, rng) for i in range(n_tickers)}
    market = {"MKT": ohlcv_from_log_returns(rng.normal(0, vol * 0.7, n_days), dates, rng, 1000.0)} \
        if with_market else {}
    return Universe(tickers, market, source="synthetic-random-walk")


def planted_signal_universe(n_days: int = 3000, lag: int = 5, noise: float = 0.002, seed: int = 0,
                            n_tickers: int = 1) -> Universe:
    """Ticker returns copy the market's returns ``lag`` days later (plus small noise)."""
    rng = np.random.default_rng(seed)
    dates = business_days(n_days)
    m_ret = rng.normal(0, 0.012, n_days)
    tickers = {}
    for i in range(n_tickers):
        t_ret = np.concatenate([rng.normal(0, 0.012, lag), m_ret[:-lag]]) + rng.normal(0, noise, n_days)
        tickers[f"SIG{i}"] = ohlcv_from_log_returns(t_ret, dates, rng)
    return Universe(tickers, {"MKT": ohlcv_from_log_returns(m_ret, dates, rng, 1000.0)}, source="synthetic-planted")


def planted_cross_section_universe(n_days: int = 2000, n_tickers: int = 8, horizon: int = 5, phi: float = 0.4,
                                   seed: int = 0) -> Universe:
    """Independent tickers whose daily return repeats ``phi`` x their own return ``horizon`` days earlier (plus noise),
    so each ticker's forward ``horizon``-day return is ``phi`` x its trailing ``horizon``-day return (the ``ret_<h>``
    feature) plus noise: a signal that ranks tickers against each other on every day (cross-sectional IC ~ phi)."""
    rng = np.random.default_rng(seed)
    dates = business_days(n_days)
    tickers = {}
    for i in range(n_tickers):
        eps = rng.normal(0, 0.012, n_days)
        r = np.zeros(n_days)
        for t in range(n_days):
            r[t] = eps[t] + (phi * r[t - horizon] if t >= horizon else 0.0)
        tickers[f"CS{i}"] = ohlcv_from_log_returns(r, dates, rng)
    market = {"MKT": ohlcv_from_log_returns(rng.normal(0, 0.008, n_days), dates, rng, 1000.0)}
    return Universe(tickers, market, source="synthetic-cross-section")


def switching_signal_universe(n_days: int = 1500, switch_day: int = 750, lag: int = 5, noise: float = 0.002,
                              seed: int = 0, n_tickers: int = 3, names: str = "SIG") -> Universe:
    """Random walks until ``switch_day``, then the planted signal of ``planted_signal_universe`` (each ticker's daily
    return copies the market's return ``lag`` days earlier, plus noise): a signal that switches on. Tickers are named
    ``<names>0..``, the market ``MKT`` (the same names as the planted and random-walk panels, so a model trained on
    one can be scored on another)."""
    rng = np.random.default_rng(seed)
    dates = business_days(n_days)
    m_ret = rng.normal(0, 0.012, n_days)
    tickers = {}
    for i in range(n_tickers):
        planted = np.concatenate([rng.normal(0, 0.012, lag), m_ret[:-lag]]) + rng.normal(0, noise, n_days)
        walk = rng.normal(0, 0.012, n_days)
        t_ret = np.where(np.arange(n_days) < switch_day, walk, planted)
        tickers[f"{names}{i}"] = ohlcv_from_log_returns(t_ret, dates, rng)
    return Universe(tickers, {"MKT": ohlcv_from_log_returns(m_ret, dates, rng, 1000.0)}, source="synthetic-switch")


def write_directory(universe: Universe, directory) -> str:
    """A universe as a user data directory (one CSV per ticker, ``market/``), for the CLI and tests."""
    from pathlib import Path
    d = Path(directory)
    (d / "market").mkdir(parents=True, exist_ok=True)
    for name, frame in universe.tickers.items():
        frame.rename_axis("Date").reset_index().to_csv(d / f"{name}.csv", index=False)
    for name, frame in universe.market.items():
        frame.rename_axis("Date").reset_index().to_csv(d / "market" / f"{name}.csv", index=False)
    return str(d)


def switching_cross_section_universe(n_days: int = 1500, switch_day: int = 750, n_tickers: int = 8,
                                     horizon: int = 5, phi: float = 0.5, seed: int = 0) -> Universe:
    """Independent random walks until ``switch_day``, then ``planted_cross_section_universe``'s signal: each
    ticker's daily return repeats ``phi`` x its own return ``horizon`` days earlier, so its forward return ranks the
    tickers against each other (a cross-sectional signal that switches on)."""
    rng = np.random.default_rng(seed)
    dates = business_days(n_days)
    tickers = {}
    for i in range(n_tickers):
        eps = rng.normal(0, 0.012, n_days)
        r = np.zeros(n_days)
        for t in range(n_days):
            r[t] = eps[t] + (phi * r[t - horizon] if t >= horizon and t >= switch_day else 0.0)
        tickers[f"CS{i}"] = ohlcv_from_log_returns(r, dates, rng)
    market = {"MKT": ohlcv_from_log_returns(rng.normal(0, 0.008, n_days), dates, rng, 1000.0)}
    return Universe(tickers, market, source="synthetic-cross-section-switch")
