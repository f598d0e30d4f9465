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

    `ray stop` stops every Ray process on the machine, so the in-process instance of the test session is shut down
    first (the `ray_local` fixture starts it again in the next module)."""
    import ray
    ray.shutdown()
    env = env or ENV
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # AF_UNIX socket paths must stay under 108 bytes
    port, dash = free_port(), free_port()
    start = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", f"--dashboard-port={dash}",
                            "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def submit(address: str, working_dir: Path, env_vars: dict, *entrypoint: str, timeout: int = 500):
    import json
    runtime_env = json.dumps({"env_vars": {"RAY_AUTH_MODE": "disabled", **env_vars}})
    return subprocess.run([RAY, "job", "submit", f"--address={address}", "--working-dir", str(working_dir),
                           f"--runtime-env-json={runtime_env}", "--", sys.executable, *entrypoint],
                          capture_output=True, text=True, env=ENV, timeout=timeout)
