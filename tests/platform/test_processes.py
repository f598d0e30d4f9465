"""What a command starts ends with it (issue 37): the record of HAProxy processes, ended by PID and start time when
the command stops, and by the next command on the same home when it was killed. A stand-in process named haproxy
(a copy of `sleep`), no Ray."""

import json
import os
import shutil
import subprocess
import sys

import psutil
import pytest

from stocktrend.platform import processes


@pytest.fixture
def fake_haproxy(tmp_path):
    exe = tmp_path / "bin" / "haproxy"
    exe.parent.mkdir()
    shutil.copy(shutil.which("sleep"), exe)
    started = []

    def start():
        p = subprocess.Popen([str(exe), "300"])
        started.append(p)
        return p
    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_command_records_its_haproxy_and_ends_it_when_it_stops(tmp_path, monkeypatch, fake_haproxy):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / "home"))
    p = fake_haproxy()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # not watched
    try:
        rec = processes.remember("serve")
        assert p.pid in rec and other.pid not in rec
        assert json.loads((tmp_path / "home" / "run" / f"{os.getpid()}.json").read_text())["command"] == "serve"
        assert processes.end_own() == [p.pid]
        assert p.wait(timeout=10) is not None and other.poll() is None
        assert not (tmp_path / "home" / "run" / f"{os.getpid()}.json").exists()
    finally:
        other.kill()
        other.wait()


def test_the_next_command_ends_what_a_killed_one_left_by_pid_and_start_time_only(tmp_path, monkeypatch,
                                                                                 fake_haproxy):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / "home"))
    left, reused = fake_haproxy(), fake_haproxy()
    run = tmp_path / "home" / "run"
    run.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # the killed command: its PID is gone
    t = psutil.Process(left.pid).create_time()
    (run / f"{dead.pid}.json").write_text(json.dumps({
        "owner": dead.pid, "owner_started": 1.0, "command": "serve",
        # `reused` stands for a PID the system gave to another process since: its start time differs, it stays
        "processes": {str(left.pid): t, str(reused.pid): t - 1000.0}}))
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # a command still running
    alive_owner = {"owner": running.pid, "owner_started": psutil.Process(running.pid).create_time(),
                   "command": "quickstart", "processes": {str(reused.pid): psutil.Process(reused.pid).create_time()}}
    (run / "running.json").write_text(json.dumps(alive_owner))  # ... on this home: its processes are its own
    try:
        lines = processes.reap_leftovers()
        assert len(lines) == 1 and f"haproxy PID {left.pid}" in lines[0] and "stocktrend serve" in lines[0], lines
        assert left.wait(timeout=10) is not None and reused.poll() is None
        assert not (run / f"{dead.pid}.json").exists() and (run / "running.json").exists()
        assert processes.reap_leftovers() == []  # once
    finally:
        running.kill()
        running.wait()
