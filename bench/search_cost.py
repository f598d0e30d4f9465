"""What a search trial costs beyond the epochs it trains, and how busy the cores are during a search (issue 11).

    python bench/search_cost.py [--modes nested,inproc-2x1,inproc-1x2] [--trials 6] [--max-epochs 6]
    python bench/search_cost.py --quickstart          # also: quickstart wall time on a fresh home, old vs new path

Modes, all the same search (embedded MSFT, small space, Optuna TPE seed 42, ASHA grace 2):
- nested:      every trial launches a 1-worker Ray Train run inside the trial (the path before issue 11), 1 at a time
               (a trial holds 2 CPUs: its driver and the Train worker).
- inproc-2x1:  the trial trains in its own process, 1 CPU / 1 torch thread each, 2 trials at a time.
- inproc-1x2:  the trial trains in its own process with 2 CPUs / 2 torch threads, 1 at a time.

Per trial: wall = trial start to end as seen by the driver (TrialEvents); epochs = reports; epoch time = the median of
that trial's reports after the first; fixed cost = wall - epochs x epoch time (process start, imports, re-windowing,
model build, the first epoch's warm-up, checkpoint and report overhead). CPU utilisation = share of both cores busy
(/proc/stat) between the search's start and end. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        vals = [float(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class CpuSampler:
    def __enter__(self):
        self.busy0, self.total0 = cpu_times()
        return self

    def __exit__(self, *exc):
        busy1, total1 = cpu_times()
        self.utilisation = (busy1 - self.busy0) / max(1e-9, total1 - self.total0)


def run_mode(mode: str, args) -> dict:
    import ray

    from stocktrend.tune.search import SearchOptions, run_search
    kw = {"nested": dict(nested_train=True, max_concurrent=1),
          "inproc-2x1": dict(max_concurrent=2, cpus_per_worker=1.0),
          "inproc-1x2": dict(max_concurrent=1, cpus_per_worker=2.0)}[mode]
    opts = SearchOptions(name=f"bench-{mode}-{int(time.time())}", preset=args.preset, num_samples=args.trials,
                         max_epochs=args.max_epochs, grace_period=args.grace_period, register=False, seed=42, **kw)
    t0 = time.perf_counter()
    with CpuSampler() as cpu:
        res = run_search(opts)
    wall = time.perf_counter() - t0
    fixed, epoch_s, epochs = [], [], 0
    for t in res["trial_timing"].values():
        e = t["epoch_s"]
        epochs += len(e)
        if len(e) >= 2:
            med = statistics.median(e[1:])
            epoch_s.append(med)
            fixed.append(t["wall_s"] - len(e) * med)
    left = len(ray.util.placement_group_table() and [g for g in ray.util.placement_group_table().values()
                                                     if g["state"] != "REMOVED"])
    return {"mode": mode, "wall_s": wall, "trial_epochs": epochs, "epochs_per_hour": epochs / wall * 3600,
            "fixed_s": statistics.median(fixed) if fixed else float("nan"),
            "epoch_s": statistics.median(epoch_s) if epoch_s else float("nan"), "cpu": cpu.utilisation,
            "best": float(res["table"].iloc[0]["best_val_loss"]), "groups_left": left,
            "cpus_free": ray.available_resources().get("CPU", 0)}


def quickstart(nested: bool) -> float:
    home = tempfile.mkdtemp(prefix="qs-bench-")
    cli = str(Path(sys.executable).parent / "stocktrend")
    import socket
    with socket.socket() as sock:  # a port nobody holds (the previous run's endpoint may still be closing)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [cli, "quickstart", "--no-wait", "--port", str(port)] + (["--nested-train"] if nested else [])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env={**os.environ, "STOCKTREND_HOME": home}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        print(p.stdout[-2000:], p.stderr[-2000:])
    stages = [ln for ln in p.stdout.splitlines() if "] done in" in ln]
    print(f"  quickstart {'nested (before)' if nested else 'in-process (after)'}: {wall:.0f} s; " + "; ".join(stages))
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="nested,inproc-2x1,inproc-1x2")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--max-epochs", type=int, default=6)
    ap.add_argument("--grace-period", type=int, default=2)
    ap.add_argument("--quickstart", action="store_true", help="also time `stocktrend quickstart` old vs new")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("STOCKTREND_HOME", tempfile.mkdtemp(prefix="search-bench-"))
    from stocktrend.platform import console
    from stocktrend.platform.data.cache import load_or_build_panel
    from stocktrend.platform.training.distributed import init_ray, shutdown_ray
    from stocktrend.platform.data.universes import load_universe
    console.setup("bench-search", verbose=False)
    load_or_build_panel(load_universe(None, None))  # the feature cache, outside every timing
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        init_ray(verbose=False)
        rows.append(run_mode(mode, args))
        shutdown_ray()
        print(f"  {rows[-1]}", flush=True)
    print(f"\n{args.trials} trials x <= {args.max_epochs} epochs, preset {args.preset}, {os.cpu_count()} cores\n")
    print("| mode | wall s | trial-epochs | trial-epochs/hour | fixed cost per trial s | epoch s | CPU busy | best "
          "val_loss | placement groups left / CPUs free |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']:.0f} | {r['trial_epochs']} | {r['epochs_per_hour']:.0f} | "
              f"{r['fixed_s']:.1f} | {r['epoch_s']:.2f} | {r['cpu']:.0%} | {r['best']:.4f} | "
              f"{r['groups_left']} / {r['cpus_free']:g} |")
    if args.quickstart:
        print("\nquickstart, budget 1, fresh STOCKTREND_HOME each, --no-wait (serving included):")
        before = quickstart(nested=True)
        after = quickstart(nested=False)
        print(f"| quickstart wall | before (nested trials) {before:.0f} s | after {after:.0f} s | "
              f"{before / after:.2f}x |")


if __name__ == "__main__":
    main()
