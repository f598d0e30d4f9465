"""How weak a signal the platform can find: plant a signal of known strength in a real panel's inputs.

``plant_signal`` overwrites one model input column (the weakest selected feature, so the input width and every other
column stay as they were) with a signal about the **next day's** excess return:

    z[t, i] = a * e1[t, i] + sqrt(1 - a^2) * noise[t, i]

where e1 is the day's cross-sectionally standardised excess return of day t + 1 (the 1-day forward return minus
that day's mean over the tickers, divided by their standard deviation) and the noise is standard normal. ``a`` is
calibrated on the panel so that z's correlation with the label's excess return (the ``horizon``-day forward return
minus the day's mean) is ``rho``: the label spans days t + 1 .. t + horizon, of which e1 is the first, so
a = rho / corr(e1, e_label). Why the next day and not the label itself: a window holds the column's last
``sequence_length`` days, and a signal about day s's ``horizon``-day return seen on day s - 1, s - 2, ... would give
the model several overlapping looks at the label's future (a much stronger signal than rho); a day-ahead signal seen on
earlier days is about returns already realised at t and adds nothing. It uses the future exactly as that definition
says and nothing else; rows whose next day is unknown get noise only. The column is standardised with the training
rows' mean and deviation, as the scaler would, and the realised correlation is returned beside rho.

The detection rule used by ``bench/detection_power.py``: a model detects rho when its test rank IC has a Newey-West
t-statistic above 3 (``DETECT_T``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.data.labels import forward_returns

DETECT_T = 3.0


def _day_standardised(values: np.ndarray, dates: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({"date": dates, "v": values})
    g = frame.groupby("date")["v"]
    sd = g.transform("std")
    return ((frame["v"] - g.transform("mean")) / sd.where(sd > 0)).to_numpy(dtype=np.float64)


def cross_sectional_zscore(x: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Each column standardised within each day's cross-section (Qlib's CSZScoreNorm): causal, since a day's rows
    use only that day's values across tickers. A day with one row, or a column constant on a day, gives 0. A lever
    measured by bench/detection_power.py (``--cs-norm``); not yet a data-pipeline option, because a served window
    would then need the whole day's cross-section."""
    _, day = np.unique(dates, return_inverse=True)
    n = np.bincount(day).astype(np.float64)[:, None]
    xf = np.asarray(x, dtype=np.float64)
    sums = np.zeros((len(n), xf.shape[1]))
    np.add.at(sums, day, xf)
    mean = sums / n
    dev = xf - mean[day]
    sq = np.zeros_like(sums)
    np.add.at(sq, day, dev ** 2)
    sd = np.sqrt(sq / np.maximum(n - 1, 1))
    out = np.divide(dev, sd[day], out=np.zeros_like(dev), where=sd[day] > 1e-12)
    return out.astype(np.float32)


def plant_signal(data: PreparedData, rho: float, seed: int = 0) -> tuple[PreparedData, str, float]:
    """A copy of ``data`` whose weakest selected input carries a day-ahead signal whose correlation with the label's
    excess return is ``rho``. Returns (data, the name of the column replaced, the realised correlation)."""
    from dataclasses import replace
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    if len(data.tickers) < 2:
        raise ValueError("a cross-sectional signal needs 2 or more tickers")
    close = data.panel.meta["close"].to_numpy(dtype=np.float64)
    fwd1 = np.concatenate([forward_returns(close[a:b], 1) for a, b in zip(data.offsets[:-1], data.offsets[1:])])
    e1 = _day_standardised(fwd1, data.dates)
    e_label = _day_standardised(data.forward_return, data.dates)
    both = np.isfinite(e1) & np.isfinite(e_label)
    c = float(np.corrcoef(e1[both], e_label[both])[0, 1])
    a = rho / c
    if not 0 <= a < 1:
        raise ValueError(f"rho {rho} is out of reach for a day-ahead signal on this panel (the next day explains a "
                         f"correlation of at most {c:.2f} with the {data.config.horizon}-day excess return)")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(e1))
    z = np.where(np.isfinite(e1), a * np.nan_to_num(e1) + np.sqrt(1 - a ** 2) * noise, noise)
    realised = float(np.corrcoef(z[both], e_label[both])[0, 1])
    train = data.train_unbalanced
    z = (z - z[train].mean()) / z[train].std()
    col = len(data.transforms.selected) - 1  # the last selected = the lowest selection score
    x = data.x.copy()
    x[:, col] = z.astype(np.float32)
    return replace(data, x=x), data.transforms.selected[col], realised


# --- Signals carried by the raw inputs (issue 38): the features must find them, not a column handed to the model ---

RAW_KINDS = ("volume", "momentum")
VOLUME_LOADING = 1.0  # log-volume units per unit of the planted z (the day-to-day log-volume sd of us29 is ~0.4)


def _wide(universe, column: str) -> pd.DataFrame:
    return pd.DataFrame({t: df[column] for t, df in universe.tickers.items()}).sort_index()


def _cs_std(frame: pd.DataFrame) -> pd.DataFrame:
    """Each day's values standardised across the tickers that have one."""
    sd = frame.std(axis=1)
    return frame.sub(frame.mean(axis=1), axis=0).div(sd.where(sd > 0), axis=0)


