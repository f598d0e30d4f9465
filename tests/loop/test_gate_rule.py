"""The gate window is a property of the split code: a challenger split with gate_boundaries never trains or
early-stops on a window day (its labels end before the window's first input day), check_before_window catches any
model segment that reaches into it, and promotion is a compare-and-set under a lock."""

import numpy as np
import pandas as pd
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.splits import check_before_window, gate_boundaries, gate_window
from stocktrend.platform.data.synthetic import random_walk_universe


@pytest.mark.parametrize("gate_days,horizon,seq", [(63, 5, 20), (20, 10, 5), (5, 1, 30)])
def test_a_gate_split_keeps_every_training_and_validation_label_before_the_window(gate_days, horizon, seq):
    u = random_walk_universe(1200, n_tickers=3, seed=gate_days)
    cfg = DataConfig(horizon=horizon, sequence_length=seq, top_k=8)
    probe = build_dataset(cfg, universe=u, use_cache=False)
    dates = pd.DatetimeIndex(np.unique(probe.dates))
    bounds = gate_boundaries(dates, horizon, gate_days, 120)
    data = build_dataset(cfg, universe=u, use_cache=False, bounds=bounds)
    w0, w1 = gate_window(dates, horizon, gate_days)
    test_days = pd.DatetimeIndex(np.unique(data.dates[data.samples["test"]]))
    assert test_days.min() == w0 and test_days.max() == w1 and len(test_days) == gate_days
    first_input = dates[dates.searchsorted(w0) - seq + 1]  # the window's first window starts here
    for seg in ("train", "val"):
        rows = data.samples[seg]
        label_end = dates[dates.searchsorted(pd.DatetimeIndex(data.dates[rows]).max()) + horizon]
        assert label_end < first_input, (seg, label_end, first_input)
        assert check_before_window({seg: data.date_range(seg)}, w0, dates, horizon) == []
    # The window itself, or a segment one day too long, is caught.
    late = (str(dates[0].date()), str(dates[dates.searchsorted(w0) - horizon].date()))
    assert check_before_window({"a champion's val": late}, w0, dates, horizon)
    assert check_before_window({"the window": (str(w0.date()), str(w1.date()))}, w0, dates, horizon)


def test_too_little_data_for_a_window_is_a_clear_error():
    dates = pd.bdate_range("2020-01-01", periods=60)
    with pytest.raises(ValueError, match="cannot hold a 63-day gate window"):
        gate_boundaries(dates, 5, 63, 10)


def test_promotion_is_a_compare_and_set(three_versions):
    """Two retrains that compared against the same champion: the first moves production, the second sees it moved
    and changes nothing."""
    from stocktrend.platform.registry import mlflow_registry as registry
    first = registry.promote("m", 2, expected=1, also={"challenger": 2})
    second = registry.promote("m", 3, expected=1, also={"challenger": 3})
    assert first["changed"] and not second["changed"] and "moved to version 2" in second["reason"]
    al = registry.aliases("m")
    assert al["production"] == 2 and al["previous_production"] == 1 and al["challenger"] == 3
    assert registry.rollback("m")["version"] == 1 and "previous_production" not in registry.aliases("m")


def test_the_validation_block_has_a_fixed_length_and_the_staleness_its_bound():
    """Whatever the history's length, the challenger's training ends val_days + purges before the window (it was a
    share of the timeline: years on a long history); a rolling window starts train_days before the validation
    block; a refit trains on every labelled day (staleness 0)."""
    from stocktrend.platform.data.splits import refit_boundaries, staleness, staleness_bound
    horizon, seq, gate_days, val_days = 5, 10, 40, 60
    for n_days in (900, 2500):
        u = random_walk_universe(n_days, n_tickers=2, seed=n_days)
        cfg = DataConfig(horizon=horizon, sequence_length=seq, top_k=8)
        probe = build_dataset(cfg, universe=u, use_cache=False)
        dates = pd.DatetimeIndex(np.unique(probe.dates))
        data = build_dataset(cfg, universe=u, use_cache=False,
                             bounds=gate_boundaries(dates, horizon, gate_days, val_days))
        val_days_seen = pd.DatetimeIndex(np.unique(data.dates[data.samples["val"]]))
        assert len(val_days_seen) <= val_days
        days, _ = staleness(dates, data.date_range("train")[1], horizon)
        bound = staleness_bound(gate_days, val_days, seq, horizon, cfg.embargo)
        assert bound - 2 * horizon <= days <= bound, (n_days, days, bound)  # the same, whatever the history
        rolling = build_dataset(cfg, universe=u, use_cache=False,
                                bounds=gate_boundaries(dates, horizon, gate_days, val_days, train_days=300))
        first = pd.Timestamp(rolling.date_range("train")[0])
        assert 290 <= len(dates[(dates >= first) & (dates < pd.Timestamp(rolling.date_range("val")[0]))]) <= 300
        assert rolling.date_range("train")[1] == data.date_range("train")[1]
        refit = build_dataset(cfg, universe=u, use_cache=False, bounds=refit_boundaries(dates, horizon, gate_days))
        assert staleness(dates, refit.date_range("train")[1], horizon)[0] == 0
        per = refit.per_ticker[refit.tickers[0]]
        assert per["samples"]["train"] == per["rows"] - horizon - (seq - 1)  # every labelled window of the ticker
