"""What losing a node costs the endpoint: a head without CPUs and two 1-CPU worker nodes (ray.cluster_utils.Cluster
on this machine), two replicas one per node behind Ray's proxy on the head, one client sending POST /predict/ticker
one after another (idempotent: retried on a connection error or a 5xx, up to 8 times in about 6 s). A node holding a
replica is removed (its raylet and workers killed) and a replacement node joins at once, as KubeRay recreates a
deleted pod.

    python bench/node_loss.py --runs 3 --after 20

Prints per run: requests sent, failed on the first try, failed after retries, retries, time until Serve noticed
(a replica not RUNNING) and until two replicas ran again (one on the new node), p50 and max request latency with
retries; then medians. The scenario is tests/ray/node_loss.py's ``endpoint`` (the test checks the same run's
result).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--after", type=float, default=20.0, help="seconds of traffic after the replacement")
    args = ap.parse_args()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    rows = []
    for k in range(args.runs):
        folder = tempfile.mkdtemp(prefix="bench-node-loss-")
        proc = subprocess.run([sys.executable, "-m", "tests.ray.node_loss", "endpoint", folder, str(args.after)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or "RESULT " not in proc.stdout:
            print(f"run {k + 1}: failed\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
        rows.append(r)
        print(f"run {k + 1}: sent {r['sent']}, failed first try {r['failed_first_try']}, failed after retries "
              f"{r['failed_after_retries']}, retries {r['retries']} ({r['codes']}), loss noticed after "
              f"{_s(r['detected_s'])}, replica replaced after {_s(r['replaced_s'])}, p50 {r['p50_ms']:.1f} ms, "
              f"max {r['max_ms']:.0f} ms", flush=True)
    if rows:
        med = {key: statistics.median(float(r[key]) for r in rows if r[key] is not None)
               for key in ("sent", "failed_first_try", "failed_after_retries", "detected_s", "replaced_s", "max_ms")
               if any(r[key] is not None for r in rows)}
        print("median over runs: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))


def _s(v) -> str:
    return "-" if v is None else f"{v:.1f} s"


if __name__ == "__main__":
    main()
