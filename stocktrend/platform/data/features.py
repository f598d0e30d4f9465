"""Causal feature library: every value at day t is computed from data at or before day t.

Only trailing operations are used (``diff``, ``shift(+k)``, ``rolling``, ``ewm(adjust=False)``); nothing is centred,
back-filled or normalised over the whole series. ``tests/platform/test_features.py`` checks this by changing prices after a
day t and asserting that every feature at or before t is bit-for-bit unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Bump when a formula changes: it is part of the feature-cache key.
FEATURE_VERSION = 1


@dataclass(frozen=True)
class FeatureConfig:
    """Windows of the feature families (trading days). The defaults give 87 ticker + 7 calendar features + 19 per market
    series + 4 per indicator column: 132 features on the default MSFT + S&P 500 + NASDAQ universe."""

    return_horizons: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 40, 60, 120, 250)  # log returns over n days
    sma_windows: tuple[int, ...] = (5, 10, 20, 30, 50, 100, 150, 200)  # close / SMA(n) - 1
    ema_windows: tuple[int, ...] = (5, 10, 12, 20, 26, 50, 100, 200)  # close / EMA(n) - 1
    rsi_windows: tuple[int, ...] = (7, 14, 21, 28)  # Wilder RSI, scaled to [0, 1]
    bollinger_windows: tuple[int, ...] = (10, 20, 50)  # position in band and band width
    atr_windows: tuple[int, ...] = (7, 14, 28)  # ATR / close
    stochastic_windows: tuple[int, ...] = (14, 28)  # %K and %D
    volatility_windows: tuple[int, ...] = (5, 10, 20, 60, 120)  # realised vol of daily log returns
    extreme_windows: tuple[int, ...] = (20, 60, 250)  # distance to rolling max / min
    market_windows: tuple[int, ...] = (20, 60, 120)  # rolling beta / correlation to each market series
    indicator_z_window: int = 60  # rolling z-score of indicator levels

    def key(self) -> str:
        blob = json.dumps({"version": FEATURE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def warmup(self) -> int:
        """Rows needed before every feature is defined (the longest look-back plus one return)."""
        return max(max(self.return_horizons), max(self.sma_windows), max(self.extreme_windows),
                   max(self.volatility_windows) + 1, max(self.market_windows) + 1, self.indicator_z_window) + 1


SHORT = FeatureConfig(return_horizons=(1, 2, 3, 5, 10, 20, 40, 60), sma_windows=(5, 10, 20, 30, 50),
                      ema_windows=(5, 10, 12, 20, 26, 50), volatility_windows=(5, 10, 20, 60),
                      extreme_windows=(20, 60), market_windows=(20, 60))
# Named feature sets (``--features``): ``standard`` (look-backs up to 250 days: a 251-day warm-up) and ``short``
# (look-backs up to 60 days, a 62-day warm-up) for short histories such as the one-year ``sp500_2010`` universe.
FEATURE_SETS: dict[str, FeatureConfig] = {"standard": FeatureConfig(), "short": SHORT}


def feature_set(name: str) -> FeatureConfig:
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; available: {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def _safe_div(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray, fill: float = 0.0) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    # Element-wise fill keeps causality: a zero range on day t affects only day t.
    out[(den == 0) & ~np.isnan(den)] = fill
    return out


def _rsi(close: pd.Series, n: int) -> np.ndarray:
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1.0 / n, adjust=False, min_periods=n).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1.0 / n, adjust=False, min_periods=n).mean()
    return _safe_div(gain, gain + loss, fill=0.5)


# Features that need more than closes: the intraday range (open/high/low) or volume. A series without those columns
# (many exports are close-only) gets every other feature; these are left out, with one logged line naming them.
RANGE_FEATURES = ("atr_", "stoch_", "williams_r_", "cci_", "parkinson_vol_", "garman_klass_vol_", "body", "range",
                  "close_in_range", "gap", "upper_shadow", "lower_shadow")
VOLUME_FEATURES = ("obv_z_", "volume_z_", "volume_ratio_")


def needs(feature: str) -> str | None:
    """'open/high/low', 'volume' or None (closes are enough) for a ticker feature name."""
    def match(prefixes):
        return any(feature == p or (p.endswith("_") and feature.startswith(p)) for p in prefixes)
    return "open/high/low" if match(RANGE_FEATURES) else "volume" if match(VOLUME_FEATURES) else None


def has_range(df: pd.DataFrame) -> bool:
    return all(k in df for k in ("open", "high", "low"))


def ticker_features(df: pd.DataFrame, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Features of one daily series: columns close (required), open/high/low and volume (optional: the features that
    need them are left out when they are missing)."""
    c = df["close"].astype(np.float64)
    with_range, with_volume = has_range(df), "volume" in df
    # Stand-ins keep the shared code below simple; every feature computed from a stand-in is dropped at the end.
    o, h, lo = (df[k].astype(np.float64) for k in ("open", "high", "low")) if with_range else (c, c, c)
    v = df["volume"].astype(np.float64) if with_volume else pd.Series(1.0, index=df.index)
    logc = np.log(c)
    r1 = logc.diff()
    f: dict[str, np.ndarray] = {}

    for n in cfg.return_horizons:
        f[f"ret_{n}"] = logc.diff(n).to_numpy()
    sma = {n: c.rolling(n, min_periods=n).mean() for n in sorted({*cfg.sma_windows, 5, 20, 50,
                                                                  *((200,) if max(cfg.sma_windows) >= 200 else ())})}
    for n in cfg.sma_windows:
        f[f"sma_ratio_{n}"] = (c / sma[n] - 1).to_numpy()
    for n in cfg.ema_windows:
        f[f"ema_ratio_{n}"] = (c / c.ewm(span=n, adjust=False, min_periods=n).mean() - 1).to_numpy()
    f["sma_cross_5_20"] = (sma[5] / sma[20] - 1).to_numpy()
    f["sma_cross_20_50"] = (sma[20] / sma[50] - 1).to_numpy()
    if max(cfg.sma_windows) >= 200:  # a short feature set keeps every look-back within its longest window
        f["sma_cross_50_200"] = (sma[50] / sma[200] - 1).to_numpy()
    for n in cfg.rsi_windows:
        f[f"rsi_{n}"] = _rsi(c, n)
    for fast, slow, sig in ((12, 26, 9), (5, 35, 5)):
        macd = c.ewm(span=fast, adjust=False, min_periods=slow).mean() - c.ewm(span=slow, adjust=False,
                                                                                min_periods=slow).mean()
        signal = macd.ewm(span=sig, adjust=False, min_periods=sig).mean()
        f[f"macd_{fast}_{slow}"] = (macd / c).to_numpy()
        f[f"macd_signal_{fast}_{slow}"] = (signal / c).to_numpy()
        f[f"macd_hist_{fast}_{slow}"] = ((macd - signal) / c).to_numpy()
    for n in cfg.bollinger_windows:
        mean = c.rolling(n, min_periods=n).mean()
        sd = c.rolling(n, min_periods=n).std()
        f[f"bb_pos_{n}"] = _safe_div(c - mean, 2 * sd)
        f[f"bb_width_{n}"] = (4 * sd / mean).to_numpy()
    prev_c = c.shift(1)
    true_range = pd.concat([h - lo, (h - prev_c).abs(), (lo - prev_c).abs()], axis=1).max(axis=1, skipna=False)
    for n in cfg.atr_windows:
        f[f"atr_{n}"] = (true_range.ewm(alpha=1.0 / n, adjust=False, min_periods=n).mean() / c).to_numpy()
    for n in cfg.stochastic_windows:
        hh = h.rolling(n, min_periods=n).max()
        ll = lo.rolling(n, min_periods=n).min()
        k = pd.Series(_safe_div(c - ll, hh - ll, fill=0.5), index=df.index)
        f[f"stoch_k_{n}"] = k.to_numpy()
        f[f"stoch_d_{n}"] = k.rolling(3, min_periods=3).mean().to_numpy()
    hh14, ll14 = h.rolling(14, min_periods=14).max(), lo.rolling(14, min_periods=14).min()
    f["williams_r_14"] = _safe_div(hh14 - c, hh14 - ll14, fill=0.5)
    tp = (h + lo + c) / 3
    tp_mean = tp.rolling(20, min_periods=20).mean()
    tp_mad = (tp - tp_mean).abs().rolling(20, min_periods=20).mean()
    f["cci_20"] = _safe_div(tp - tp_mean, 0.015 * tp_mad) / 100.0

    obv = (np.sign(c.diff()).fillna(0.0) * v).cumsum()
    for n in (20, 60):
        f[f"obv_z_{n}"] = _safe_div(obv - obv.rolling(n, min_periods=n).mean(), obv.rolling(n, min_periods=n).std())
    logv = np.log1p(v)
    for n in (5, 20, 60):
        f[f"volume_z_{n}"] = _safe_div(logv - logv.rolling(n, min_periods=n).mean(),
                                       logv.rolling(n, min_periods=n).std())
    f["volume_ratio_20"] = _safe_div(v, v.rolling(20, min_periods=20).mean(), fill=1.0) - 1.0

    vols = {}
    for n in cfg.volatility_windows:
        vols[n] = r1.rolling(n, min_periods=n).std() * np.sqrt(252)
        f[f"vol_{n}"] = vols[n].to_numpy()
    f["vol_ratio_5_60"] = _safe_div(vols[5], vols[60], fill=1.0) - 1.0 if 5 in vols and 60 in vols else None
    hl2 = np.log(h / lo) ** 2
    for n in (10, 20):
        f[f"parkinson_vol_{n}"] = np.sqrt(hl2.rolling(n, min_periods=n).mean() / (4 * np.log(2)) * 252).to_numpy()
    gk = 0.5 * hl2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    f["garman_klass_vol_20"] = np.sqrt(gk.rolling(20, min_periods=20).mean().clip(lower=0) * 252).to_numpy()

    rng = h - lo
    f["body"] = (c / o - 1).to_numpy()
    f["range"] = (rng / c).to_numpy()
    f["close_in_range"] = _safe_div(c - lo, rng, fill=0.5)
    f["gap"] = (o / prev_c - 1).to_numpy()
    f["upper_shadow"] = ((h - np.maximum(o, c)) / c).to_numpy()
    f["lower_shadow"] = ((np.minimum(o, c) - lo) / c).to_numpy()
    for n in cfg.extreme_windows:
        f[f"dist_max_{n}"] = (c / c.rolling(n, min_periods=n).max() - 1).to_numpy()
        f[f"dist_min_{n}"] = (c / c.rolling(n, min_periods=n).min() - 1).to_numpy()
    for n in (20, 60):
        f[f"skew_{n}"] = r1.rolling(n, min_periods=n).skew().to_numpy()
        f[f"kurt_{n}"] = r1.rolling(n, min_periods=n).kurt().to_numpy()
    up = (r1 > 0).astype(np.float64).where(r1.notna())
    for n in (10, 20):
        f[f"up_share_{n}"] = up.rolling(n, min_periods=n).mean().to_numpy()
    missing = {"open/high/low"} if not with_range else set()
    if not with_volume:
        missing.add("volume")
    return {k: val for k, val in f.items() if val is not None and needs(k) not in missing}


