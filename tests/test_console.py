"""The first hour, as a user sees it: commands run as subprocesses on a fresh STOCKTREND_HOME. A missing model stops
`serve` before Ray starts; a healthy train (Ray Train) and serve start/stop print the platform's lines only, while the
command's log file holds Ray's output; --verbose shows it again."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ray.local_head import free_port

CLI = str(Path(sys.executable).parent / "stocktrend")
TRAIN = ["train", "--preset", "tiny", "--epochs", "1", "--accumulate", "1", "--top-k", "8", "--sequence-length", "10",
         "--workers", "2", "--cpus-per-worker", "1"]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "STOCKTREND_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)  # set by mlflow in this process by earlier tests: a user's fresh shell has none
    return env


def _log(home: Path, command: str) -> str:
    logs = sorted((home / "logs").glob(f"{command}-*.log"), key=lambda p: p.stat().st_mtime)
    assert logs, f"no {command} log in {home / 'logs'}"
    return logs[-1].read_text()


def test_serve_without_a_registered_model_stops_before_ray_starts(tmp_path):
    t0 = time.time()
    r = subprocess.run([CLI, "serve", "--port", str(free_port())], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    took = time.time() - t0
    assert r.returncode == 2 and took < 10, (took, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'stocktrend'"), r.stderr
    assert "registered: none" in lines[0] and "stocktrend train" in lines[0] and "Traceback" not in r.stderr


def _ray_processes(home: Path) -> int:
    """Ray's processes (GCS, raylet, workers, ...) of the instances commands on ``home`` started: they inherit the
    command's environment; another test process's Ray instances are not counted."""
    import psutil
    n = 0
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "ray/dashboard" in cmd:
            try:
                n += p.environ().get("STOCKTREND_HOME") == str(home)
            except psutil.Error:
                continue
    return n


def _no_ray_within(home: Path, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while _ray_processes(home):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def _stale_ray_tmp() -> str:
    """A Ray temp dir whose address file names a cluster that died without `ray stop` (issue 31): Ray's own
    ray.init() would try to join it and retry without end."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    (d / "ray").mkdir()
    (d / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    return str(d)


@pytest.mark.slow
def test_quiet_console_for_train_and_serve_and_verbose_brings_ray_back(tmp_path, monkeypatch):
    """Also issue 31: with a stale ray_current_cluster in Ray's temp dir, `train --workers 2` and `serve` start their
    own private instance at once (before the fix both hung for minutes printing GCS warnings)."""
    monkeypatch.setenv("RAY_TMPDIR", _stale_ray_tmp())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    home = tmp_path / "home"
    t0 = time.time()
    r = subprocess.run([CLI, *TRAIN], env=_env(home), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.time() - t0 < 240  # a 1-epoch tiny run (~50 s here); the hang it replaces never ended
    console = r.stdout + r.stderr
    assert "pid=" not in console and "Traceback" not in console and "GCS" not in console, console[-3000:]
    assert "registered   : stocktrend version 1" in r.stdout
    assert "data         : object-store: in memory (1 ticker, " in r.stdout  # --data-transport auto, a small panel
    log = _log(home, "train")
    assert "pid=" in log  # Ray's worker and controller output is in the command's log file
    # Ray Train's placement-group cleaner reaches this instance's state API, not the stale file's dead cluster (its
    # stop used to time out after 12 s at the end of every run)
    assert "Failed to stop PlacementGroupCleaner" not in log and "Found multiple active Ray" not in log, log[-3000:]

    assert subprocess.run([CLI, "models", "promote", "stocktrend", "1"], env=_env(home), capture_output=True,
                          timeout=120).returncode == 0
    port = free_port()
    t0 = time.time()
    p = subprocess.Popen([CLI, "serve", "--port", str(port)], env=_env(home), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stdout:  # the command says when it serves (the routes may answer a moment before)
            lines.append(line)
            if line.startswith("metrics:"):
                break
        assert any(ln.startswith("serving") for ln in lines), "".join(lines)
        assert time.time() - t0 < 120
        assert httpx.post(f"http://127.0.0.1:{port}/predict/ticker", json={"ticker": "MSFT"},
                          timeout=60).status_code == 200
        assert _ray_processes(home) > 0  # the count sees the running instance
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    out = "".join(lines) + out
    assert p.returncode == 0, err[-3000:]
    assert "pid=" not in out + err and "Traceback" not in out + err, (out + err)[-3000:]
    assert "endpoint stopped" in out
    assert _no_ray_within(home, 5)  # the command's local Ray instance is gone

    # The port, free when `serve` checked it, is taken by another process before the ingress binds it (here: the
    # moment the command says its Ray instance is up; Serve's controller and HAProxy start seconds later): one line
    # naming the port, exit 2, no traceback, no Ray left (before: Ray's remote traceback of HAProxy's crash).
    port = free_port()
    p = subprocess.Popen([CLI, "serve", "--port", str(port)], env=_env(home), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(240, p.send_signal, (signal.SIGINT,))  # a serve that never fails must not hang the run
    watchdog.start()
    try:
        with socket.socket() as taken:
            lines = []
            for line in p.stdout:
                lines.append(line)
                if line.startswith("INFO stocktrend") and "Ray: a private local Ray instance" in line:
                    taken.bind(("127.0.0.1", port))
                    taken.listen()
                    break
            out = "".join(lines) + p.communicate(timeout=180)[0]
    finally:
        watchdog.cancel()
        if p.poll() is None:  # stopped as a user would (Ctrl-C), so that it takes its Ray instance down
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=120)
    assert p.returncode == 2, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"port {port} on 127.0.0.1 was taken by another process" in errors[0], out[-3000:]
    assert "Traceback" not in out and "HAProxy crashed" not in out, out[-3000:]
    assert "cannot bind socket" in _log(home, "serve")  # Ray's whole message is in the command's log file
    assert _no_ray_within(home, 5)

    # --verbose brings Ray's output back (one Train worker is enough to show its pid= lines).
    verbose_train = [*TRAIN[:TRAIN.index("--workers") + 1], "1", "--cpus-per-worker", "1"]
    v = subprocess.run([CLI, "--verbose", *verbose_train, "--no-register"], env=_env(home), capture_output=True,
                       text=True, timeout=600)
    assert v.returncode == 0 and "pid=" in v.stdout + v.stderr
