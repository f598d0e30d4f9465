"""Issue 27: a model added as docs/models.md's "Add a model" says (one file with its config, network and ModelSpec) trains,
registers, serves over HTTP and is searchable, with no other change to the platform. Every step is the CLI in a
subprocess; the model joins the zoo through STOCKTREND_MODELS, so Ray's trial and replica processes know it too."""

import os
import signal
import subprocess

import httpx
import pandas as pd
import pytest

from tests.cli import CLI, ROOT, cli_env, cli_ok, planted_csv_folder
from tests.ray.local_head import free_port

pytestmark = pytest.mark.slow


def test_a_toy_model_trains_registers_serves_and_is_searchable(tmp_path):
    import ray
    ray.shutdown()  # the commands start their own local instances
    data = planted_csv_folder(tmp_path, seed=2)
    env = cli_env(tmp_path / "home", STOCKTREND_MODELS="tests.models.toy_model:SPEC",
                  PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    def run(*args, timeout=300):
        return cli_ok(env, *args, timeout=timeout)

    common = ["--data", str(data), "--top-k", "8", "--sequence-length", "10"]
    r = run("train", "--model", "toy", "--preset", "tiny", "--epochs", "2", "--accumulate", "1", *common)
    assert "trained      : toy, tiny preset" in r.stdout and "registered   : stocktrend version 1" in r.stdout
    listed = run("models", "list").stdout
    assert "stocktrend v1" in listed and "  toy  " in listed

    run("models", "promote", "stocktrend", "1")
    port = free_port()
    p = subprocess.Popen([CLI, "serve", "--port", str(port), "--max-replicas", "1"], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith("metrics:"):
                break
        info = httpx.get(f"http://127.0.0.1:{port}/model", timeout=60).json()
        assert info["model_kind"] == "toy" and info["backend"] == "onnx", info  # exported to ONNX like any torch model
        answer = httpx.post(f"http://127.0.0.1:{port}/predict/ticker", json={"ticker": "SIG0"}, timeout=60)
        assert answer.status_code == 200 and set(answer.json()["probabilities"]) == {"Bajista", "Alcista"}
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
    assert p.returncode == 0

    r = run("tune", "--model", "toy", "--preset", "tiny", "--num-samples", "2", "--max-epochs", "2",
            "--grace-period", "1", "--name", "toy-search", "--model-name", "toy-search", *common[:2], timeout=400)
    table = pd.read_csv(tmp_path / "home" / "searches" / "toy-search" / "trials.csv")
    assert len(table) == 2 and (table["status"] != "error").all() and "hidden" in table.columns
    assert "registered: toy-search version 1" in r.stdout
