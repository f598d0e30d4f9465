"""Issue 27: a model added as README's "Add a model" says (one file with its config, network and ModelSpec) trains,
registers, serves over HTTP and is searchable, with no other change to the platform. Every step is the CLI in a
subprocess; the model joins the zoo through STOCKTREND_MODELS, so Ray's trial and replica processes know it too."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.ray.local_head import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "stocktrend")


def test_a_toy_model_trains_registers_serves_and_is_searchable(tmp_path):
    import ray
    ray.shutdown()  # the commands start their own local instances
    from stocktrend.platform.data.synthetic import planted_signal_universe
    data = tmp_path / "data"
    (data / "market").mkdir(parents=True)
    u = planted_signal_universe(700, seed=2, n_tickers=2)
    for name, frame in u.tickers.items():
        frame.to_csv(data / f"{name}.csv")
    for name, frame in u.market.items():
        frame.to_csv(data / "market" / f"{name}.csv")
    env = {**os.environ, "STOCKTREND_HOME": str(tmp_path / "home"), "STOCKTREND_MODELS": "tests.models.toy_model:SPEC",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)

    def run(*args, timeout=300):
        r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
        return r

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
