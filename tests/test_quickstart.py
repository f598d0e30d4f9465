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


def test_quickstart_end_to_end(tmp_path):
    from mlflow import MlflowClient
    import time

    from tests.census import haproxy_started_since
    home = tmp_path / "home"
    port = free_port()
    started = time.time()
    first = run(home, "--budget", "0.3", "--no-wait", "--port", str(port))
    # issue 37: nothing the command started outlives it (HAProxy was the one that did)
    assert haproxy_started_since(started, home) == [], "HAProxy outlived the quickstart"
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
    # The default universe (msft): the last test window is MSFT's, on the test segment's last labelled day; MSFT's
    # 7,978 bars exceed the endpoint's 5,000-bar limit, so the sample request sends the last 2,000.
    assert tick["version"] == 1 and tick["date"] == "2017-11-03" and tick["ticker"] == "MSFT"
    assert "the last 2000 raw daily bars of MSFT" in out
    # The ticker route recomputes features from raw bars: same answer as the last test window sent to /predict.
    assert tick["probabilities"]["Alcista"] == pytest.approx(preds[-1]["probabilities"]["Alcista"], abs=1e-4)
    # By ticker name alone the server uses its universe's bars up to as_of: the same answer again.
    assert s["predict_by_name"]["date"] == "2017-11-03" and s["predict_by_name"]["ticker"] == "MSFT"
    assert s["predict_by_name"]["probabilities"] == pytest.approx(tick["probabilities"], abs=1e-6)
    assert f"http://127.0.0.1:{port}" in out and "endpoint stopped" in out
    # Ray Serve's own lines ("Started Serve in namespace ...", "Application ... is ready") are in the log file only.
    assert "Started Serve" not in out + first.stderr and "is ready at" not in out + first.stderr
    log = next((home / "logs").glob("quickstart-*.log")).read_text()
    assert "Started Serve" in log
    # A rerun in the same home reuses the feature cache: the Ctrl-C test's rerun checks it.


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


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (Ray's GCS, raylet, dashboard and workers of a locally started instance), with its
    command line so that a reused pid is not mistaken for a survivor."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = _cmdline(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int, cmd: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and _cmdline(pid) == cmd


def test_ctrl_c_during_the_search_stops_everything_and_a_rerun_resumes(tmp_path):
    """One SIGINT during stage 2: exit 130 within 30 s, the trial table so far written, how to resume printed, and no
    process of the run's Ray instance left; the same command with the same --name then resumes the search."""
    import signal
    import time
    import ray
    ray.shutdown()
    home = tmp_path / "home"
    env = {**ENV, "STOCKTREND_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    # Budget 0.7: 4 trials of up to 4 epochs, 2 at a time; when the first has ended, another runs and one waits, so
    # the SIGINT lands inside the search (the rerun then resumes it and retrains 7 epochs).
    cmd = [CLI, "quickstart", "--preset", "tiny", "--budget", "0.7", "--no-serve", "--name", "cc", "--universe", "msft"]
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err_out, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # wait until a trial has ended, so the table has something to keep
        lines.append(line)
        if (" stopped by ASHA after" in line or " completed:" in line) or time.monotonic() > deadline:
            break
    assert any("[2/5] search" in x for x in lines), "".join(lines)
    ray_procs = _descendants(proc.pid)
    assert any("raylet" in c for c in ray_procs.values()), ray_procs
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    stderr = err_file.read_text()
    assert proc.returncode == 130, (proc.returncode, rest[-2000:], stderr[-3000:])
    assert took < 30, took
    assert "interrupted: search cc interrupted" in stderr and "rerun the same command (--name cc)" in stderr
    assert "Traceback" not in stderr
    table = home / "searches" / "cc" / "trials.csv"
    assert table.is_file() and len(table.read_text().strip().splitlines()) >= 2
    time.sleep(2)  # processes killed by the shutdown may take a moment to be reaped
    left = {p: c for p, c in ray_procs.items() if _alive(p, c)}
    assert not left, left
    assert "[3/5]" not in "".join(lines) + rest  # the quickstart did not go on to the retrain

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming search cc" in again.stderr + again.stdout
    assert "[5/5] done in" in again.stdout and "[6/" not in again.stdout  # --no-serve: five stages
    assert "cache hit (reused)" in again.stdout  # the features the interrupted run built
    assert len(list((home / "cache").glob("features-*.parquet"))) == 1
    assert summary_of(again)["version"] == 1  # the interrupted run registered nothing
