"""Labels from the forward return over ``horizon`` trading days.

forward_return[t] = close[t + horizon] / close[t] - 1, known only after day t + horizon: it is a label, never a feature.

Tie rule (binary, the seeds' rule): Bajista (0) when the forward return is < 0, Alcista (1) when it is >= 0, so a
zero return counts as Alcista. This matters: on the embedded MSFT series about 10% of 1-day and about 5% of 5-day
returns are exactly zero (old prices were quoted in 1/32 steps), which inflates the Alcista share. The 3-class label
puts |return| <= ``neutral_band`` in Neutral, so ties land there.

Market-neutral labels (panels of 2 or more tickers), computed per day over the tickers that have a forward return that
day, so a day's label uses every ticker's returns over the same ``horizon`` days and nothing later:
- ``excess``: the direction of the excess return, the forward return minus that day's cross-sectional mean (Bajista =
  below the day's mean, Alcista = at or above it); ``excess_regression``: the excess return itself;
- ``rank``: that day's cross-sectional rank of the forward return (average rank for ties) scaled to [-1, 1]
  (0 when a day has a single ticker).
On a panel they make IC a measure of stock selection rather than of the market's direction.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import pandas as pd

BINARY_NAMES = ("Bajista", "Alcista")
TERNARY_NAMES = ("Bajista", "Neutral", "Alcista")


class LabelKind(str, Enum):
    binary = "binary"
    ternary = "ternary"
    regression = "regression"
    excess = "excess"
    excess_regression = "excess_regression"
    rank = "rank"

    @property
    def n_classes(self) -> int:
        return {"binary": 2, "ternary": 3, "excess": 2}.get(self.value, 0)

    @property
    def class_names(self) -> tuple[str, ...]:
        return {"binary": BINARY_NAMES, "ternary": TERNARY_NAMES, "excess": BINARY_NAMES}.get(self.value, ())

    @property
    def is_value(self) -> bool:
        """The label is a number to regress (the return, the excess return, the rank), not a class."""
        return self.n_classes == 0

    @property
    def cross_sectional(self) -> bool:
        """The label of a ticker depends on the other tickers of the same day."""
        return self.value in ("excess", "excess_regression", "rank")


LABELS = tuple(k.value for k in LabelKind)


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """Forward return per row of one ticker; NaN for the last ``horizon`` rows (their future is unknown)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def cross_sectional_targets(fwd: np.ndarray, dates: np.ndarray, kind: LabelKind | str) -> np.ndarray:
    """Per row of a stacked panel: the excess return (forward return minus that day's mean over the tickers with a
    forward return that day) or the day's rank scaled to [-1, 1]; NaN where the forward return is unknown."""
    kind = LabelKind(kind)
    frame = pd.DataFrame({"date": np.asarray(dates), "fwd": np.asarray(fwd, dtype=np.float64)})
    by_day = frame.groupby("date")["fwd"]
    if kind is LabelKind.rank:
        rank = by_day.rank(method="average")
        n = by_day.transform("count")
        return np.where(n > 1, (rank - 1) / (n - 1).clip(lower=1) * 2 - 1, 0.0).astype(np.float64) * \
            np.where(np.isnan(frame["fwd"]), np.nan, 1.0)
    return (frame["fwd"] - by_day.transform("mean")).to_numpy(dtype=np.float64)


def make_labels(fwd: np.ndarray, kind: LabelKind | str = LabelKind.binary, neutral_band: float = 0.005) -> np.ndarray:
    """Class ids (int64) for class labels, the value (float32) for value labels. NaN returns map to -1.

    For the market-neutral kinds ``fwd`` is already the cross-sectional target (``cross_sectional_targets``)."""
    kind = LabelKind(kind)
    if kind.is_value:
        return fwd.astype(np.float32)
    known = ~np.isnan(fwd)
    y = np.full(fwd.shape, -1, dtype=np.int64)
    if kind in (LabelKind.binary, LabelKind.excess):
        y[known] = (fwd[known] >= 0).astype(np.int64)
    else:
        if neutral_band < 0:
            raise ValueError(f"neutral_band must be >= 0, got {neutral_band}")
        y[known] = np.where(fwd[known] < -neutral_band, 0, np.where(fwd[known] > neutral_band, 2, 1))
    return y
