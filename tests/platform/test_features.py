import numpy as np
import pandas as pd
import pytest

from stocktrend.platform.data.features import FeatureConfig, build_features
from stocktrend.platform.data.synthetic import random_walk_universe


@pytest.fixture(scope="module")
def universe():
    u = random_walk_universe(1200, seed=3)
    ind = pd.DataFrame({"VIX": np.abs(np.random.default_rng(1).normal(20, 5, 1200)) + 5},
                       index=u.tickers["RW0"].index)
    u.indicators = {"vix": ind}
    return u


def _perturb_after(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    out = frame.copy()
    rng = np.random.default_rng(seed)
    # A factor per column and day, so ratios (range, candle shape) change too, not just the price level.
    for col in ("open", "high", "low", "close"):
        if col in out:
            out.iloc[t + 1:, out.columns.get_loc(col)] *= np.exp(rng.normal(0, 0.05, len(out) - t - 1))
    if "volume" in out:
        out.iloc[t + 1:, out.columns.get_loc("volume")] *= np.exp(rng.normal(0, 0.5, len(out) - t - 1))
    if "VIX" in out:
        out.iloc[t + 1:, out.columns.get_loc("VIX")] += rng.normal(0, 3, len(out) - t - 1)
    return out


@pytest.mark.parametrize("t", [400, 777, 1100])
def test_features_are_causal(universe, t):
    """Changing ticker, market and indicator values after day t leaves every feature at or before t unchanged."""
    base = build_features(universe.tickers["RW0"], universe.market, universe.indicators, name="RW0")
    ticker = _perturb_after(universe.tickers["RW0"], t, 1)
    market = {k: _perturb_after(v, t, 2) for k, v in universe.market.items()}
    ind = {k: _perturb_after(v, t, 3) for k, v in universe.indicators.items()}
    changed = build_features(ticker, market, ind, name="RW0")
    day_t = universe.tickers["RW0"].index[t]
    before = base.loc[:day_t]
    pd.testing.assert_frame_equal(before, changed.loc[:day_t], check_exact=True)
    # The perturbation really reaches the features after t (otherwise this test could not fail).
    after_diff = (base.loc[day_t:].iloc[1:] != changed.loc[day_t:].iloc[1:]).mean()
    calendar = ["dow_sin", "dow_cos", "month_sin", "month_cos", "week_sin", "week_cos", "day_of_month"]
    moved = after_diff.drop(calendar)
    assert moved.min() > 0.5, moved[moved <= 0.5]  # every price-based feature moves after t


def test_feature_count_and_families(universe):
    f = build_features(universe.tickers["RW0"], universe.market, universe.indicators)
    names = [c for c in f.columns if c != "close"]
    assert 100 <= len(names) <= 200
    for family in ("ret_5", "sma_ratio_200", "ema_ratio_12", "rsi_14", "macd_12_26", "bb_pos_20", "bb_width_20",
                   "atr_14", "obv_z_20", "volume_z_20", "vol_20", "mkt_beta_60", "mkt_corr_60", "vix_level",
                   "vix_chg_1", "dow_sin", "month_cos"):
        assert family in names, family
    values = f[names].to_numpy()
    assert values.dtype == np.float32 and np.isfinite(values).all()
    assert len(f) == len(universe.tickers["RW0"]) - (FeatureConfig().warmup - 1)


def test_feature_config_changes_the_cache_key():
    assert FeatureConfig().key() != FeatureConfig(rsi_windows=(14,)).key()
    assert FeatureConfig().key() == FeatureConfig().key()
