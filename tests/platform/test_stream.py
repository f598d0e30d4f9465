"""The streaming data path (stocktrend.platform.data.stream) against the in-memory one (dataset.prepare): the same
samples per segment (so the same purge, embargo and chronological split), the same labels, the same fitted
transforms and the same windows, for class, value and cross-sectional labels; the partitioned build's resumption and
its errors on damaged partitions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from stocktrend.platform.data.cache import load_or_build_panel
from stocktrend.platform.data.dataset import DataConfig, prepare
from stocktrend.platform.data.features import feature_set
from stocktrend.platform.data.sources import DataValidationError
from stocktrend.platform.data.partitioned import MANIFEST, PartitionedPanel, build_partitioned
from stocktrend.platform.data.stream import plan_stream, ticker_windows
from stocktrend.platform.data.stream_ingest import SegmentStream
from stocktrend.platform.data.synthetic import random_walk_universe

FCFG = feature_set("short")


@pytest.fixture(scope="module")
def universe():
    return random_walk_universe(420, n_tickers=5, seed=3)


@pytest.fixture(scope="module")
def both(universe, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    panel = load_or_build_panel(universe, FCFG, cache)
    part = build_partitioned(universe, FCFG, cache, n_jobs=1)
    return panel, part


def _rows_by_ticker(data, segment):
    rows = np.unique(data.samples[segment]) if segment == "train" else data.samples[segment]
    if segment == "train":
        rows = data.train_unbalanced
    out = {}
    for i, t in enumerate(data.tickers):
        a, b = data.offsets[i], data.offsets[i + 1]
        out[t] = np.sort(rows[(rows >= a) & (rows < b)] - a)
    return out


@pytest.mark.parametrize("label", ["binary", "ternary", "regression", "excess", "excess_regression", "rank"])
def test_streaming_plan_matches_the_in_memory_path(both, label):
    panel, part = both
    cfg = DataConfig(label_kind=label, sequence_length=10, top_k=8, features="short", oversample=False)
    data = prepare(panel, cfg)
    plan = plan_stream(part, cfg)
    assert plan.tickers == data.tickers
    for seg in ("train", "val", "test"):  # the same samples: purge, embargo and boundaries are the same
        expected = _rows_by_ticker(data, seg)
        for t in data.tickers:
            np.testing.assert_array_equal(np.sort(plan.per_ticker[t].samples[seg]), expected[t])
        assert plan.segment_dates[seg] == data.date_range(seg)
        assert plan.class_counts_by_segment[seg] == (data.class_counts(seg) if seg != "train" else
                                                     data.class_counts("train"))
    assert plan.transforms.selected == data.transforms.selected
    np.testing.assert_allclose(plan.transforms.mean, data.transforms.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plan.transforms.scale, data.transforms.scale, rtol=1e-9)
    np.testing.assert_allclose(plan.transforms.scores, data.transforms.scores, rtol=1e-6, atol=1e-9)
    if not data.kind.is_value:
        np.testing.assert_allclose(plan.class_weights(), data.class_weights(), rtol=1e-6)
    # the same windows and targets, ticker by ticker
    for i, t in enumerate(data.tickers[:2]):
        for seg in ("val", "test"):
            w = ticker_windows(part, plan, t, seg, with_return=True, with_day=True)
            rows = data.samples[seg][(data.samples[seg] >= data.offsets[i]) & (data.samples[seg] < data.offsets[i + 1])]
            np.testing.assert_array_equal(w["x"], data.windows(rows))
            np.testing.assert_array_equal(w["y"], data.y[rows])
            np.testing.assert_allclose(w["r"], data.target_value[rows].astype(np.float32))
            np.testing.assert_allclose(w["fwd"], data.forward_return[rows].astype(np.float32))


def test_streamed_oversampling_balances_classes_exactly(both):
    _, part = both
    cfg = DataConfig(label_kind="ternary", sequence_length=10, top_k=8, features="short", neutral_band=0.01)
    plan = plan_stream(part, cfg)
    counts = np.zeros(3)
    for t in plan.tickers:
        w = ticker_windows(part, plan, t, "train")
        counts += np.bincount(w["y"], minlength=3)
    assert plan.train_class_counts.min() < plan.train_class_counts.max()  # something to balance
    # every class at the majority's count, as RandomOverSampler leaves it, and the epoch's length known in advance
    assert counts.tolist() == [plan.train_class_counts.max()] * 3
    assert plan.samples("train", balanced=True) == counts.sum()
    # deterministic for a seed
    again = ticker_windows(part, plan, plan.tickers[0], "train")
    np.testing.assert_array_equal(again["y"], ticker_windows(part, plan, plan.tickers[0], "train")["y"])


def test_segment_stream_batches_cover_every_sample_once(both):
    _, part = both
    cfg = DataConfig(label_kind="excess", sequence_length=10, top_k=8, features="short")
    plan = plan_stream(part, cfg)
    batches = list(SegmentStream(part, plan, "val", batch_size=64, with_day=True))
    assert sum(len(b[1]) for b in batches) == plan.samples("val")
    assert all(len(b) == 3 and b[0].shape[1:] == (10, 8) and b[2].shape[1] == 2 for b in batches)
    assert all(len(b[1]) == 64 for b in batches[:-1])


def test_partitioned_build_resumes_and_names_damaged_partitions(universe, tmp_path):
    panel = build_partitioned(universe, FCFG, tmp_path)
    assert not panel.cache_hit and (panel.root / MANIFEST).is_file()
    assert build_partitioned(universe, FCFG, tmp_path).cache_hit
    victim = panel.tickers[1]
    path = panel.path_of(victim)
    # an interrupted build: no manifest, one partition corrupt -> recomputed, the others kept
    (panel.root / MANIFEST).unlink()
    kept = {t: panel.path_of(t).stat().st_mtime_ns for t in panel.tickers if t != victim}
    path.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match="not a finished partitioned"):
        PartitionedPanel.open(panel.root)
    again = build_partitioned(universe, FCFG, tmp_path)
    assert again.tickers == panel.tickers
    assert {t: again.path_of(t).stat().st_mtime_ns for t in kept} == kept
    again.read(victim)
    # a partition damaged after the build, one missing, one whose schema lost a column: one line each, naming it
    path.write_bytes(b"garbage")
    with pytest.raises(DataValidationError, match=f"ticker {victim} .*cannot be read.*data build --partitioned"):
        again.read(victim)
    path.unlink()
    with pytest.raises(DataValidationError, match=f"ticker {victim} is missing"):
        again.read(victim)
    # the remedy the message gives: the same build recomputes the missing partition only
    kept = {t: again.path_of(t).stat().st_mtime_ns for t in again.tickers if t != victim}
    fixed = build_partitioned(universe, FCFG, tmp_path)
    assert len(fixed.read(victim)) == panel._by_ticker()[victim].rows
    assert {t: fixed.path_of(t).stat().st_mtime_ns for t in kept} == kept
    other = again.tickers[2]
    frame = again.read(other)
    frame.drop(columns=[again.feature_names[0]]).to_parquet(again.path_of(other))
    with pytest.raises(DataValidationError, match=f"ticker {other} .*columns"):
        again.read(other, again.feature_names)
    m = json.loads((again.root / MANIFEST).read_text())
    assert [p["ticker"] for p in m["partitions"]] == panel.tickers


def test_streaming_refuses_what_it_cannot_do(both):
    _, part = both
    with pytest.raises(DataValidationError, match="ticker-id"):
        plan_stream(part, DataConfig(features="short", ticker_id=True))
    with pytest.raises(DataValidationError, match="no samples|too little history"):
        plan_stream(part, replace(DataConfig(features="short"), sequence_length=300))


def test_shuffled_batches_cut_every_window_once_and_step_exactly_n_times(both):
    import torch

    from stocktrend.platform.data.stream import cut_windows, ticker_block
    from stocktrend.platform.data.stream_ingest import shuffled_batches
    _, part = both
    cfg = DataConfig(label_kind="excess", sequence_length=10, top_k=8, features="short", oversample=False)
    plan = plan_stream(part, cfg)
    blocks = [ticker_block(part, plan, t, "train") for t in plan.tickers]
    total = sum(len(b["pos"]) for b in blocks)
    n = total // 32
    batches = list(shuffled_batches(iter(blocks), 10, 32, n, pool=300, seed=1))
    assert len(batches) == n and all(b[0].shape == (32, 10, 8) for b in batches)
    # every window seen is a real window of the data, none twice (the stream held enough for n batches)
    every = torch.from_numpy(np.concatenate([cut_windows(b["x"], b["pos"], 10) for b in blocks]))
    seen = torch.cat([b[0] for b in batches])
    keys = {tuple(w[-1].tolist()) + (float(w[0, 0]),) for w in every}
    got = [tuple(w[-1].tolist()) + (float(w[0, 0]),) for w in seen]
    assert set(got) <= keys and len(set(got)) == len(got)
    # batches mix tickers: the first batch's windows come from more than one ticker's block
    first = {tuple(w[-1].tolist()) for w in batches[0][0]}
    owners = {i for i, b in enumerate(blocks) for w in cut_windows(b["x"], b["pos"], 10)
              if tuple(w[-1].tolist()) in first}
    assert len(owners) > 1
    # a short stream is topped up to exactly n batches (DDP ranks must step together)
    short = list(shuffled_batches(iter(blocks[:1]), 10, 32, n, pool=300, seed=1))
    assert len(short) == n and all(len(b[1]) == 32 for b in short)
    # nothing at all and nothing to fall back on: an error, not a rank that never steps
    with pytest.raises(RuntimeError, match="no training window"):
        list(shuffled_batches(iter([]), 10, 32, 2))
    # with the previous epoch's pool to fall back on, an empty epoch still steps n times
    state = {}
    list(shuffled_batches(iter(blocks[:2]), 10, 32, 3, state=state))
    assert len(list(shuffled_batches(iter([]), 10, 32, 3, state=state))) == 3


def test_auto_transport_reads_a_containers_memory_limit(monkeypatch):
    """Inside a container the host's free memory is not this process's: a cgroup limit of 3 GB with 1 GB used leaves
    2 GB, whatever the host has (Ray's own cgroup reader, v1 and v2)."""
    from types import SimpleNamespace

    import psutil
    from ray._private import utils as ray_utils

    from stocktrend.platform.data import transport
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=16 * 2**30))
    monkeypatch.setattr(ray_utils, "get_cgroup_mem_stats", lambda: (1 * 2**30, 3 * 2**30))
    assert transport.available_memory() == 2 * 2**30
    monkeypatch.setattr(ray_utils, "get_cgroup_mem_stats", lambda: (1 * 2**30, 64 * 2**30))  # limit above the host's
    assert transport.available_memory() == 16 * 2**30
    monkeypatch.setattr(ray_utils, "get_cgroup_mem_stats", lambda: None)  # no cgroup: the host's figure
    assert transport.available_memory() == 16 * 2**30


