"""Issue 28: a multi-node cluster (ray.cluster_utils.Cluster: a head without CPUs and worker nodes of one CPU each)
loses a worker node while (a) a search, (b) the endpoint, (c) a 2-worker Ray Train run is working. The scenarios are
in tests/ray/node_loss.py, each in its own process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _scenario(name: str, folder: Path, *extra: str, timeout: int = 600) -> dict:
    import ray
    ray.shutdown()  # the scenario starts its own cluster
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "tests.ray.node_loss", name, str(folder), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        err = proc.stderr
        tb = err.rfind("Traceback (most recent call last)")  # the scenario's own error, not Ray's last log lines
        pytest.fail(f"scenario {name} exited {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-2000:]}\n"
                    f"--- stderr (traceback)\n{err[tb:][-6000:] if tb >= 0 else err[-6000:]}", pytrace=False)
    return json.loads(proc.stdout.rsplit("RESULT ", 1)[1])


def test_a_search_survives_losing_a_node(tmp_path):
    out = _scenario("search", tmp_path)
    lost = out["lost"]
    assert lost, "no trial ran on the second node"  # the scenario really removed a node under a running trial
    assert out["rows"] == 4 and out["status"] == ["completed"] * 4, out  # a complete trial table
    assert out["best_missing"] == 0
    assert out["restarts"][lost["trial_id"]] >= 1, out
    # Restarted from its last checkpoint: it ends at max_epochs, not at (epochs before the loss) + max_epochs, and
    # its results go on from the checkpointed epoch.
    assert out["epochs"][lost["trial_id"]] == out["max_epochs"], out
    its = out["lost_trial_iterations"]
    assert its and its[-1] == out["max_epochs"] and max(its) == out["max_epochs"], its


def test_the_endpoint_keeps_answering_when_a_replica_node_is_lost(tmp_path):
    out = _scenario("endpoint", tmp_path, "5")
    assert out["replicas_on_distinct_nodes"], out
    assert out["sent"] > out["sent_before_loss"] > 0
    assert out["failed_after_retries"] == 0, out  # every idempotent request answered after client retries
    assert out["replaced_s"] is not None and out["replicas_running"] == 2, out  # the replica was replaced


def test_a_ray_train_run_survives_losing_a_workers_node(tmp_path):
    out = _scenario("train", tmp_path)
    assert out["lost"], out
    assert out["epochs_run"] == out["epochs"] and out["history_epochs"] == list(range(out["epochs"])), out
    restarts = [s for s in out["starts"] if s["t"] > out["lost"]["t"]]
    assert restarts, out["starts"]  # the worker group started again after the loss ...
    assert all(s["epoch"] > 0 for s in restarts), restarts  # ... from its checkpoint, not from epoch 0
    assert out["lost"]["node"] not in {s["node"] for s in restarts}


def test_a_streamed_run_rebuilds_its_readers_on_the_new_node(tmp_path):
    """The streaming path pins each worker's Ray Data readers to the worker's node: after that node is lost, the
    restarted worker group must read on its new nodes (not wait for the lost one) and still finish every epoch."""
    out = _scenario("stream", tmp_path)
    assert out["lost"], out
    assert out["epochs_run"] == out["epochs"] and out["history_epochs"] == list(range(out["epochs"])), out
    reads = out["reads"]
    after = {w["node"] for w in reads["workers"]}  # the restarted group's reports replace the first group's
    assert out["lost"]["node"] not in after and len(after) == 2 and after <= set(reads["nodes"]), out
    assert reads["blocks"] > 0 and reads["local"] == reads["blocks"], reads  # read where they were trained on
