"""Labels from the forward return over ``horizon`` trading days.

forward_return[t] = close[t + horizon] / close[t] - 1, known only after day t + horizon: it is a label, never a feature.

Tie rule (binary, the seeds' rule): Bajista (0) when the forward return is < 0, Alcista (1) when it is >= 0, so a
zero return counts as Alcista. This matters: on the embedded MSFT series about 10% of 1-day and about 5% of 5-day
returns are exactly zero (old prices were quoted in 1/32 steps), which inflates the Alcista share. The 3-class label
puts |return| <= ``neutral_band`` in Neutral, so ties land there.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

BINARY_NAMES = ("Bajista", "Alcista")
TERNARY_NAMES = ("Bajista", "Neutral", "Alcista")


class LabelKind(str, Enum):
    binary = "binary"
    ternary = "ternary"
    regression = "regression"

    @property
    def n_classes(self) -> int:
        return {"binary": 2, "ternary": 3, "regression": 0}[self.value]

    @property
    def class_names(self) -> tuple[str, ...]:
        return {"binary": BINARY_NAMES, "ternary": TERNARY_NAMES, "regression": ()}[self.value]


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """Forward return per row of one ticker; NaN for the last ``horizon`` rows (their future is unknown)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def make_labels(fwd: np.ndarray, kind: LabelKind | str = LabelKind.binary, neutral_band: float = 0.005) -> np.ndarray:
    """Class ids (int64) for binary/ternary, the raw return (float32) for regression. NaN returns map to -1."""
    kind = LabelKind(kind)
    if kind is LabelKind.regression:
        return fwd.astype(np.float32)
    known = ~np.isnan(fwd)
    y = np.full(fwd.shape, -1, dtype=np.int64)
    if kind is LabelKind.binary:
        y[known] = (fwd[known] >= 0).astype(np.int64)
    else:
        if neutral_band < 0:
            raise ValueError(f"neutral_band must be >= 0, got {neutral_band}")
        y[known] = np.where(fwd[known] < -neutral_band, 0, np.where(fwd[known] > neutral_band, 2, 1))
    return y
