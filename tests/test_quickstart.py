"""`stocktrend quickstart` end to end, as a user runs it (a subprocess with its own STOCKTREND_HOME and local Ray), with a
tiny budget: every stage's artefact must exist (cache, trial table, registered + promoted model, report, HTTP
answers); a second run reuses the feature cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray.local_head import ENV, free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "stocktrend")


def run(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    import ray
    ray.shutdown()  # the subprocess starts its own local instance
    env = {**ENV, "STOCKTREND_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([CLI, "quickstart", "--preset", "tiny", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    line = next(x for x in proc.stdout.splitlines() if x.startswith(("Summary:", "Done (no serving). Summary:")))
    return json.loads(Path(line.split("Summary:")[1].strip()).read_text())


def test_quickstart_end_to_end_then_rerun_reuses_the_cache(tmp_path):
    from mlflow import MlflowClient
    home = tmp_path / "home"
    port = free_port()
    first = run(home, "--budget", "0.3", "--no-wait", "--port", str(port))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for i in range(1, 7):
        assert f"[{i}/6] done in" in out  # progress at every stage
    s = summary_of(first)

    assert Path(s["cache"]).is_file() and "cache built" in out
    trials = Path(s["trial_table"])
    assert trials.is_file() and len(trials.read_text().strip().splitlines()) == 1 + 2  # header + 2 trials
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert int(client.get_model_version_by_alias("stocktrend", "production").version) == s["version"] == 1
    report = Path(s["report"])
    assert report.is_file() and "Verdict" in report.read_text() and list(report.parent.glob("*.png"))

    preds = s["predict"]["predictions"]
    assert s["predict"]["version"] == 1 and len(preds) == 3
    for p in preds:
        assert p["label"] in ("Bajista", "Alcista") and p["signal"] in ("SELL", "BUY")
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    tick = s["predict_ticker"]
    assert tick["version"] == 1 and tick["date"] == "2017-11-03"
    # The ticker route recomputes features from raw bars: same answer as the last test window sent to /predict.
    assert tick["probabilities"]["Alcista"] == pytest.approx(preds[-1]["probabilities"]["Alcista"], abs=1e-4)
    assert f"http://127.0.0.1:{port}" in out and "endpoint stopped" in out

    second = run(home, "--budget", "0.1", "--no-serve")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "cache hit (reused)" in second.stdout and "[5/5] done in" in second.stdout
    assert "[6/" not in second.stdout
    assert int(client.get_model_version_by_alias("stocktrend", "production").version) == summary_of(second)[
        "version"] == 2
    assert len(list((home / "cache").glob("features-*.parquet"))) == 1


def test_quickstart_refuses_a_busy_port_and_a_bad_budget(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = run(tmp_path, "--port", str(busy), timeout=120)
    assert r.returncode == 2 and f"port {busy} on 127.0.0.1 is in use" in r.stderr
    r = run(tmp_path, "--budget", "0", "--no-serve", timeout=120)
    assert r.returncode == 2 and "--budget must be > 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert os.path.exists(tmp_path) and not (tmp_path / "tune").exists()
