"""Panels of many tickers: cross-sectional evaluation finds a planted cross-sectional signal and nothing in random
walks; close-only tickers; the ticker's identity as an input; named universes."""

import logging

import numpy as np
import pandas as pd
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.sources import DataValidationError
from stocktrend.platform.data.synthetic import planted_cross_section_universe, random_walk_universe
from stocktrend.platform.evaluation.cross_section import daily_ic, evaluate_panel, long_short, newey_west_t
from stocktrend.platform.evaluation.metrics import baseline_probabilities, classification_scores
from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
from stocktrend.platform.training.local import TrainConfig, fit

QUICK = TrainConfig(preset="tiny", epochs=3, batch_size=256, accumulate=1, progress=False, lr=2e-3, max_lr=5e-3)


def _model_outputs(data):
    r = fit(data, QUICK, run_test=False)
    pred = Predictor(make_checkpoint(r.module.model, r.model_config, data))
    p, _ = pred.predict_proba(data.windows(data.samples["test"]))
    return {"model": p, **baseline_probabilities(data)}


@pytest.mark.slow
def test_planted_cross_sectional_signal_is_found():
    data = build_dataset(DataConfig(top_k=16, sequence_length=10),
                         universe=planted_cross_section_universe(1500, 8, seed=1), use_cache=False)
    res = evaluate_panel(data, _model_outputs(data))
    ic = res["ic"]["model"]
    assert ic["ic_mean"] > 0.1 and ic["ic_t"] > 3, ic
    assert ic["rank_ic_mean"] > 0.1 and ic["rank_ic_t"] > 3, ic
    assert res["long_short"]["model"].sharpe > 1
    assert np.isnan(res["ic"]["majority"]["ic_mean"])  # a constant score ranks nothing
    assert set(res["per_ticker"]["model"]) == set(data.tickers)


@pytest.mark.slow
def test_random_walk_panel_has_no_cross_sectional_signal():
    data = build_dataset(DataConfig(top_k=16, sequence_length=10),
                         universe=random_walk_universe(3000, n_tickers=24, seed=2), use_cache=False)
    outs = _model_outputs(data)
    res = evaluate_panel(data, outs)
    ic = res["ic"]["model"]
    assert abs(ic["ic_mean"]) < 0.05 and abs(ic["rank_ic_mean"]) < 0.05, ic
    auc = classification_scores(data.targets(data.samples["test"]), outs["model"], ["Bajista", "Alcista"], 0)["auc"]
    assert abs(auc - 0.5) < 0.05


def test_ic_arithmetic_and_newey_west():
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=4).to_numpy(), 3)
    frame = pd.DataFrame({"date": dates, "ticker": ["A", "B", "C"] * 4, "score": [1, 2, 3] * 4,
                          "fwd": [0.01, 0.02, 0.03, 0.03, 0.02, 0.01, 0.01, 0.02, 0.03, 0.01, 0.01, 0.01],
                          "ret1": [0.01, 0.0, -0.01] * 4})
    ic = daily_ic(frame)
    assert list(ic["rank_ic"]) == pytest.approx([1.0, -1.0, 1.0])  # the last day's returns are constant: left out
    x = np.random.default_rng(0).normal(0.1, 1, 400)
    plain = x.mean() / (x.std(ddof=0) / np.sqrt(len(x)))
    assert newey_west_t(x, 0) == pytest.approx(plain)
    ar = np.repeat(x[:100], 4)  # each value held 4 days: overlapping returns inflate the naive t by ~2
    assert newey_west_t(ar, 3) < 0.7 * (ar.mean() / (ar.std() / np.sqrt(len(ar))))
    ls, hold = long_short(frame, cost_bps=0.0)
    # long C (score 3, return -1%), short A (+1%) every day: -2% a day
    assert ls.annual_return < 0 and hold.exposure == 1.0


def test_close_only_ticker_builds_without_range_and_volume_features(tmp_path, caplog):
    u = random_walk_universe(900, n_tickers=2, seed=3)
    (tmp_path / "market").mkdir()
    for name, frame in u.tickers.items():
        frame = frame if name == "RW0" else frame[["close"]]
        frame.rename_axis("Date").reset_index().to_csv(tmp_path / f"{name}.csv", index=False)
    u.market["MKT"].rename_axis("Date").reset_index().to_csv(tmp_path / "market" / "MKT.csv", index=False)
    with caplog.at_level(logging.INFO):
        data = build_dataset(DataConfig(data_dir=str(tmp_path), top_k=0), use_cache=False)
    names = data.transforms.feature_names
    assert "ret_5" in names and "rsi_14" in names and "vol_20" in names
    for gone in ("atr_14", "stoch_k_14", "body", "gap", "obv_z_20", "volume_z_20", "parkinson_vol_10"):
        assert gone not in names
    assert any("RW1: no open/high/low / volume column(s)" in r.message and "atr_14" in r.message
               for r in caplog.records)
    # a partial range is a clear error, not a silent close-only series
    u.tickers["RW0"].drop(columns=["low"]).rename_axis("Date").reset_index().to_csv(tmp_path / "RW0.csv", index=False)
    with pytest.raises(DataValidationError, match="missing required column 'low'"):
        build_dataset(DataConfig(data_dir=str(tmp_path)), use_cache=False)


