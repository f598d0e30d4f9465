"""The daily loop's policies side by side: gated, gated-refit, always and never on the same trained versions and the
same days, realised rank IC with Newey-West 95% intervals; beside it the reference, the same model trained on the
signal period (a panel with the signal throughout, test segment rank IC).

    python bench/loop_policies.py                       # the switching panel (the replay tests' kind), gbm
    python bench/loop_policies.py --universe us29 --start 2021-01-04 --end 2024-12-20 --every 63

The switching panel: 8 independent random walks whose daily return repeats phi x their own return 5 days earlier from
``--switch`` on (a cross-sectional signal that switches on part-way); the replay starts at the switch and serves the
4 years after it (``--after`` trading days), retraining every ``--every`` days. Each command runs in a fresh
STOCKTREND_HOME and prints its own figures; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "stocktrend")


def run(cmd: list[str], home: Path, timeout: int) -> str:
    env = {**os.environ, "STOCKTREND_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(cmd)}  ({time.perf_counter() - t0:.0f} s, exit {r.returncode})", flush=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
        raise SystemExit(1)
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gbm")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--label", default="binary")
    ap.add_argument("--universe", default=None, help="an embedded universe instead of the switching panel")
    ap.add_argument("--start")
    ap.add_argument("--end")
    ap.add_argument("--every", type=int, default=120)
    ap.add_argument("--val-days", type=int, default=126)
    ap.add_argument("--train-days", type=int, default=0)
    ap.add_argument("--gate-days", type=int, default=63)
    ap.add_argument("--switch", type=int, default=1250)
    ap.add_argument("--after", type=int, default=1008)
    ap.add_argument("--phi", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=5400)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loop-policies-"))
    common = ["--model", a.model, "--preset", a.preset, "--label", a.label, "--epochs", str(a.epochs),
              "--gate-days", str(a.gate_days), "--val-days", str(a.val_days), "--train-days", str(a.train_days),
              "--policy", "gated-refit", "--every", str(a.every), "--name", "bench"]
    ref = None
    if a.universe is None:
        from stocktrend.platform.data.synthetic import switching_cross_section_universe, write_directory
        n = a.switch + a.after + 10
        u = switching_cross_section_universe(n, switch_day=a.switch, n_tickers=8, phi=a.phi, seed=a.seed)
        src = ["--data", write_directory(u, root / "switch")]
        days = u.tickers["CS0"].index
        start, end = str(days[a.switch].date()), str(days[n - 10].date())
        # The reference: the same model on a panel with the signal throughout, its test segment's rank IC.
        always = switching_cross_section_universe(n, switch_day=0, n_tickers=8, phi=a.phi, seed=a.seed + 1)
        out = run([CLI, "train", "--model", a.model, "--preset", a.preset, "--label", a.label, "--epochs",
                   str(a.epochs), "--data", write_directory(always, root / "always")], root / "ref", a.timeout)
        out = run([CLI, "evaluate"], root / "ref", a.timeout)
        line = [ln for ln in out.splitlines() if ln.startswith("cross-section")]
        print(line[0] if line else out[-2000:])
        ref = float(line[0].split("rank IC ")[1].split(" ")[0]) if line else None
    else:
        src, start, end = ["--universe", a.universe], a.start, a.end
    run([CLI, "replay", *src, "--start", start, "--end", end, *common], root / "replay", a.timeout)
    res = json.loads((root / "replay" / "reports" / "replay-bench" / "replay.json").read_text())
    print(f"\n{a.model} ({a.preset}, label {a.label}), a step every {a.every} days, gate window {a.gate_days} days, "
          f"validation {a.val_days} days, "
          f"training window {a.train_days or 'all'} days, "
          f"{start} .. {end}" + (f"; reference (trained on the signal period): rank IC {ref:.3f}" if ref else ""))
    print("| policy | rank IC | Newey-West 95% | t | share of the reference |\n|---|---|---|---|---|")
    for p, r in res["policies"].items():
        lo, hi = r.get("rank_ic_ci") or (float("nan"), float("nan"))
        share = f"{r['rank_ic'] / ref:.2f}" if ref else ""
        print(f"| {p} | {r['rank_ic']:.3f} | {lo:+.3f} .. {hi:+.3f} | {r['rank_ic_t']:.1f} | {share} |")
    print(f"verdict: {res['verdict']}")


if __name__ == "__main__":
    main()
