"""What a killed fit leaves in the temporary directory is removed by the next fit (training/scratch.py)."""

import os
import subprocess
import sys

from stocktrend.platform.training import scratch


def test_the_next_fit_sweeps_the_folders_of_dead_fits_only(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()  # a process that has exited
    dead_old = tmp_path / f"{scratch.PREFIX}{dead_pid}-aaaa"
    dead_fresh = tmp_path / f"{scratch.PREFIX}{dead_pid}-bbbb"
    alive_old = tmp_path / f"{scratch.PREFIX}{os.getpid()}-cccc"
    other = tmp_path / "someone-elses"
    for d in (dead_old, dead_fresh, alive_old, other):
        d.mkdir()
        (d / "best.ckpt").write_bytes(b"x")
    for d in (dead_old, alive_old, other):
        for p in (d / "best.ckpt", d):
            os.utime(p, (0, 0))
    with scratch.scratch_dir() as tmp:
        assert os.path.basename(tmp).startswith(f"{scratch.PREFIX}{os.getpid()}-")
        assert not dead_old.exists()  # dead for over an hour: removed
        assert dead_fresh.exists() and alive_old.exists() and other.exists()  # written recently / alive / not ours
    assert not os.path.exists(tmp)
