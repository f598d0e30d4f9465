"""Processes a command starts that must not outlive it.

Ray's Serve starts HAProxy (``haproxy -db -f ...``) from its proxy actor. When the command stops after load, or its
Ray workers are killed, an HAProxy can be left running with parent PID 1, holding ports on every interface. So every
command that starts a private Ray instance keeps a record of the HAProxy processes in its process tree
(``$STOCKTREND_HOME/run/<pid>.json``: PID and start time of each, refreshed while it serves), and:

- when it stops (Ctrl-C, SIGTERM, a failed start, an exception: ``stocktrend.platform.training.distributed
  .shutdown_ray``), it ends whatever of them is still running after Ray has shut down (SIGTERM, then SIGKILL);
- when it was killed (SIGKILL: nothing ran), the next command on the same home ends what the record names, by PID and
  start time, never by name (another user's or another home's HAProxy is never touched), and says so in one line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

WATCHED = ("haproxy",)  # process names (psutil's ``name()``) a command must not leave behind
TIME_TOLERANCE_S = 0.05  # a PID is the recorded process only if its start time matches within this


def run_dir() -> Path:
    from stocktrend.platform.data.cache import default_home
    return default_home() / "run"


def _record_path(pid: int | None = None) -> Path:
    return run_dir() / f"{pid or os.getpid()}.json"


def watched_descendants() -> dict[int, float]:
    """HAProxy processes in this process's tree: PID -> start time."""
    import psutil
    out = {}
    try:
        for p in psutil.Process().children(recursive=True):
            try:
                if p.name() in WATCHED:
                    out[p.pid] = p.create_time()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    except psutil.Error:
        pass
    return out


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def remember(command: str = "") -> dict[int, float]:
    """Add this tree's HAProxy processes to this command's record (written atomically); returns all recorded."""
    import psutil
    path = _record_path()
    rec = _read(path) or {"owner": os.getpid(), "owner_started": psutil.Process().create_time(),
                          "command": command, "processes": {}}
    found = watched_descendants()
    if not found and not path.exists():
        return {}
    rec["processes"].update({str(pid): t for pid, t in found.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)
    return {int(k): float(v) for k, v in rec["processes"].items()}


def recorded(pid: int | None = None) -> dict[int, float]:
    rec = _read(_record_path(pid))
    return {int(k): float(v) for k, v in rec.get("processes", {}).items()}


def _matching(pid: int, started: float):
    import psutil
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - started) <= TIME_TOLERANCE_S and p.name() in WATCHED:
            return p
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def end_processes(procs: dict[int, float], timeout_s: float = 5.0) -> list[int]:
    """End the given processes that are still the ones recorded (PID and start time): SIGTERM, then SIGKILL after
    ``timeout_s``. Returns the PIDs that were running."""
    alive = [p for p in (_matching(pid, t) for pid, t in procs.items()) if p is not None]
    terminate_then_kill(alive, timeout_s)
    return [p.pid for p in alive]


def terminate_then_kill(procs: list, timeout_s: float = 5.0) -> None:
    """SIGTERM to each of ``procs`` (psutil.Process), SIGKILL to those still running after ``timeout_s``; returns
    when they are gone (or ``timeout_s`` after the SIGKILL)."""
    import psutil
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(procs, timeout=timeout_s)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=timeout_s)


def forget() -> None:
    _record_path().unlink(missing_ok=True)


def end_own(before_shutdown: dict[int, float] | None = None) -> list[int]:
    """At the end of a command: end what it recorded (and ``before_shutdown``: its tree as Ray was shut down) that is
    still running; drop the record."""
    procs = {**recorded(), **(before_shutdown or {})}
    ended = end_processes(procs) if procs else []
    if ended:
        log.info("ended %d HAProxy process(es) that outlived Ray's shutdown: PID %s", len(ended),
                 ", ".join(map(str, ended)))
    forget()
    return ended


def reap_leftovers() -> list[str]:
    """End what commands killed on this home left running (their owner is gone); one line per such command."""
    import psutil
    lines = []
    for path in sorted(run_dir().glob("*.json")) if run_dir().is_dir() else []:
        rec = _read(path)
        owner = int(rec.get("owner", 0) or 0)
        if owner == os.getpid():
            continue
        try:
            if owner and abs(psutil.Process(owner).create_time() - float(rec.get("owner_started", 0))) <= \
                    TIME_TOLERANCE_S:
                continue  # still running: its own business
        except psutil.Error:
            pass
        procs = {int(k): float(v) for k, v in rec.get("processes", {}).items()}
        ended = end_processes(procs)
        path.unlink(missing_ok=True)
        if ended:
            lines.append(f"ended {len(ended)} process(es) left running by a stopped `stocktrend "
                         f"{rec.get('command') or 'command'}` (PID {owner}): haproxy PID "
                         f"{', '.join(map(str, ended))}")
    return lines
