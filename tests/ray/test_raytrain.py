"""Ray Train with real Ray: 2 workers, storage + MLflow, fault tolerance, two nodes, and `ray job submit`."""

import json
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.registry.checkpoint import Predictor
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.training.jobs import train_job
from stocktrend.platform.training.distributed import DistributedTrainingError, RayConfig, fit_ray
from stocktrend.platform.data.synthetic import planted_cross_section_universe, planted_signal_universe
from stocktrend.platform.training.local import TrainConfig, model_config_for
from tests.ray import helpers
from tests.ray.local_head import local_head, submit

ray.cloudpickle.register_pickle_by_value(helpers)
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = TrainConfig(preset="tiny", epochs=3, batch_size=64, accumulate=1, lr=1e-3, max_lr=1e-2, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_dataset(DataConfig(tickers=(), top_k=12, sequence_length=16),
                         universe=planted_signal_universe(900, seed=4),
                         cache_dir=tmp_path_factory.mktemp("cache"))


def test_two_workers_train_register_and_predict_the_same(ray_local, data, tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / "home"))
    storage = tmp_path / "storage"
    rcfg = RayConfig(workers=2, storage=str(storage), run_name="two-workers", max_failures=0)
    out = train_job(data.config, TINY, model_name="ray-model", data=data, ray_config=rcfg)
    assert out.version == 1 and out.fit.epochs_run == 3
    ckpts = sorted((storage / "two-workers").glob("checkpoint_*/checkpoint.ckpt"))
    assert 1 <= len(ckpts) <= rcfg.keep_checkpoints
    versions = registry.list_versions("ray-model")
    assert versions[0]["metrics"]["test_acc"]
    run = registry.client().get_run(versions[0]["run_id"])
    assert run.data.params["ray.workers"] == "2"
    assert len(registry.client().get_metric_history(run.info.run_id, "val_loss")) == 3
    # The registered checkpoint predicts exactly what the trained module predicts.
    path, _ = registry.download("ray-model", "1")
    pred = Predictor.load(path)
    windows = data.windows(data.samples["test"])
    import torch
    with torch.no_grad():
        expected = torch.softmax(out.fit.module.model.eval()(torch.from_numpy(windows)), -1).numpy()
    np.testing.assert_array_equal(pred.predict_proba(windows)[0], expected)


def test_shared_path_transport_on_a_panel_monitoring_val_rank_ic(ray_local, tmp_path):
    """Workers read the feature cache from shared storage; the daily rank IC is gathered across the two workers'
    validation shards and picks the checkpoint."""
    panel = build_dataset(DataConfig(tickers=(), top_k=12, sequence_length=10, label_kind="excess"),
                          universe=planted_cross_section_universe(700, 6, seed=3), cache_dir=tmp_path / "cache")
    rcfg = RayConfig(workers=2, storage=str(tmp_path), run_name="shared", data_transport="shared-path")
    tcfg = replace(TINY, monitor="val_rank_ic", monitor_mode="max", patience=3)
    result, info = fit_ray(panel, tcfg, model_config_for(panel, "tiny"), rcfg, run_test=False)
    assert result.epochs_run == 3 and Path(info.best_checkpoint_dir, "checkpoint.ckpt").is_file()
    seen = [row["val_rank_ic"] for row in result.history]
    assert len(seen) == 3 and all(np.isfinite(seen))
    assert result.best_score == pytest.approx(max(seen), abs=1e-6)


@pytest.mark.parametrize("halflife", [0.0, 1e9], ids=["raw", "averaged"])
def test_worker_killed_mid_run_resumes_from_checkpoint(ray_local, data, tmp_path, halflife):
    """A killed worker group resumes from its last checkpoint, the weights' moving average included: with a half-life
    of 1e9 epochs the average stays at the weights after the first optimizer step, so every epoch, the one after the
    restart too, validates the same weights (a restart that lost the average would start it again from the resumed
    weights and validate another model)."""
    marker = tmp_path / "crashed"
    mcfg = model_config_for(data, "tiny")
    rcfg = RayConfig(workers=2, storage=str(tmp_path / "s"), run_name="resume", max_failures=1)
    result, info = fit_ray(data, replace(TINY, average_halflife=halflife), mcfg, rcfg,
                           extra_callbacks=[helpers.CrashOnce(str(marker), epoch=1)], run_test=False)
    assert marker.exists()  # the crash really happened
    assert result.epochs_run == 3 and [r["epoch"] for r in result.history] == [0, 1, 2]
    losses = {r["val_loss"] for r in result.history}
    assert len(losses) == (1 if halflife else 3), losses
    if halflife:
        return

    marker.unlink()
    with pytest.raises(DistributedTrainingError, match=r"failed after 0 allowed restart\(s\).*--max-failures"):
        fit_ray(data, TINY, mcfg, RayConfig(workers=2, storage=str(tmp_path / "s"), run_name="no-retry",
                                            max_failures=0),
                extra_callbacks=[helpers.CrashOnce(str(marker), epoch=1)], run_test=False)


SCRIPT = """
import json, sys
from pathlib import Path
import ray, ray.cloudpickle
from ray.cluster_utils import Cluster
sys.path.insert(0, {root!r})
from tests.ray import helpers
from tests.ray.local_head import local_head, submit
ray.cloudpickle.register_pickle_by_value(helpers)
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.training.distributed import RayConfig, fit_ray
from stocktrend.platform.data.synthetic import planted_signal_universe
from stocktrend.platform.training.local import TrainConfig, model_config_for
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
data = build_dataset(DataConfig(tickers=(), top_k=12, sequence_length=16), universe=planted_signal_universe(700, seed=5),
                     use_cache=False)
tcfg = TrainConfig(preset="tiny", epochs=2, batch_size=64, accumulate=1, progress=False)
res, info = fit_ray(data, tcfg, model_config_for(data, "tiny"), RayConfig(workers=2, storage={storage!r},
                    run_name="two-nodes"), extra_callbacks=[helpers.RecordNode({folder!r})], run_test=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
print("RESULT", json.dumps({{"epochs": res.epochs_run, "nodes": nodes}}))
ray.shutdown()
cluster.shutdown()
"""


def test_two_nodes_one_worker_each(tmp_path):
    folder = tmp_path / "ranks"
    folder.mkdir()
    script = SCRIPT.format(root=str(ROOT), storage=str(tmp_path / "storage"), folder=str(folder))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["epochs"] == 2 and len(out["nodes"]) == 2
    placed = {p.name: p.read_text() for p in folder.iterdir()}
    assert set(placed) == {"rank0", "rank1"}
    assert placed["rank0"] != placed["rank1"] and set(placed.values()) == set(out["nodes"])


def test_ray_job_submit_against_a_local_head(tmp_path):
    with local_head() as address:
        job = submit(address, ROOT, {"STOCKTREND_HOME": str(tmp_path / "home")}, "-m", "stocktrend", "-q", "train",
                     "--preset", "tiny", "--epochs", "1", "--workers", "1", "--accumulate", "1", "--model-name",
                     "job-model")
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "succeeded" in job.stdout and "registered   : job-model version 1" in job.stdout
