"""Issue 31: which Ray instance a command uses. No address = a private local instance whatever Ray's address file
says (a cluster that died without `ray stop` must not hang anything); an address that does not answer = one error
line within seconds. The slow half (train --workers 2 and serve with a stale address file) is in test_console.py."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stocktrend.platform.training.ray_address import RayConnectionError, check_address, resolve_address
from tests.ray.local_head import free_port

CLI = str(Path(sys.executable).parent / "stocktrend")


@pytest.fixture()
def stale_ray_tmp(tmp_path_factory, monkeypatch):
    """A Ray temp dir whose ray_current_cluster names a cluster that is gone (nothing listens on the port)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    dead = f"127.0.0.1:{free_port()}"
    (d / "ray").mkdir()
    (d / "ray" / "ray_current_cluster").write_text(dead)  # where Ray looks: $RAY_TMPDIR/ray (default /tmp/ray)
    monkeypatch.setenv("RAY_TMPDIR", str(d))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return d, dead


def test_no_address_means_a_private_local_instance_whatever_the_address_file_says(stale_ray_tmp):
    assert resolve_address(None) == (None, "local")
    assert resolve_address("local") == (None, "local")
    assert check_address(None) is None


def test_auto_joins_the_recorded_cluster_only_if_it_answers(stale_ray_tmp):
    _, dead = stale_ray_tmp
    assert resolve_address("auto")[0] == dead
    t0 = time.perf_counter()
    with pytest.raises(RayConnectionError, match=f"no Ray cluster answers at {dead}"):
        check_address("auto")
    assert time.perf_counter() - t0 < 6


def test_an_address_beats_ray_address_and_bad_forms_are_named(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == ("10.0.0.1:6379", "RAY_ADDRESS")
    assert resolve_address("127.0.0.1:6380") == ("127.0.0.1:6380", "--address")
    with pytest.raises(RayConnectionError, match="dashboard / job API address"):
        resolve_address("http://127.0.0.1:8265")
    with pytest.raises(RayConnectionError, match="not a Ray address"):
        check_address("nonsense")


def _run(home: Path, *args: str, env_extra: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    import os
    env = {**os.environ, "STOCKTREND_HOME": str(home), **(env_extra or {})}
    env.pop("RAY_ADDRESS", None) if "RAY_ADDRESS" not in (env_extra or {}) else None
    t0 = time.perf_counter()
    r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    return r, time.perf_counter() - t0


def test_train_and_serve_against_a_dead_address_fail_within_the_bound_with_one_line(tmp_path):
    r, took = _run(tmp_path, "train", "--workers", "2", "--address", "127.0.0.1:1")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and took < 20, (took, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: no Ray cluster answers at 127.0.0.1:1 (--address)")
    assert "ray start --head" in lines[0] and "Traceback" not in r.stderr and "GCS" not in r.stderr
    # RAY_ADDRESS of a cluster that is gone: serve says so before it looks at the model or starts anything.
    r, took = _run(tmp_path, "serve", "--port", str(free_port()),
                   env_extra={"RAY_ADDRESS": f"127.0.0.1:{free_port()}"})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and took < 20, (took, r.stderr)
    assert len(lines) == 1 and "(RAY_ADDRESS)" in lines[0] and "unset RAY_ADDRESS" in lines[0], r.stderr


def test_a_wide_panel_names_its_ray_train_run_within_the_file_system_limit():
    """Issue 41: a 524-ticker panel's Ray Train run was named with every ticker ("[errno 36] File name too long")."""
    from stocktrend.platform.training.distributed import tickers_label
    tickers = [f"T{i:04d}" for i in range(524)]
    label = tickers_label(tickers)
    assert label == "-".join(tickers[:8]) + "-..." and len(f"train-{label}-20261205-120000") < 255
    assert tickers_label(["A", "B"]) == "A-B"
