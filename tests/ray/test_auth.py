"""Issue 37, authentication checked, not assumed: each kind of Ray instance the platform starts or documents refuses
a Jobs API request without the token and accepts it with the token; the token file is 0600 and never printed."""
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest

from tests.ray.local_head import local_head

pytestmark = pytest.mark.slow

PRIVATE = """
import sys, time
import ray
from stocktrend.platform.training.distributed import init_ray, shutdown_ray
assert init_ray(num_cpus=1) is True
assert ray.util.get_node_ip_address() == "127.0.0.1"  # Ray binds its exporters there (issue 37)
print("DASHBOARD", ray._private.worker.get_dashboard_url(), flush=True)
sys.stdin.read()  # until the test closes stdin
shutdown_ray()
import os
assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # the process may start or join a cluster again
print("ENDED", flush=True)
"""


def user_env(home) -> dict:
    """A user's shell: token authentication left to Ray's default (the test session turns it off), a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                                                            "RAY_ADDRESS")}
    return {**env, "HOME": str(home), "STOCKTREND_HOME": str(home / "st")}


def jobs_api(dashboard: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{dashboard}/api/jobs/", headers=headers, timeout=10).status_code


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("token_before", [None, 0o644])
def test_a_private_instance_needs_the_token_and_keeps_it_0600(tmp_path, token_before):
    import ray
    ray.shutdown()  # one Ray instance at a time on these cores
    home = tmp_path / "user"
    token_file = home / ".ray" / "auth_token"
    if token_before is not None:  # what Ray itself leaves: a token file every local user can read
        token_file.parent.mkdir(parents=True)
        token_file.write_text("a" * 64)
        token_file.chmod(token_before)
    p = subprocess.Popen([sys.executable, "-c", PRIVATE], env=user_env(home), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import threading
    watchdog = threading.Timer(240, p.kill)  # a start that hangs must not hang the suite
    watchdog.start()
    try:
        out = []
        deadline = time.monotonic() + 120
        for line in p.stdout:
            out.append(line)
            if line.startswith("DASHBOARD") or time.monotonic() > deadline:
                break
        dashboard = "http://" + out[-1].split()[1].removeprefix("http://")
        assert token_file.is_file() and mode(token_file) == 0o600, oct(mode(token_file))
        token = token_file.read_text().strip()
        assert jobs_api(dashboard, None) == 401
        assert jobs_api(dashboard, "not-the-token") == 403
        assert jobs_api(dashboard, token) == 200
    finally:
        try:
            rest = p.communicate(input="", timeout=120)[0]
        finally:
            watchdog.cancel()
            if p.poll() is None:
                p.kill()
    said = "".join(out) + rest
    assert p.returncode == 0 and "ENDED" in rest, said[-3000:]
    assert token not in said
    if token_before is not None:
        assert "was readable by other users (mode 644): now 0600" in said, said[-2000:]
    logs = "".join(f.read_text(errors="replace") for f in (home / "st").rglob("*.log")) if (home / "st").exists() \
        else ""
    assert token not in logs


def test_a_documented_local_head_needs_the_token(tmp_path):
    """`ray start --head` as docs/tuning.md shows it, in a shell whose ~/.ray/auth_token exists (0600)."""
    home = tmp_path / "user"
    (home / ".ray").mkdir(parents=True)
    token = "b" * 64
    fd = os.open(home / ".ray" / "auth_token", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, token.encode())
    os.close(fd)
    with local_head(env={**user_env(home), "RAY_USAGE_STATS_ENABLED": "0"}) as dashboard:
        assert jobs_api(dashboard, None) == 401
        assert jobs_api(dashboard, token) == 200
