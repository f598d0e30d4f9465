"""Where a command's CPU goes, by kind of process: runs the command and samples every process on the machine.

    python bench/suite_cpu.py -- python -m pytest tests/test_console.py
    python bench/suite_cpu.py --interval 0.5 --top 25 -- python -m pytest

Every ``--interval`` seconds each live process's CPU time (user + system) is read with psutil and kept under its kind:
the test runner, the ``stocktrend`` commands it starts, Ray's own processes (GCS, raylet, dashboard, its agents, log
monitor), Ray's worker processes by what their title says they run (``ray::IDLE``, ``ray::RayTrainWorker``, a Serve
replica, ...), HAProxy, Prometheus, the peers' environments, the rest. A process that lived less than one interval can
be missed; the table says how much of the machine's CPU time over the run it accounts for. The suite of issue 39 is
CPU-bound on 2 cores: this says which processes it would have to spend less on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict

import psutil

RAY_BINARIES = {"gcs_server": "ray gcs_server", "raylet": "ray raylet"}
# Python processes of Ray, by their script; a worker's arguments name the raylet too, so workers are matched first
RAY_SCRIPTS = (("default_worker.py", "ray worker (untitled)"), ("dashboard/agent.py", "ray dashboard agent"),
               ("runtime_env/agent/main.py", "ray runtime-env agent"), ("dashboard/dashboard.py", "ray dashboard"),
               ("log_monitor.py", "ray log monitor"), ("autoscaler/_private/monitor.py", "ray monitor"),
               ("ray/util/client/server", "ray client server"))


def kind_of(p: dict) -> str:
    cmd = " ".join(p.get("cmdline") or []) or (p.get("name") or "?")
    name = p.get("name") or ""
    if cmd.startswith("ray::") or name.startswith("ray::"):
        title = cmd if cmd.startswith("ray::") else name
        what = title[5:].split()[0] if len(title) > 5 else "?"
        if what.startswith(("SERVE_REPLICA", "ServeReplica")):
            return "ray worker: a Serve replica"
        return "ray worker: " + what.split(".")[0].rstrip(":")
    argv = p.get("cmdline") or []
    exe = os.path.basename(argv[0]) if argv else name
    if exe in RAY_BINARIES:
        return RAY_BINARIES[exe]
    for needle, kind in RAY_SCRIPTS:
        if needle in cmd:
            return kind
    if name.startswith("ray-dashboard-"):
        return "ray dashboard (its modules' processes)"
    if "haproxy" in name or "haproxy" in cmd.split(" ")[0]:
        return "haproxy"
    for tool in ("alertmanager", "promtool", "prometheus"):
        if tool in name:
            return tool
    if "pytest" in cmd:
        return "pytest (test process)"
    if "bench/peers/.venvs" in cmd:
        return "peer venv: " + cmd.split("bench/peers/.venvs/")[1].split("/")[0]
    if "stocktrend" in cmd and ("python" in name or "stocktrend" in name):
        parts = cmd.split()
        i = next((j for j, a in enumerate(parts) if a.endswith("/stocktrend") or a in ("stocktrend", "stocktrend.cli")),
                 None)
        sub = next((a for a in parts[i + 1:] if not a.startswith("-")), "?") if i is not None else "?"
        return f"stocktrend {sub} (command)"
    if "python" in name:
        return "other python"
    return "other: " + name


def sample(seen: dict, kinds: dict, me: set[int]) -> None:
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times", "create_time"]):
        info = proc.info
        if info["pid"] in me or info["cpu_times"] is None:
            continue
        key = (info["pid"], info["create_time"])
        ct = info["cpu_times"]
        seen[key] = ct.user + ct.system
        if key not in kinds or kinds[key].startswith(("ray worker: IDLE", "ray worker (untitled)")):
            kinds[key] = kind_of(info)  # a Ray worker's title changes when it takes an actor or a task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=30, help="rows in the table")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds before the command is stopped")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to measure after --")
    before = {(p.pid, p.info["create_time"]): (p.info["cpu_times"].user + p.info["cpu_times"].system)
              for p in psutil.process_iter(["cpu_times", "create_time"]) if p.info["cpu_times"] is not None}
    machine0 = psutil.cpu_times()
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    me = {psutil.Process().pid}
    seen: dict = {}
    kinds: dict = {}
    try:
        while child.poll() is None:
            if time.monotonic() - t0 > args.timeout:
                print(f"suite_cpu: the command ran past {args.timeout:.0f} s; stopping it", file=sys.stderr)
                child.terminate()
                child.wait(30)
                break
            sample(seen, kinds, me)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        child.terminate()
        child.wait(30)
    wall = time.monotonic() - t0
    m1 = psutil.cpu_times()
    machine = (m1.user + m1.system + getattr(m1, "nice", 0)) - (machine0.user + machine0.system
                                                               + getattr(machine0, "nice", 0))
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for key, cpu in seen.items():
        used = cpu - before.get(key, 0.0)
        if used <= 0:
            continue
        by_kind[kinds[key]][0] += used
        by_kind[kinds[key]][1] += 1
    total = sum(v[0] for v in by_kind.values())
    print(f"\ncommand exit {child.returncode}; wall {wall:.0f} s; machine CPU {machine:.0f} s "
          f"({machine / wall:.2f} cores busy on average of {psutil.cpu_count()}); sampled processes {total:.0f} s "
          f"({100 * total / max(machine, 1e-9):.0f}% of the machine's)")
    print(f"{'kind of process':<44} {'CPU s':>8} {'share':>6} {'processes':>9}")
    for kind, (cpu, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{kind[:44]:<44} {cpu:8.1f} {100 * cpu / max(total, 1e-9):5.1f}% {n:9d}")
    sys.exit(child.returncode or 0)


if __name__ == "__main__":
    main()
