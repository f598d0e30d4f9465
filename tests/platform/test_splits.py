import pandas as pd
import pytest

from stocktrend.platform.data.dataset import DataConfig, prepare
from stocktrend.platform.data.cache import load_or_build_panel
from stocktrend.platform.data.splits import (chronological_boundaries, split_positions, split_ticker,
                                        walk_forward_boundaries)
from stocktrend.platform.data.synthetic import random_walk_universe


def assert_no_overlap(train, next_rows, seq_len, horizon, embargo):
    """Every earlier label window ends before the first input day of the next segment, minus the embargo."""
    if len(train) == 0 or len(next_rows) == 0:
        return
    first_input = next_rows.min() - seq_len + 1
    assert (train + horizon < first_input - embargo).all()


@pytest.mark.parametrize("seq_len,horizon,embargo", [(30, 5, 5), (10, 1, 0), (60, 20, 10)])
def test_chronological_split_purges_and_embargoes(seq_len, horizon, embargo):
    sp = split_positions(1000, 800, 900, None, seq_len, horizon, embargo)
    assert_no_overlap(sp.train, sp.val, seq_len, horizon, embargo)
    assert_no_overlap(sp.val, sp.test, seq_len, horizon, embargo)
    # Tight: the sample right after the last kept one would violate the rule.
    assert sp.train.max() + 1 + horizon >= 800 - seq_len + 1 - embargo
    assert sp.purged["train"] == horizon + seq_len - 1 and sp.embargoed["train"] == embargo
    assert sp.test.max() == 1000 - horizon - 1  # the last H days have no label
    assert sp.train.min() == seq_len - 1  # the first window needs L days


def test_panel_with_different_histories_never_overlaps():
    u = random_walk_universe(1500, n_tickers=3, seed=1)
    # Give the tickers different date ranges: the split is by date, shared by all of them.
    u.tickers["RW1"] = u.tickers["RW1"].iloc[300:]
    u.tickers["RW2"] = u.tickers["RW2"].iloc[:1300]
    panel = load_or_build_panel(u, use_cache=False)
    cfg = DataConfig(tickers=(), sequence_length=20, horizon=5, embargo=3)
    data = prepare(panel, cfg)
    val_start = data.dates[data.samples["val"]].min()
    test_start = data.dates[data.samples["test"]].min()
    for i, name in enumerate(data.tickers):
        a, b = data.offsets[i], data.offsets[i + 1]
        rows = {s: r[(r >= a) & (r < b)] - a for s, r in {**data.samples, "train": data.train_unbalanced}.items()}
        assert_no_overlap(rows["train"], rows["val"], 20, 5, 3)
        assert_no_overlap(rows["val"], rows["test"], 20, 5, 3)
        d = data.dates[a:b]
        assert (d[rows["train"] + 5] < val_start).all()  # no training label reaches validation
        assert (d[rows["val"] + 5] < test_start).all()
    for seg in ("train", "val", "test"):
        r = data.samples[seg]
        assert len(r) > 0
    assert data.dates[data.train_unbalanced].max() < val_start <= data.dates[data.samples["val"]].max() < test_start


def test_walk_forward_folds_are_in_time_order_and_purged():
    dates = pd.bdate_range("2001-01-01", periods=2000)
    folds = walk_forward_boundaries(dates, n_folds=4, test_fraction=0.1, val_fraction=0.1)
    assert len(folds) == 4
    prev_test = None
    for b in folds:
        assert b.val_start < b.test_start and (b.end is None or b.test_start < b.end)
        if prev_test is not None:
            assert b.test_start > prev_test  # expanding window moves forward
        prev_test = b.test_start
        sp = split_ticker(dates, b, 30, 5, 5)
        assert_no_overlap(sp.train, sp.val, 30, 5, 5)
        assert_no_overlap(sp.val, sp.test, 30, 5, 5)
        if b.end is not None:  # test labels stay inside the fold
            assert (dates[sp.test + 5] < b.end).all()
    assert folds[-1].end is None


def test_bad_split_arguments():
    with pytest.raises(ValueError, match="summing to 1"):
        chronological_boundaries(pd.bdate_range("2001-01-01", periods=100), (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="too little training history"):
        walk_forward_boundaries(pd.bdate_range("2001-01-01", periods=100), n_folds=9, test_fraction=0.1)
