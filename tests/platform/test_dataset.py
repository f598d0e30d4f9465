import numpy as np
import pandas as pd
import pytest
import torch

from stocktrend.platform.data import cache
from stocktrend.platform.data.cache import FeaturePanel, load_or_build_panel
from stocktrend.platform.data.datamodule import StockDataModule
from stocktrend.platform.data.dataset import DataConfig, FittedTransforms, build_dataset, prepare
from stocktrend.platform.data.synthetic import random_walk_universe


@pytest.fixture(scope="module")
def panel():
    return load_or_build_panel(random_walk_universe(1500, n_tickers=2, seed=5), use_cache=False)


def test_transforms_fitted_on_training_rows_only(panel):
    cfg = DataConfig(tickers=(), top_k=20)
    data = prepare(panel, cfg)
    # Wreck every feature value after the last training input day: the fitted transforms must not move.
    last_train_day = data.dates[data.train_unbalanced].max()
    late = panel.meta["date"].to_numpy() > last_train_day
    values = panel.values.copy(order="K")
    values[late] = values[late] * 7 + 3
    other = prepare(FeaturePanel(panel.meta, values, panel.feature_names, "x", "x"), cfg)
    assert other.transforms.selected == data.transforms.selected
    np.testing.assert_array_equal(other.transforms.mean, data.transforms.mean)
    np.testing.assert_array_equal(other.transforms.scale, data.transforms.scale)
    # ...while the same change before the boundary does move them (the check above could fail).
    values2 = panel.values.copy(order="K")
    values2[~late] = values2[~late] * 7 + 3
    moved = prepare(FeaturePanel(panel.meta, values2, panel.feature_names, "x", "x"), cfg)
    assert not np.allclose(moved.transforms.mean, data.transforms.mean)
    # Training rows are standardised by the training statistics.
    train_rows = np.concatenate([np.arange(data.offsets[i], r.max() + 1)
                                 for i, r in enumerate(np.split(data.train_unbalanced,
                                                                np.searchsorted(data.train_unbalanced,
                                                                                data.offsets[1:-1])))])
    np.testing.assert_allclose(data.x[train_rows].mean(0), 0, atol=1e-4)


def test_oversampling_only_on_train(panel):
    data = prepare(panel, DataConfig(tickers=()))
    counts = data.class_counts("train")
    assert counts["Bajista"] == counts["Alcista"]
    assert len(data.samples["train"]) > len(data.train_unbalanced)
    assert set(data.samples["train"]) == set(data.train_unbalanced)
    for seg in ("val", "test"):
        assert len(np.unique(data.samples[seg])) == len(data.samples[seg])
    off = prepare(panel, DataConfig(tickers=(), oversample=False))
    np.testing.assert_array_equal(off.samples["train"], off.train_unbalanced)
    weights = data.class_weights()
    raw = np.bincount(data.y[data.train_unbalanced], minlength=2)
    assert (weights[raw.argmin()] > weights[raw.argmax()]) or raw[0] == raw[1]


def test_windows_are_views_that_never_cross_tickers(panel):
    data = prepare(panel, DataConfig(tickers=(), sequence_length=15))
    view = data.window_view()
    assert np.shares_memory(view, data.x) and view.shape[1:] == (15, data.n_features)
    ticker_of_row = np.searchsorted(data.offsets, np.arange(len(data.x)), side="right") - 1
    for seg, rows in data.samples.items():
        starts = rows - 14
        assert (ticker_of_row[starts] == ticker_of_row[rows]).all(), seg
    r = data.samples["test"][7]
    np.testing.assert_array_equal(data.windows(np.array([r]))[0], data.x[r - 14: r + 1])
    ds = StockDataModule(data, batch_size=8).datasets["train"]
    xb, yb = ds[3]
    row = ds.rows[3]
    assert xb.dtype == torch.float32 and xb.shape == (15, data.n_features)
    np.testing.assert_array_equal(xb.numpy(), data.x[row - 14: row + 1])
    assert np.shares_memory(xb.numpy(), data.x)  # lazily sliced, not copied
    assert int(yb) == data.y[row]


def test_datamodule_loaders(panel):
    data = prepare(panel, DataConfig(tickers=(), sequence_length=10, top_k=8))
    dm = StockDataModule(data, batch_size=16)
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (16, 10, 8) and yb.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.test_dataloader()) == len(data.samples["test"])


def test_transforms_round_trip_is_plain_data(panel):
    data = prepare(panel, DataConfig(tickers=(), top_k=12))
    d = data.transforms.to_dict()
    assert all(isinstance(v, list) for v in d.values())
    back = FittedTransforms.from_dict(d)
    frame = panel.frame()[panel.feature_names]
    np.testing.assert_array_equal(back.transform(frame), data.transforms.transform(panel.values))


def test_label_kinds(panel):
    ter = prepare(panel, DataConfig(tickers=(), label_kind="ternary", neutral_band=0.01))
    assert set(ter.class_counts("test")) == {"Bajista", "Neutral", "Alcista"}
    reg = prepare(panel, DataConfig(tickers=(), label_kind="regression"))
    rows = reg.samples["test"]
    np.testing.assert_allclose(reg.y[rows], reg.forward_return[rows].astype(np.float32))
    assert len(reg.samples["train"]) == len(reg.train_unbalanced)  # no oversampling for regression


