"""Ray Train on the streaming path: workers stream their shard of the training windows from a partitioned feature
dataset through Ray Data (stocktrend.platform.data.stream), validate on their own tickers, and the driver tests on the
streamed test segment: the same numbers as the in-memory path gives for the same weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.stream import open_streamed
from stocktrend.platform.data.synthetic import planted_cross_section_universe
from stocktrend.platform.training.distributed import RayConfig, fit_ray
from stocktrend.platform.training import local
from tests.ray import helpers

ray.cloudpickle.register_pickle_by_value(helpers)
pytestmark = pytest.mark.slow
TINY = local.TrainConfig(preset="tiny", model="lstm", epochs=2, batch_size=64, accumulate=1, lr=1e-3, max_lr=1e-2,
                   progress=False, monitor="val_rank_ic", monitor_mode="max", patience=3)


def test_two_workers_stream_their_shards_and_score_as_the_in_memory_path(ray_local, tmp_path):
    universe = planted_cross_section_universe(700, 6, seed=3)
    cfg = DataConfig(tickers=(), top_k=12, sequence_length=10, label_kind="excess", features="short")
    streamed = open_streamed(universe, cfg, tmp_path / "cache")
    prepared = build_dataset(cfg, universe=universe, cache_dir=tmp_path / "cache")
    rcfg = RayConfig(workers=2, storage=str(tmp_path / "s"), run_name="stream", max_failures=0)
    counts = tmp_path / "counts"
    counts.mkdir()
    result, info = fit_ray(streamed, TINY, local.model_config_for(streamed, "tiny", "lstm"), rcfg,
                           extra_callbacks=[helpers.CountRows(str(counts))])
    assert result.epochs_run == 2 and Path(info.best_checkpoint_dir, "checkpoint.ckpt").is_file()
    # each worker reports where its blocks were read: on one machine, all on its own node; every ticker with
    # training samples read once per epoch, by one worker (no worker reads the whole panel twice over)
    reads = info.reads
    assert [w["rank"] for w in reads.workers] == [0, 1], reads
    training = [t for t in streamed.tickers if len(streamed.plan.per_ticker[t].samples["train"])]
    assert reads.reread() == 0 and 0 < reads.blocks <= sum(reads.read_by_node().values()) <= 2 * len(training)
    assert reads.blocks == sum(w["partitions"] for w in reads.workers), reads  # no worker took a block twice
    assert reads.local == reads.blocks and len(reads.read) == 1, reads
    assert all(w["partitions"] > 0 for w in reads.workers), reads
    seen = [row["val_rank_ic"] for row in result.history]
    assert len(seen) == 2 and all(np.isfinite(seen))
    # every rank stepped on the same number of whole batches, together close to the oversampled training segment,
    # and on different windows
    per_rank = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in counts.iterdir()}
    assert sorted(per_rank) == ["rank0", "rank1"], per_rank
    total = streamed.plan.samples("train", balanced=True)
    assert total == len(prepared.samples["train"])  # oversampling brings the classes to the same counts
    for epoch in range(2):
        rows = [per_rank[r][epoch]["rows"] for r in ("rank0", "rank1")]
        assert rows[0] == rows[1] and rows[0] % TINY.batch_size == 0
        assert total - 2 * TINY.batch_size * 2 <= sum(rows) <= total
        assert per_rank["rank0"][epoch]["fp"] != per_rank["rank1"][epoch]["fp"]
    # the driver's streamed test segment scores the weights exactly as the in-memory test segment does
    expected = local.test_metrics_of(result.module, prepared, TINY)
    assert set(result.test_metrics) == set(expected)
    for k, v in expected.items():
        assert result.test_metrics[k] == pytest.approx(v, abs=1e-5), k


def test_streaming_refuses_more_workers_than_tickers(ray_local, tmp_path):
    universe = planted_cross_section_universe(500, 3, seed=1)
    cfg = DataConfig(tickers=(), top_k=8, sequence_length=10, label_kind="excess", features="short")
    streamed = open_streamed(universe, cfg, tmp_path / "cache")
    with pytest.raises(ValueError, match="3 ticker\\(s\\) with validation samples cannot feed 4 workers"):
        fit_ray(streamed, TINY, local.model_config_for(streamed, "tiny", "lstm"),
                replace(RayConfig(workers=4, storage=str(tmp_path / "s")), max_failures=0))


def test_train_job_streams_registers_and_the_checkpoint_predicts_as_trained(ray_local, planted_dir, tmp_path,
                                                                            monkeypatch):
    """The command's path (`stocktrend train --workers 2`, the default `--data-transport auto` choosing to stream: here
    by a memory share that no panel fits): partitioned features built from a user's directory, a streamed fit, a
    registered checkpoint whose drift reference and predictions are the model's."""
    import torch

    from stocktrend.platform.data.stream import build_streamed
    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import Predictor
    from stocktrend.platform.training.jobs import train_job
    from stocktrend.platform.data import transport
    from stocktrend.platform.data.stream import StreamedData
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(transport, "MEMORY_SHARE", 1e-9)
    cfg = DataConfig(tickers=(), data_dir=str(planted_dir), top_k=10, sequence_length=10, label_kind="excess",
                     features="short")
    rcfg = RayConfig(workers=2, storage=str(tmp_path / "s"), run_name="stream-job", max_failures=0,
                     data_transport="auto")
    out = train_job(cfg, replace(TINY, epochs=1), model_name="streamed", ray_config=rcfg)
    assert out.transport.startswith("stream: streamed by ticker (3 tickers") and isinstance(out.data, StreamedData)
    assert "read on 1 node(s) (0 read twice)" in out.transport and "100% read on the worker's own node" in \
        out.transport, out.transport
    assert out.version == 1 and out.fit.epochs_run == 1
    assert len(list((tmp_path / "home" / "cache").glob("features-*.dataset/_manifest.json"))) == 1
    pred = Predictor.load(registry.download("streamed", "1")[0])
    assert pred.transforms.selected == out.data.transforms.selected
    assert set(pred.ckpt["reference"]["features"]) <= set(pred.transforms.input_names)
    assert pred.ckpt["reference"]["predictions"]["n"] > 0
    streamed = build_streamed(cfg)  # reused: the same plan
    tk = streamed.tickers[0]
    from stocktrend.platform.data.stream import ticker_windows
    windows = ticker_windows(streamed.panel, streamed.plan, tk, "test")["x"]
    with torch.no_grad():
        expected = torch.softmax(out.fit.module.model.eval()(torch.from_numpy(windows)), -1).numpy()
    np.testing.assert_allclose(pred.predict_proba(windows)[0], expected, rtol=1e-6, atol=1e-7)
