import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.sources import (ColumnAliases, DataValidationError, load_directory, load_embedded,
                                         load_price_file)
from stocktrend.platform.data.synthetic import business_days, ohlcv_from_log_returns


def good_frame(n=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = ohlcv_from_log_returns(rng.normal(0, 0.01, n), business_days(n), rng)
    return f.reset_index().rename(columns={"date": "Date", "open": "Open", "high": "High", "low": "Low",
                                           "close": "Close", "volume": "Volume"})


def write(tmp_path, frame, name="T.csv"):
    p = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(p, index=False)
    else:
        frame.to_csv(p, index=False)
    return p


def test_good_csv_and_parquet_load_the_same(tmp_path):
    f = good_frame()
    a = load_price_file(write(tmp_path, f, "A.csv"))
    b = load_price_file(write(tmp_path, f, "B.parquet"))
    assert list(a.columns) == ["open", "high", "low", "close", "volume"]
    assert a.index.is_monotonic_increasing and a.index.is_unique
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy())


def test_bloomberg_aliases(tmp_path):
    f = good_frame().rename(columns={"Date": "Dates", "Open": "PX_OPEN", "High": "PX_HIGH", "Low": "PX_LOW",
                                     "Close": "PX_LAST", "Volume": "PX_VOLUME"})
    out = load_price_file(write(tmp_path, f))
    np.testing.assert_allclose(out["close"].to_numpy(), f["PX_LAST"].to_numpy())


def test_custom_alias_override(tmp_path):
    f = good_frame().rename(columns={"Close": "Last Trade"})
    with pytest.raises(DataValidationError, match="missing required column 'close'"):
        load_price_file(write(tmp_path, f))
    out = load_price_file(tmp_path / "T.csv", ColumnAliases.with_overrides({"close": "Last Trade"}))
    assert out["close"].iloc[0] == pytest.approx(f["Last Trade"].iloc[0])


def _corrupt(kind):
    f = good_frame().astype({"Close": object, "Date": object})
    if kind == "missing_column":
        return f.drop(columns=["Low"]), r"T\.csv: missing required column 'low'"
    if kind == "bad_date":
        f.loc[7, "Date"] = "31/31/2020"
        return f, r"T\.csv: column 'Date' row 8: unparseable date '31/31/2020'"
    if kind == "non_numeric":
        f.loc[11, "Close"] = "12,5x"
        return f, r"T\.csv: column 'Close' row 12: non-numeric value '12,5x'"
    if kind == "nan":
        f.loc[3, "Close"] = np.nan
        return f, r"T\.csv: column 'Close' row 4: NaN/missing value"
    if kind == "inf":
        f.loc[5, "Volume"] = np.inf
        return f, r"T\.csv: column 'Volume' row 6: infinite value"
    if kind == "non_positive":
        f.loc[9, "Close"] = -1.0
        return f, r"T\.csv: column 'Close' row 10: non-positive price -1.0"
    if kind == "high_below_low":
        f.loc[20, "High"] = f.loc[20, "Low"] * 0.5
        return f, r"T\.csv: row 21: High .* < Low"
    if kind == "duplicate_date":
        f.loc[30, "Date"] = f.loc[29, "Date"]
        return f, r"T\.csv: duplicate date .* with different values"
    raise AssertionError(kind)


BAD = ["missing_column", "bad_date", "non_numeric", "nan", "inf", "non_positive", "high_below_low", "duplicate_date"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_file_error_names_file_column_row(tmp_path, kind):
    frame, pattern = _corrupt(kind)
    with pytest.raises(DataValidationError, match=pattern):
        load_price_file(write(tmp_path, frame))


def test_unsorted_is_repaired_and_logged_or_refused_when_strict(tmp_path, caplog):
    f = good_frame()
    f.iloc[[3, 4]] = f.iloc[[4, 3]].to_numpy()
    p = write(tmp_path, f)
    with caplog.at_level(logging.WARNING):
        out = load_price_file(p)
    assert out.index.is_monotonic_increasing and len(out) == len(f)
    assert "sorted rows by date (1 row(s) were out of order)" in caplog.text
    with pytest.raises(DataValidationError, match=r"dates are not sorted: row 5 \(2000-01-06\) comes after 2000-01-07"):
        load_price_file(p, repair=False)


def test_exact_duplicate_rows_dropped_with_count(tmp_path, caplog):
    f = good_frame()
    f = pd.concat([f, f.iloc[[10, 11]]]).sort_values("Date", kind="stable")
    with caplog.at_level(logging.WARNING):
        out = load_price_file(write(tmp_path, f))
    assert len(out) == len(f) - 2
    assert "dropped 2 exact duplicate row(s)" in caplog.text


def test_unreadable_and_unsupported_files(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match=r"x\.parquet: cannot be read as PARQUET"):
        load_price_file(tmp_path / "x.parquet")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        load_price_file(tmp_path / "x.txt")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataValidationError, match=r"e\.csv: cannot be read"):
        load_price_file(tmp_path / "e.csv")


