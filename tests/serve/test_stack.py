"""Issue 40: `stocktrend monitoring up` as a user runs it: Prometheus and Alertmanager on 127.0.0.1 (data under the
home), ready within seconds; a second one on the same ports is one error line; one Ctrl-C stops both. The binaries come
from `bash deploy/prometheus/get-prometheus.sh` (CI runs it): missing, the test fails with that advice."""
import signal
import subprocess
import threading
import time

import httpx
import psutil
import pytest

from tests.cli import CLI, ROOT, cli_env
from tests.ray.local_head import free_port


def _watchdog(p: subprocess.Popen) -> None:
    """Kill ``p`` if it still runs after 120 s (a `monitoring up` that never prints must not hang the run). A daemon
    timer: a pending one must not keep the test process from exiting (it did, for up to 120 s, after the last test)."""
    t = threading.Timer(120, p.kill)
    t.daemon = True
    t.start()


def monitoring_up_command(tmp_path):
    """The environment, ports and command line of a `monitoring up` on a fresh home; missing binaries fail the test
    with the advice (never a skip)."""
    from stocktrend.serve import stack
    try:
        stack.find_binaries()
    except stack.StackError as exc:
        pytest.fail(str(exc))
    prom, am = free_port(), free_port()
    args = [CLI, "monitoring", "up", "--prometheus-port", str(prom), "--alertmanager-port", str(am),
            "--sd-file", str(tmp_path / "none.json")]
    return cli_env(tmp_path / "home"), prom, am, args


def test_monitoring_up_serves_on_loopback_refuses_a_taken_port_and_stops_on_ctrl_c(tmp_path):
    env, prom, am, args = monitoring_up_command(tmp_path)
    p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _watchdog(p)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if line.startswith("data"):
            break
    try:
        assert any(ln.startswith(f"prometheus   : http://127.0.0.1:{prom}") for ln in lines), lines
        assert httpx.get(f"http://127.0.0.1:{prom}/-/ready", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{am}/-/ready", timeout=5).status_code == 200
        children = psutil.Process(p.pid).children(recursive=True)
        listening = [c.laddr for ch in children for c in ch.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening  # no gossip port on *:9094
        assert (tmp_path / "home" / "monitoring" / "prometheus.yml").is_file()
        again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 2 and "in use" in again.stderr and "Traceback" not in again.stderr, \
            again.stdout + again.stderr
    finally:
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0]
    assert "stopped" in out, out
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_killed_monitoring_up_leaves_servers_that_the_next_one_ends(tmp_path):
    """SIGKILL of `monitoring up` cannot stop its children: the next `up` on the same home ends them by their PID
    files (only while their command line still names this home's folder), says so, and starts on the same ports."""
    env, prom, am, args = monitoring_up_command(tmp_path)

    def up():
        p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _watchdog(p)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("data") or line.startswith("error"):
                break
        return p, lines
    first, _ = up()
    servers = psutil.Process(first.pid).children()
    first.kill()
    first.wait(timeout=30)
    assert servers and all(s.is_running() for s in servers)  # orphans, still holding the ports
    second, lines = up()
    try:
        ended = [ln for ln in lines if "left running by a stopped `stocktrend monitoring up`" in ln]
        assert len(ended) == 2 and all(any(str(s.pid) in ln for ln in ended) for s in servers), lines
        assert any(ln.startswith(f"prometheus   : http://127.0.0.1:{prom}") for ln in lines), lines
    finally:
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=60)
    time.sleep(0.5)
    assert not [s for s in servers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