def _label_excess(close: pd.DataFrame, horizon: int) -> pd.DataFrame:
    return _cs_std(close.shift(-horizon) / close - 1)


def _corr(a: pd.DataFrame, b: pd.DataFrame) -> float:
    x, y = a.to_numpy().ravel(), b.to_numpy().ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def plant_raw_signal(universe, kind: str, rho: float, seed: int = 0, horizon: int = 5):
    """A copy of ``universe`` whose raw inputs carry a signal about the label's excess return, found only through the
    features computed from them. Returns (universe, oracle, realised) with ``oracle`` a (date x ticker) frame: the
    planted signal, known at each day's close, as a score.

    - ``volume``: each ticker's volume is multiplied by exp(VOLUME_LOADING x z), z = a x e1 + sqrt(1 - a^2) x noise
      as in ``plant_signal`` (e1: the next day's cross-sectionally standardised excess return; a calibrated so that
      corr(z, label's excess return) = rho). Volume features (ratios to averages, z-scores) carry it.
    - ``momentum``: idiosyncratic momentum in prices: each day's return gets b x (that day's cross-sectional sd of
      returns) x m, m = the previous day's cross-sectionally standardised trailing ``horizon``-day excess return
      (computed from the already planted prices, day by day); b is calibrated so that corr(m, the label's excess
      return) = rho. Open, high and low move with the close; volume is unchanged. The oracle is m. Deterministic:
      ``seed`` plays no part (in the bench, seeds vary the models' training only).
    """
    from stocktrend.platform.data.sources import Universe
    if kind not in RAW_KINDS:
        raise ValueError(f"unknown raw signal kind {kind!r}; choose from {', '.join(RAW_KINDS)}")
    if not 0 <= rho < 1:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    if len(universe.tickers) < 2:
        raise ValueError("a cross-sectional signal needs 2 or more tickers")
    close = _wide(universe, "close")
    rng = np.random.default_rng(seed)
    e_label = _label_excess(close, horizon)
    if kind == "volume":
        e1 = _cs_std(close.shift(-1) / close - 1)
        c = _corr(e1, e_label)
        a = rho / c
        if not 0 <= a < 1:
            raise ValueError(f"rho {rho} is out of reach for a day-ahead signal (at most {c:.2f} here)")
        noise = pd.DataFrame(rng.standard_normal(close.shape), index=close.index, columns=close.columns)
        z = (a * e1.fillna(0) + np.sqrt(1 - a ** 2) * noise).where(close.notna())
        z = z.where(e1.notna(), noise.where(close.notna()))
        tickers = {}
        for t, df in universe.tickers.items():
            out = df.copy()
            out["volume"] = df["volume"] * np.exp(VOLUME_LOADING * z[t].reindex(df.index).to_numpy())
            tickers[t] = out
        planted = Universe(tickers, universe.market, universe.indicators, source=universe.source,
                           drop_short=universe.drop_short)
        return planted, z, _corr(z, e_label)
    # each ticker's return over its own previous close (a day it did not trade carries no move; the next day's return
    # spans the gap), so the planted path keeps every real move
    ret = (close / close.ffill().shift(1) - 1).to_numpy()
    avail = close.notna().to_numpy()

    def run(b: float):
        r = np.nan_to_num(ret.copy())
        logp = np.zeros_like(r)
        m = np.full_like(r, np.nan)
        for t in range(1, len(r)):
            if t > horizon:
                past = logp[t - 1] - logp[t - 1 - horizon]
                ok = avail[t - 1] & avail[t - 1 - horizon] & avail[t]
                if ok.sum() >= 2:
                    ex = past[ok] - past[ok].mean()
                    sd = ex.std()
                    if sd > 0:
                        m[t - 1, ok] = ex / sd
                        r[t, ok] = r[t, ok] + b * ret[t, ok][np.isfinite(ret[t, ok])].std() * m[t - 1, ok]
            logp[t] = logp[t - 1] + np.log1p(np.clip(r[t], -0.95, None))
        return r, m

    def realised(b: float):
        r, m = run(b)
        new_close = pd.DataFrame(np.exp(np.cumsum(np.log1p(np.clip(r, -0.95, None)), axis=0)),
                                 index=close.index, columns=close.columns).where(close.notna())
        mf = pd.DataFrame(m, index=close.index, columns=close.columns)
        return _corr(mf, _label_excess(new_close, horizon)), r, mf
    lo, hi = 0.0, 2.0
    for _ in range(18):  # bisection on b: the realised correlation grows with b
        mid = (lo + hi) / 2
        if realised(mid)[0] < rho:
            lo = mid
        else:
            hi = mid
    got, r, m = realised((lo + hi) / 2)
    factor = pd.DataFrame(np.exp(np.cumsum(np.log1p(np.clip(r, -0.95, None)), axis=0)), index=close.index,
                          columns=close.columns)
    tickers = {}
    for t, df in universe.tickers.items():
        new = factor[t].reindex(df.index)
        scale = (new / new.iloc[0]) / (df["close"] / df["close"].iloc[0])
        out = df.copy()
        for col in ("open", "high", "low", "close"):
            if col in out:
                out[col] = df[col] * scale.to_numpy()
        tickers[t] = out
    planted = Universe(tickers, universe.market, universe.indicators, source=universe.source,
                       drop_short=universe.drop_short)
    return planted, m, got