def test_directory_layout_market_indicators_and_unknown_ticker(tmp_path):
    write(tmp_path, good_frame(600, 1), "AAA.csv")
    write(tmp_path, good_frame(600, 2), "BBB.parquet")
    (tmp_path / "market").mkdir()
    write(tmp_path / "market", good_frame(600, 3)[["Date", "Close"]], "IDX.csv")
    (tmp_path / "indicators").mkdir()
    ind = good_frame(600, 4)[["Date"]].assign(VIX=np.linspace(10, 30, 600), RATE=np.linspace(-0.5, 2, 600))
    write(tmp_path / "indicators", ind, "macro.csv")
    u = load_directory(tmp_path)
    assert sorted(u.tickers) == ["AAA", "BBB"] and list(u.market) == ["IDX"]
    assert list(u.indicators["macro"].columns) == ["VIX", "RATE"]
    with pytest.raises(DataValidationError, match="unknown ticker.*ZZZ.*available: AAA, BBB"):
        load_directory(tmp_path, tickers=["ZZZ"])


def test_too_little_history_is_a_clear_error(tmp_path):
    write(tmp_path, good_frame(280), "SHORT.csv")
    with pytest.raises(DataValidationError, match=r"too little history.*SHORT \(\d+ rows\).*sequence_length \+ horizon"):
        build_dataset(DataConfig(tickers=(), data_dir=str(tmp_path)), use_cache=False)
    write(tmp_path, good_frame(200), "SHORT.csv")
    with pytest.raises(DataValidationError, match=r"too little history: no rows left after the \d+-day feature warm-up"):
        build_dataset(DataConfig(tickers=(), data_dir=str(tmp_path)), use_cache=False)


def test_embedded_universe_is_real_and_offline():
    u = load_embedded()
    msft = u.tickers["MSFT"]
    assert msft.index[0] == pd.Timestamp("1986-03-13") and msft.index[-1] == pd.Timestamp("2017-11-10")
    assert set(u.market) == {"SP500", "NASDAQ"}
    assert u.market["SP500"].index[0] == pd.Timestamp("1999-01-04")
    with pytest.raises(DataValidationError, match="unknown embedded ticker AAPL; available: MSFT, GOOG"):
        load_embedded(["AAPL"])


def test_cli_prints_error_not_traceback(tmp_path):
    frame, _ = _corrupt("nan")
    write(tmp_path, frame, "BAD.csv")
    proc = subprocess.run([sys.executable, "-m", "stocktrend", "data", "build", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "BAD.csv: column 'Close' row 4: NaN/missing value" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_read_audit_catches_an_uncut_load_inside_a_step(tmp_path, monkeypatch):
    """The replay's read audit can fail: a load made for a step without the step's cut, or one returning a later bar,
    is reported; cut loads and loads outside any step are not."""
    from stocktrend.platform.data.synthetic import random_walk_universe, write_directory
    from stocktrend.platform.data.universes import audit_step, audit_violations, load_universe
    data = write_directory(random_walk_universe(300, n_tickers=2, seed=3), tmp_path / "rw")
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("STOCKTREND_READ_AUDIT", str(audit))
    load_universe(data)  # outside any step (a report reading outcomes): not a step's load
    with audit_step("2000-06-01"):
        load_universe(data, as_of="2000-06-01")  # cut: fine
    assert audit_violations(audit) == ([], 1)
    with audit_step("2000-06-01"):
        load_universe(data)  # the bug the audit exists for: a step reading the whole data
        load_universe(data, as_of="2000-09-01")  # cut, but after the step's day
    bad, n = audit_violations(audit)
    assert n == 3 and len(bad) == 2, bad
    assert "uncut" in bad[0] and "cut at 2000-09-01" in bad[1]
