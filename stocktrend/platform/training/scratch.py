"""Scratch folders of a fit, and the ones a killed fit left behind.

A fit keeps its best checkpoint in a temporary folder that is removed when the fit ends. A process that dies without
unwinding (SIGKILL, OOM, a Ray Tune trial stopped by its scheduler, ``os._exit``) leaves it in the temporary directory:
for the seed preset a checkpoint of ~30 MB per stopped trial. Each fit therefore names its folder with its process id
and, before it starts, removes the folders of processes that no longer exist and that nothing has written for an hour
(both conditions: a live fit in another PID namespace sharing the temporary directory keeps its folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "stocktrend-fit-"
PREFIXES = (PREFIX, "stocktrend-trial-")  # a fit's and a search trial's
STALE_S = 3600.0


def _last_write(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for p in folder.rglob("*"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def sweep(root: str | Path | None = None, stale_s: float = STALE_S) -> list[Path]:
    """Remove the scratch folders of dead fits in ``root`` (the temporary directory); returns what was removed."""
    import psutil
    removed = []
    folders = [(f, p) for p in PREFIXES for f in Path(root or tempfile.gettempdir()).glob(f"{p}*")]
    for folder, prefix in folders:
        pid = folder.name[len(prefix):].split("-", 1)[0]
        try:
            if not pid.isdigit() or psutil.pid_exists(int(pid)) or time.time() - _last_write(folder) < stale_s:
                continue
        except OSError:
            continue  # removed by another sweep meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def scratch_dir(prefix: str = PREFIX) -> Iterator[str]:
    """A temporary folder for one fit (or trial: ``prefix``), named by this process, after sweeping what dead fits
    left behind."""
    sweep()
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as tmp:
        yield tmp