def all_ticker_features(cfg: FeatureConfig) -> list[str]:
    """Every ticker feature name of a full OHLCV series under ``cfg`` (from a tiny synthetic series)."""
    key = cfg.key()
    if key not in _NAMES_CACHE:
        idx = pd.bdate_range("2000-01-03", periods=8)
        x = pd.Series(np.linspace(10, 11, 8), index=idx)
        _NAMES_CACHE[key] = list(ticker_features(pd.DataFrame({"open": x, "high": x + 1, "low": x - 1, "close": x,
                                                                "volume": x}), cfg))
    return _NAMES_CACHE[key]


_NAMES_CACHE: dict[str, list[str]] = {}


def calendar_features(index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    dow = index.dayofweek.to_numpy()
    month = index.month.to_numpy() - 1
    week = index.isocalendar().week.to_numpy(dtype=np.float64) - 1
    return {
        "dow_sin": np.sin(2 * np.pi * dow / 5), "dow_cos": np.cos(2 * np.pi * dow / 5),
        "month_sin": np.sin(2 * np.pi * month / 12), "month_cos": np.cos(2 * np.pi * month / 12),
        "week_sin": np.sin(2 * np.pi * week / 53), "week_cos": np.cos(2 * np.pi * week / 53),
        "day_of_month": index.day.to_numpy() / 31.0,
    }


def market_features(ticker_close: pd.Series, market: pd.DataFrame, name: str,
                    cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Context from one market series aligned to the ticker's dates (only its close is required)."""
    mc = market["close"].astype(np.float64)
    mlog = np.log(mc)
    mr1 = mlog.diff()
    tr1 = np.log(ticker_close).diff()
    p = name.lower()
    f: dict[str, np.ndarray] = {}
    for n in (1, 5, 20, 60):
        f[f"{p}_ret_{n}"] = mlog.diff(n).to_numpy()
    for n in (m for m in (20, 50, 200) if m <= max(cfg.sma_windows)):
        f[f"{p}_sma_ratio_{n}"] = (mc / mc.rolling(n, min_periods=n).mean() - 1).to_numpy()
    f[f"{p}_rsi_14"] = _rsi(mc, 14)
    f[f"{p}_vol_20"] = (mr1.rolling(20, min_periods=20).std() * np.sqrt(252)).to_numpy()
    mean20, sd20 = mc.rolling(20, min_periods=20).mean(), mc.rolling(20, min_periods=20).std()
    f[f"{p}_bb_pos_20"] = _safe_div(mc - mean20, 2 * sd20)
    for n in cfg.market_windows:
        cov = tr1.rolling(n, min_periods=n).cov(mr1)
        f[f"{p}_beta_{n}"] = _safe_div(cov, mr1.rolling(n, min_periods=n).var())
        f[f"{p}_corr_{n}"] = np.clip(np.nan_to_num(tr1.rolling(n, min_periods=n).corr(mr1).to_numpy(), nan=0.0,
                                                   posinf=0.0, neginf=0.0), -1, 1)
        # nan_to_num above also blanks the warm-up; restore NaN there so warm-up trimming stays uniform.
        f[f"{p}_corr_{n}"][: n] = np.nan
    tlog = np.log(ticker_close)
    for n in (5, 20, 60):
        f[f"{p}_rel_strength_{n}"] = (tlog.diff(n) - mlog.diff(n)).to_numpy()
    return f


def indicator_features(ind: pd.DataFrame, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    f: dict[str, np.ndarray] = {}
    n = cfg.indicator_z_window
    for col in ind.columns:
        x = ind[col].astype(np.float64)
        p = str(col).lower()
        f[f"{p}_level"] = x.to_numpy()
        f[f"{p}_z_{n}"] = _safe_div(x - x.rolling(n, min_periods=n).mean(), x.rolling(n, min_periods=n).std())
        f[f"{p}_chg_1"] = x.diff(1).to_numpy()
        f[f"{p}_chg_5"] = x.diff(5).to_numpy()
    return f


def align(ticker: pd.DataFrame, market: dict[str, pd.DataFrame], indicators: dict[str, pd.DataFrame],
          name: str = "ticker") -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame | None]:
    """Restrict a ticker and its context to their common dates; log how many rows each side lost."""
    idx = ticker.index
    for other in (*market.values(), *indicators.values()):
        idx = idx.intersection(other.index)
    if len(idx) < len(ticker):
        log.info("%s: %d of %d rows outside the market/indicator dates were left out (common range %s..%s)",
                 name, len(ticker) - len(idx), len(ticker), idx.min().date() if len(idx) else "-",
                 idx.max().date() if len(idx) else "-")
    ind = None
    if indicators:
        ind = pd.concat([frame.reindex(idx) for frame in indicators.values()], axis=1)
    return ticker.reindex(idx), {k: m.reindex(idx) for k, m in market.items()}, ind


def build_features(ticker: pd.DataFrame, market: dict[str, pd.DataFrame] | None = None,
                   indicators: dict[str, pd.DataFrame] | None = None, cfg: FeatureConfig | None = None,
                   name: str = "ticker", trim_warmup: bool = True) -> pd.DataFrame:
    """All features of one ticker as a float32 frame indexed by date, plus its ``close`` (float64, for labels).

    With ``trim_warmup`` the leading rows where any look-back is still incomplete are removed (logged); the rows that
    remain are all finite.
    """
    cfg = cfg or FeatureConfig()
    ticker, market, ind = align(ticker, market or {}, indicators or {}, name)
    feats = ticker_features(ticker, cfg)
    left_out = [k for k in all_ticker_features(cfg) if k not in feats]
    if left_out:
        log.info("%s: no %s column(s): %d feature(s) left out: %s", name,
                 " / ".join(sorted({needs(k) for k in left_out})), len(left_out), ", ".join(left_out))
    feats.update(calendar_features(ticker.index))
    for mname, mframe in market.items():
        feats.update(market_features(ticker["close"], mframe, mname, cfg))
    if ind is not None:
        feats.update(indicator_features(ind, cfg))
    out = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in feats.items()}, index=ticker.index)
    out[~np.isfinite(out.to_numpy())] = np.nan
    if trim_warmup:
        complete = out.notna().all(axis=1).to_numpy()
        first = int(np.argmax(complete)) if complete.any() else len(out)
        if first:
            log.info("%s: first %d rows dropped as feature warm-up (look-backs up to %d days)", name, first,
                     cfg.warmup)
        out = out.iloc[first:]
        holes = int(out.isna().to_numpy().sum())
        if holes:
            # Can only come from degenerate data after warm-up (e.g. a zero-variance market stretch); 0 is the neutral
            # value of every scaled feature here. Counted, never silent.
            log.warning("%s: %d non-finite feature value(s) after warm-up set to 0", name, holes)
            out = out.fillna(0.0)
        close = ticker["close"].iloc[first:]
    else:
        close = ticker["close"]
    out.insert(0, "close", close.to_numpy(dtype=np.float64))
    return out