def test_ticker_identity_is_an_optional_one_hot_input():
    u = random_walk_universe(900, n_tickers=3, seed=4)
    plain = build_dataset(DataConfig(top_k=10, sequence_length=10), universe=u, use_cache=False)
    data = build_dataset(DataConfig(top_k=10, sequence_length=10, ticker_id=True), universe=u, use_cache=False)
    assert data.n_features == plain.n_features + 3
    assert data.transforms.input_names[-3:] == ["ticker=RW0", "ticker=RW1", "ticker=RW2"]
    rows = data.samples["test"]
    onehot = data.x[rows][:, -3:]
    assert (onehot.sum(1) == 1).all()
    assert (onehot.argmax(1) == np.searchsorted(data.offsets, rows, side="right") - 1).all()
    np.testing.assert_array_equal(data.x[:, :-3], plain.x)  # the features themselves are unchanged
    # serving the same rows from raw prices needs the ticker's name, and only a known one
    r = fit(data, QUICK, run_test=False)
    pred = Predictor(make_checkpoint(r.module.model, r.model_config, data))
    market = u.market
    x = pred.features_from_prices(u.tickers["RW1"], market, ticker="RW1")
    assert (x[:, -3:] == [0, 1, 0]).all()
    with pytest.raises(DataValidationError, match="unknown ticker"):
        pred.features_from_prices(u.tickers["RW1"], market, ticker="ZZZ")
    with pytest.raises(DataValidationError, match="ticker's identity"):
        pred.features_from_prices(u.tickers["RW1"], market)


def test_named_universes(monkeypatch):
    from stocktrend.platform.data import universes
    names = {u["name"]: u for u in universes.describe()}
    assert {"msft", "tech", "sp20"} <= set(names)
    assert names["tech"]["tickers"] == "AAPL, IBM, MSFT, GOOG" and "public domain" in names["tech"]["licence"]
    tech = universes.load_named("tech", ["AAPL"])
    aapl = tech.tickers["AAPL"]
    # split-adjusted: AAPL's 2:1 split of 2005-02-28 is not a -50% day in the adjusted prices (it is in the raw ones)
    from bokeh_sampledata import stocks
    raw = stocks.data[stocks.data["ticker"] == "AAPL"].set_index("date")["close"]
    day = pd.Timestamp("2005-02-28")
    assert raw.pct_change().loc[day] < -0.4
    assert abs(aapl["close"].pct_change().loc[day]) < 0.05
    assert set(tech.market) == {"SP500", "NASDAQ"}
    with pytest.raises(DataValidationError, match="unknown ticker.*available: AAPL, IBM, MSFT, GOOG"):
        universes.load_named("tech", ["TSLA"])
    with pytest.raises(DataValidationError, match="unknown universe 'nope'"):
        universes.load_named("nope")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DataValidationError, match=r"stocktrend\[sp20\]"):
        universes.load_named("sp20")


def test_sp20_reader_on_a_file_of_the_same_layout(tmp_path):
    from stocktrend.platform.data.universes import read_sp20
    dates = pd.bdate_range("2001-01-01", periods=5)
    pd.DataFrame({"Date": dates, "AAPL": [1.0, 1.1, 1.2, 1.1, 1.3], "KO": [5.0, None, 5.1, 5.2, 5.3]}).to_csv(
        tmp_path / "sp.csv.gz", index=False)
    out = read_sp20(tmp_path / "sp.csv.gz", ["AAPL", "KO"])
    assert list(out["AAPL"].columns) == ["close"] and len(out["KO"]) == 4


@pytest.mark.slow
def test_data_build_cli_on_the_tech_universe(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    cli = str(Path(sys.executable).parent / "stocktrend")
    env = {**os.environ, "STOCKTREND_HOME": str(tmp_path)}
    listing = subprocess.run([cli, "data", "universes"], env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "tech" in listing.stdout and "Quandl WIKI" in listing.stdout
    us29 = listing.stdout[listing.stdout.index("\nus29\n"):]
    assert "defaults: 5-day windows, top 8 features, split 0.8/0.1/0.1, label excess" in us29.split("\nsp500_2010\n")[0]
    assert "label binary" in listing.stdout.split("\ntech\n")[0]  # msft: one ticker, the raw direction
    r = subprocess.run([cli, "data", "build", "--universe", "tech"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "AAPL, IBM, MSFT, GOOG" in out
    assert "label        : excess, horizon 5 days" in out  # --label auto on a panel of 4: against the day's mean
    for t, first in (("AAPL", "2001-02-27"), ("GOOG", "2005-08-16")):  # each after its own 250-day warm-up
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(t + " "))
        assert first in line and "2013-03-01" in line and "purged" in line and "embargoed" in line
    bad = subprocess.run([cli, "data", "build", "--universe", "nasdaq100"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "unknown universe 'nasdaq100'" in bad.stderr and "Traceback" not in bad.stderr
