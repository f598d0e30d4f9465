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