def test_sequence_length_change_hits_the_cache(tmp_path):
    u = random_walk_universe(900, seed=9)
    before = cache.COMPUTE_COUNT["tickers"]
    first = build_dataset(DataConfig(tickers=(), sequence_length=30), universe=u, cache_dir=tmp_path)
    assert not first.panel.cache_hit and cache.COMPUTE_COUNT["tickers"] == before + 1
    for L in (10, 45):
        again = build_dataset(DataConfig(tickers=(), sequence_length=L, horizon=3), universe=u, cache_dir=tmp_path)
        assert again.panel.cache_hit and again.window_view().shape[1] == L
    assert cache.COMPUTE_COUNT["tickers"] == before + 1
    assert [p.name for p in tmp_path.iterdir()] == [first.panel.path.name]  # no temp files left behind
    pd.testing.assert_frame_equal(again.panel.meta, first.panel.meta)
    np.testing.assert_array_equal(again.panel.values, first.panel.values)
    # Different data -> different key -> recomputed.
    other = build_dataset(DataConfig(tickers=()), universe=random_walk_universe(900, seed=10), cache_dir=tmp_path)
    assert not other.panel.cache_hit and other.panel.cache_key != first.panel.cache_key


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    u = random_walk_universe(700, seed=2)
    first = build_dataset(DataConfig(tickers=()), universe=u, cache_dir=tmp_path)
    first.panel.path.write_bytes(b"garbage")
    again = build_dataset(DataConfig(tickers=()), universe=u, cache_dir=tmp_path)
    assert not again.panel.cache_hit
    assert build_dataset(DataConfig(tickers=()), universe=u, cache_dir=tmp_path).panel.cache_hit


def test_an_interrupted_feature_build_keeps_finished_tickers_and_resumes(tmp_path, monkeypatch, caplog):
    """Issue 41: each ticker's features are written as they are computed; a build that fails on one ticker names it,
    keeps the others, writes no panel file, and the next build computes only what is missing (same panel as a build
    from scratch)."""
    import logging

    from stocktrend.platform.data.sources import DataValidationError
    u = random_walk_universe(700, n_tickers=6, seed=11)
    real = cache.build_features

    def broken(frame, market, indicators, cfg, name=None):
        if name == "RW3":
            raise FloatingPointError("disk full, say")
        return real(frame, market, indicators, cfg, name=name)
    monkeypatch.setattr(cache, "build_features", broken)
    with pytest.raises(DataValidationError, match="features of ticker RW3 failed: FloatingPointError"):
        load_or_build_panel(u, cache_dir=tmp_path)
    parts = next(tmp_path.glob("features-*.parts"))
    assert sorted(p.name for p in parts.iterdir()) == ["RW0.parquet", "RW1.parquet", "RW2.parquet"]
    assert not list(tmp_path.glob("features-*.parquet"))  # no panel file from a failed build
    monkeypatch.setattr(cache, "build_features", real)
    before = cache.COMPUTE_COUNT["tickers"]
    with caplog.at_level(logging.INFO, logger="stocktrend.platform.data.cache"):
        panel = load_or_build_panel(u, cache_dir=tmp_path)
    assert cache.COMPUTE_COUNT["tickers"] == before + 3
    assert "3 of 6 ticker(s) kept from an interrupted build" in caplog.text
    assert not parts.exists() and panel.path.is_file()
    fresh = load_or_build_panel(u, use_cache=False)
    pd.testing.assert_frame_equal(panel.meta, fresh.meta)
    np.testing.assert_array_equal(panel.values, fresh.values)
    assert panel.feature_names == fresh.feature_names


@pytest.mark.slow
def test_a_killed_data_build_resumes_where_it_stopped(tmp_path):
    """`stocktrend data build --jobs 2`, SIGKILLed once a few tickers are written: no panel file, the finished tickers
    kept; the same command then computes only the rest and removes the per-ticker files."""
    import os
    import signal
    import subprocess
    import time

    from stocktrend.platform.data.synthetic import write_directory
    from tests.cli import CLI
    data = write_directory(random_walk_universe(2500, n_tickers=40, seed=12), tmp_path / "data")
    env = {**os.environ, "STOCKTREND_HOME": str(tmp_path / "home")}
    cmd = [CLI, "data", "build", "--data", data, "--jobs", "2", "--top-k", "8"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cache_dir = tmp_path / "home" / "cache"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cache_dir.glob("features-*.parts/*.parquet"))) < 3:
        assert p.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    kept = list(cache_dir.glob("features-*.parts/*.parquet"))
    assert 3 <= len(kept) < 40 and not list(cache_dir.glob("features-*.parquet"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    logs = "".join(f.read_text() for f in (tmp_path / "home" / "logs").glob("data-*.log")) + r.stdout + r.stderr
    kept_line = next(ln for ln in logs.splitlines() if "kept from an interrupted build" in ln)
    assert f"{len(kept)} of 40 ticker(s) kept" in kept_line, kept_line
    assert len(list(cache_dir.glob("features-*.parquet"))) == 1 and not list(cache_dir.glob("features-*.parts"))
