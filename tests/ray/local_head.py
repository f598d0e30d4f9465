"""A throwaway Ray head started with `ray start` for `ray job submit` tests, and free ports for servers."""

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    """Below the kernel's ephemeral range: Ray, starting beside the server, cannot take it first
    (stocktrend.platform.ports)."""
    from stocktrend.platform.ports import free_port as below_ephemeral
    return below_ephemeral()


@contextmanager
def local_head(env: dict | None = None):
    """Yields the dashboard address of a fresh 2-CPU head; stops it afterwards. ``env``: the environment of `ray start`
    (default: token authentication disabled).

    The in-process instance of the test session is shut down first (the `ray_local` fixture starts it again in the
    next module): the head takes both CPUs. The head is stopped alone (`ray stop` would stop every Ray instance on
    the machine, another test process's too): its processes are those whose environment carries its marker."""
    import ray
    ray.shutdown()
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # AF_UNIX socket paths must stay under 108 bytes
    env = {**(env or ENV), HEAD_MARKER: ray_tmp}
    port, dash, agent, client = free_port(), free_port(), free_port(), free_port()
    start = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", f"--dashboard-port={dash}",
                            # Ray's fixed defaults (52365, 10001): taken by any other Ray instance on the machine
                            f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
                            "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
                           capture_output=True, text=True, env=env, timeout=120)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_marked(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


HEAD_MARKER = "STOCKTREND_TEST_RAY_HEAD"


def stop_marked(value: str, timeout: float = 30) -> None:
    """Stop every process whose environment has ``HEAD_MARKER=value`` (a head's GCS, raylet, dashboard, workers and
    job drivers all inherit it; workers rewrite their command line, so it cannot be matched on), in `ray stop`'s
    order: the raylet, then the rest, then the GCS (terminated together, the raylet and the GCS each wait ~30 s for
    the other before exiting). SIGTERM per group, SIGKILL for those still running after ``timeout`` seconds."""
    import psutil

    from stocktrend.platform.processes import terminate_then_kill
    mine = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(HEAD_MARKER) == value:
                mine.append(p)
        except psutil.Error:
            continue

    def name(p) -> str:
        try:
            return p.name()
        except psutil.Error:
            return ""
    first = [p for p in mine if name(p) == "raylet"]
    last = [p for p in mine if name(p) == "gcs_server"]
    for group in (first, [p for p in mine if p not in first and p not in last], last):
        terminate_then_kill(group, timeout)


def submit(address: str, working_dir: Path, env_vars: dict, *entrypoint: str, timeout: int = 500):
    import json
    runtime_env = json.dumps({"env_vars": {"RAY_AUTH_MODE": "disabled", **env_vars}})
    return subprocess.run([RAY, "job", "submit", f"--address={address}", "--working-dir", str(working_dir),
                           f"--runtime-env-json={runtime_env}", "--", sys.executable, *entrypoint],
                          capture_output=True, text=True, env=ENV, timeout=timeout)
