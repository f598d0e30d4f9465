"""Issue 25: `stocktrend replay` as a user runs it (a subprocess on a fresh STOCKTREND_HOME, real Ray tasks, the real
gate). A panel whose cross-sectional signal switches on halfway: the gated replay promotes after the switch and what
it served afterwards ranks the tickers (rank IC > 0, t > 2); no step reads a bar dated after its day (the data
layer's read audit, written by every process); Ctrl-C stops it and the same command resumes without redoing finished
steps; the user's production alias is untouched. A random-walk panel: no policy finds anything."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stocktrend.platform.data.synthetic import (random_walk_universe, switching_cross_section_universe,
                                                write_directory)

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "stocktrend")
COMMON = ["--model", "lstm", "--preset", "tiny", "--epochs", "3", "--epoch-windows", "0", "--sequence-length", "10",
          "--top-k", "12", "--gate-days", "40", "--auc-margin", "0.0"]


def env_for(home: Path, **extra) -> dict:
    env = {**os.environ, "STOCKTREND_HOME": str(home), **extra}
    for k in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


def test_replay_promotes_after_the_switch_reads_nothing_ahead_resumes_and_leaves_production(tmp_path):
    import ray
    ray.shutdown()  # the command starts its own local instance
    from stocktrend.platform.evaluation.cross_section import daily_ic, ic_summary
    n, switch = 1500, 850
    u = switching_cross_section_universe(n, switch_day=switch, n_tickers=8, phi=0.6, seed=4)
    data = write_directory(u, tmp_path / "switch")
    dates = u.tickers["CS0"].index
    home, audit = tmp_path / "home", tmp_path / "audit.jsonl"
    # The user's own production model, which a replay must never touch.
    import mlflow
    home.mkdir()
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    c.create_registered_model("stocktrend")
    c.create_model_version("stocktrend", source=str(tmp_path), run_id=None)
    c.set_registered_model_alias("stocktrend", "production", "1")

    cmd = [CLI, "replay", "--data", data, "--start", str(dates[650].date()), "--end", str(dates[n - 10].date()),
           "--every", "84", "--name", "sw", *COMMON]
    env = env_for(home, STOCKTREND_READ_AUDIT=str(audit))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.strip().startswith("step 3/"):
            p.send_signal(signal.SIGINT)
            break
    rest, _ = p.communicate(timeout=300)
    assert p.returncode == 130, "".join(seen) + rest
    state = json.loads((home / "replays" / "sw" / "state.json").read_text())
    done = {k for k, r in state["steps"].items() if "decision" in r}
    assert {"0", "1", "2"} <= done

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"resuming after step {len(done)} ({len(done)} done)" in r.stdout
    for k in done:  # finished steps were not trained again
        assert f"  step {int(k) + 1}/" not in r.stdout
    state = json.loads((home / "replays" / "sw" / "state.json").read_text())
    steps = state["steps"]
    versions = [int(s["version"]) for s in steps.values()]
    versions += [int(s["refit"]) for s in steps.values()]
    assert sorted(versions) == list(range(1, 2 * len(steps) + 1))  # two versions per step, none twice

    # Every step also trained its refit on every labelled day (the default gated-refit policy), with lineage.
    assert all(int(s["refit"]) == int(s["version"]) + 1 for s in steps.values()), steps
    # The gate promoted a version trained after the switch.
    switch_day = dates[switch]
    promoted_after = [s for s in steps.values() if pd.Timestamp(s["day"]) > switch_day and s["decision"] == "promoted"]
    assert promoted_after, json.dumps(steps, indent=1)
    # What the gated policy served after the switch (plus the gate window, so a post-switch model serves) ranks.
    served = pd.read_parquet(home / "reports" / "replay-sw" / "served.parquet")
    after = served[(served["policy"] == "gated") & (served["date"] > pd.Timestamp(promoted_after[0]["day"]))]
    s = ic_summary(daily_ic(after.dropna(subset=["fwd"])), 5)
    assert s["rank_ic_mean"] > 0 and s["rank_ic_t"] > 2, s
    refit = served[(served["policy"] == "gated-refit") & (served["date"] > pd.Timestamp(promoted_after[0]["day"]))]
    s = ic_summary(daily_ic(refit.dropna(subset=["fwd"])), 5)
    assert s["rank_ic_mean"] > 0 and s["rank_ic_t"] > 2, s
    assert "realised gated: rank IC" in r.stdout and "verdict:" in r.stdout

    # No step read a bar dated after its day, nor any load uncut (every process appended what it loaded, tagged with
    # the step it served).
    from stocktrend.platform.data.universes import audit_violations
    bad, n_step_reads = audit_violations(audit)
    assert n_step_reads >= len(steps) and not bad, bad
    # The user's production model is untouched; the replay has its own name.
    assert {k: int(v) for k, v in c.get_registered_model("stocktrend").aliases.items()} == {"production": 1}
    assert "production" in c.get_registered_model("replay-sw").aliases


def test_on_a_random_walk_no_policy_finds_anything(tmp_path):
    import ray
    ray.shutdown()
    n = 1400
    u = random_walk_universe(n, n_tickers=30, seed=21)  # 30 names: a daily rank IC sd of ~0.19, not ~0.33
    data = write_directory(u, tmp_path / "rw")
    dates = u.tickers["RW0"].index
    r = subprocess.run([CLI, "replay", "--data", data, "--start", str(dates[650].date()),
                        "--end", str(dates[n - 10].date()), "--every", "126", "--name", "rw", "--policy", "always",
                        *COMMON], env=env_for(tmp_path / "home"), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "home" / "reports" / "replay-rw" / "replay.json").read_text())
    for policy in ("gated", "always", "never"):
        assert abs(res["policies"][policy]["rank_ic"]) < 0.05, res["policies"]


def test_bad_replays_are_one_line(tmp_path):
    home = tmp_path / "home"

    def run(*args):
        r = subprocess.run([CLI, "replay", *args], env=env_for(home), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, \
            r.stderr
        return r.stderr
    assert "is not after --start" in run("--start", "2010-01-04", "--end", "2009-01-02")
    assert "below the label horizon" in run("--start", "2010-01-04", "--end", "2012-01-02", "--every", "3")
    assert "leaves" in run("--start", "1987-06-01", "--end", "1990-01-02")  # MSFT starts in 1986