def test_auto_transport_keeps_the_panel_in_memory_while_it_fits_half_the_available_memory(universe, both):
    """`--data-transport auto`: the estimate counts the features the panel really has; a fine-tune stays in memory."""
    from stocktrend.platform.data import transport
    panel, _ = both
    assert transport.feature_count(universe, FCFG) == len(panel.feature_names)
    days = sum(len(f) for f in universe.tickers.values())
    need = transport.in_memory_estimate(days, len(panel.feature_names))
    assert need == pytest.approx(transport.BASE_BYTES + days * len(panel.feature_names) * transport.BYTES_PER_VALUE)
    fits = transport.choose(universe, FCFG, available_bytes=2 * need)
    assert fits.transport == "object-store" and "5 tickers" in fits.reason and f"{days:,} ticker-days" in fits.reason
    over = transport.choose(universe, FCFG, available_bytes=2 * need - 1)
    assert over.transport == "stream" and over.reason.startswith("streamed by ticker")
    assert transport.choose(universe, FCFG, available_bytes=1, finetune=True).transport == "object-store"
    one_hot = transport.choose(universe, FCFG, available_bytes=1, ticker_id=True)  # the stream plan has no one-hot
    assert one_hot.transport == "object-store" and one_hot.estimate_bytes == pytest.approx(
        transport.in_memory_estimate(days, len(panel.feature_names) + 5))
