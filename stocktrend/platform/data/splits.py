"""Chronological splits with purge and embargo, and walk-forward folds.

Boundaries are dates, shared by every ticker of a panel. Within one ticker a sample is the position ``t`` of its last
input day on that ticker's date axis: its inputs are days ``t - L + 1 .. t`` (L = sequence length) and its label uses
days ``t + 1 .. t + H`` (H = horizon).

Purge and embargo, at every boundary between an earlier segment A and the next segment B whose first day is at
position ``b``: the first input day of B's first window is ``b - L + 1``. A sample ``t`` of A is kept only if

    t + H  <  b - L + 1 - embargo

so no day of an A label is an input (or label) day of B, with ``embargo`` extra days of gap. Samples dropped by the
first inequality alone (t + H >= b - L + 1) are counted as purged; the further ``embargo`` ones as embargoed.
The test segment ends where its labels end: its last H days are inputs only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SEGMENTS = ("train", "val", "test")


@dataclass(frozen=True)
class Boundaries:
    """First day of validation and of test; ``end`` is the first day after the test segment (None: data end)."""

    val_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp | None = None
    refit: bool = False  # train on every labelled day; val and test repeat the days from val_start (in-sample)
    train_start: pd.Timestamp | None = None  # first training sample day (a rolling window); None = all history


@dataclass
class Split:
    """Positions of the last input day of each kept sample, per segment, for one ticker."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    purged: dict[str, int] = field(default_factory=dict)
    embargoed: dict[str, int] = field(default_factory=dict)

    def segments(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _validate(seq_len: int, horizon: int, embargo: int) -> None:
    if seq_len < 1 or horizon < 1 or embargo < 0:
        raise ValueError(f"need sequence length >= 1, horizon >= 1, embargo >= 0; got {seq_len}, {horizon}, {embargo}")


def _cut(positions: np.ndarray, next_start: int, horizon: int, seq_len: int, embargo: int
         ) -> tuple[np.ndarray, int, int]:
    first_input = next_start - seq_len + 1
    keep = positions + horizon < first_input - embargo
    purged = int((positions + horizon >= first_input).sum())
    return positions[keep], purged, int((~keep).sum()) - purged


def split_positions(n_dates: int, val_start: int, test_start: int, stop: int | None, seq_len: int, horizon: int,
                    embargo: int) -> Split:
    """Split one series of ``n_dates`` rows at positions ``val_start`` and ``test_start`` (test ends before ``stop``)."""
    _validate(seq_len, horizon, embargo)
    stop = n_dates if stop is None else min(stop, n_dates)
    n_labeled = stop - horizon  # a sample needs its whole label inside the data (and inside the fold)

    def segment(first: int, end: int) -> np.ndarray:
        return np.arange(max(first, seq_len - 1), min(end, n_labeled), dtype=np.int64)

    train, p_tr, e_tr = _cut(segment(0, val_start), val_start, horizon, seq_len, embargo)
    val, p_va, e_va = _cut(segment(val_start, test_start), test_start, horizon, seq_len, embargo)
    test = segment(test_start, stop)
    return Split(train, val, test, purged={"train": p_tr, "val": p_va, "test": 0},
                 embargoed={"train": e_tr, "val": e_va, "test": 0})


def split_ticker(dates: pd.DatetimeIndex, bounds: Boundaries, seq_len: int, horizon: int, embargo: int) -> Split:
    """Apply date boundaries to one ticker's own date axis."""
    val_start, test_start = (int(dates.searchsorted(b)) for b in (bounds.val_start, bounds.test_start))
    stop = None if bounds.end is None else int(dates.searchsorted(bounds.end))
    first = 0 if bounds.train_start is None else int(dates.searchsorted(bounds.train_start))
    if bounds.refit:
        _validate(seq_len, horizon, embargo)
        n_labeled = len(dates) - horizon
        train = np.arange(max(seq_len - 1, first), n_labeled, dtype=np.int64)
        recent = train[train >= val_start]
        return Split(train, recent, recent.copy(), purged=dict.fromkeys(SEGMENTS, 0),
                     embargoed=dict.fromkeys(SEGMENTS, 0))
    sp = split_positions(len(dates), val_start, test_start, stop, seq_len, horizon, embargo)
    if first:
        sp.train = sp.train[sp.train >= first]
    return sp


def chronological_boundaries(dates: pd.DatetimeIndex, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                             ) -> Boundaries:
    """Train/val/test as fractions of the timeline (the sorted union of the panel's dates)."""
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    n = len(dates)
    if n < 3:
        raise ValueError(f"{n} dates cannot be split in three")
    val_pos = int(round(n * fractions[0]))
    test_pos = int(round(n * (fractions[0] + fractions[1])))
    return Boundaries(dates[val_pos], dates[test_pos])


def walk_forward_boundaries(dates: pd.DatetimeIndex, n_folds: int = 5, test_fraction: float = 0.1,
                            val_fraction: float = 0.1) -> list[Boundaries]:
    """Expanding-window folds in time order.

    The last ``n_folds * test_fraction`` of the timeline is cut into consecutive test blocks; each fold validates on
    the ``val_fraction`` block right before its test block and trains on all history before that.
    """
    if n_folds < 1 or n_folds * test_fraction + val_fraction >= 0.9:
        raise ValueError(f"{n_folds} folds x test fraction {test_fraction} + validation {val_fraction} leave too "
                         f"little training history")
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    n = len(dates)
    test_len, val_len = int(n * test_fraction), int(n * val_fraction)
    folds = []
    for k in range(n_folds):
        test_pos = n - (n_folds - k) * test_len
        stop_pos = test_pos + test_len
        folds.append(Boundaries(dates[test_pos - val_len], dates[test_pos], dates[stop_pos] if stop_pos < n else None))
    return folds


# ---------------------------------------------------------------------------------------------------------------------
# The gate window of the daily loop
# ---------------------------------------------------------------------------------------------------------------------

def gate_boundaries(dates: pd.DatetimeIndex, horizon: int, gate_days: int, val_days: int = 126,
                    train_days: int = 0) -> Boundaries:
    """Boundaries of a retrain whose test segment is the gate window.

    The gate window is the last ``gate_days`` labelled days of the data: a sample dated t is labelled once day t +
    ``horizon`` is in the data, so the window ends ``horizon`` days before the data end. The retrained model
    validates (early-stops) on the ``val_days`` trading days right before the window (a fixed length, so that a long
    history does not push the training data years back) and trains on everything before that, with the usual purge
    and embargo at both boundaries, so no day of its training or validation labels is an input or label day of the
    window. The champion it is compared with must also have trained and validated before it: ``check_before_window``.
    Its staleness (``staleness``) is at most ``staleness_bound``. ``train_days`` > 0: a rolling window, training
    samples only from the ``train_days`` trading days before the validation block (0: all history).
    """
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    n = len(dates)
    if gate_days < 1:
        raise ValueError(f"the gate window needs at least 1 day, got {gate_days}")
    if val_days < 1:
        raise ValueError(f"the validation block needs at least 1 day, got {val_days}")
    test_pos = n - horizon - gate_days
    if test_pos - val_days < 1:
        raise ValueError(f"{n} days of data cannot hold a {gate_days}-day gate window, a {horizon}-day label horizon "
                         f"and a {val_days}-day validation block before it")
    start = dates[max(0, test_pos - val_days - train_days)] if train_days > 0 else None
    return Boundaries(dates[test_pos - val_days], dates[test_pos], train_start=start)


def refit_boundaries(dates: pd.DatetimeIndex, horizon: int, gate_days: int, train_days: int = 0) -> Boundaries:
    """Boundaries of a refit: train on every labelled day through the data's end (``refit=True``: no purge, no held-out
    segment); its validation and test segments are the last ``gate_days`` labelled days again, inside the training
    data, kept only so that the fitting code has segments to report on (in-sample, never a basis for a decision)."""
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    n = len(dates)
    pos = n - horizon - gate_days
    if pos < 1:
        raise ValueError(f"{n} days of data cannot hold a {gate_days}-day window and a {horizon}-day horizon")
    start = dates[max(0, n - horizon - train_days)] if train_days > 0 else None
    return Boundaries(dates[pos], dates[pos], refit=True, train_start=start)


def staleness_bound(gate_days: int, val_days: int, seq_len: int, horizon: int, embargo: int) -> int:
    """The most trading days between a gate-split challenger's last training label and the as-of day: the window,
    the validation block, the purge before the validation block (a window's length plus the embargo) and two
    horizons (the window's own labels and the last training label's)."""
    return gate_days + val_days + seq_len + embargo + 2 * horizon


def staleness(dates: pd.DatetimeIndex, last_sample_day, horizon: int, as_of=None) -> tuple[int, pd.Timestamp]:
    """Trading days between a model's last training label day (its last training sample day + ``horizon`` trading
    days) and the as-of day (default: the last day of ``dates``); and that label day."""
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    as_of = dates[-1] if as_of is None else pd.Timestamp(as_of)
    pos = int(dates.searchsorted(pd.Timestamp(last_sample_day), side="right")) - 1 + horizon
    label_end = dates[min(max(pos, 0), len(dates) - 1)]
    return int(((dates > label_end) & (dates <= as_of)).sum()), label_end


def gate_window(dates: pd.DatetimeIndex, horizon: int, gate_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last sample day of the gate window (the last ``gate_days`` labelled days)."""
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    n = len(dates)
    return dates[n - horizon - gate_days], dates[n - horizon - 1]


def check_before_window(seen: dict[str, tuple[str, str] | list[str]], window_start: pd.Timestamp,
                        dates: pd.DatetimeIndex, horizon: int) -> list[str]:
    """What violates the gate rule: for every (model segment -> its first and last sample day) in ``seen`` (e.g.
    ``{"champion train": (...), "challenger val": (...)}``), the segment's last label day (its last sample day +
    ``horizon`` trading days) must fall before the window's first day. Returns one line per violation (empty = the
    window holds no day either model saw)."""
    dates = pd.DatetimeIndex(dates).unique().sort_values()
    problems = []
    for what, (_, last) in seen.items():
        last = pd.Timestamp(last)
        pos = int(dates.searchsorted(last, side="right")) - 1 + horizon
        label_end = dates[pos] if 0 <= pos < len(dates) else last + pd.tseries.offsets.BDay(horizon)
        if label_end >= window_start:
            problems.append(f"{what} runs to {last.date()} (labels to {label_end.date()}), into the gate window "
                            f"starting {window_start.date()}")
    return problems
