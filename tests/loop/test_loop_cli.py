"""Issue 23 as a user runs it: `stocktrend train`, `retrain` and `score` as subprocesses on a fresh STOCKTREND_HOME,
the real MLflow store, the real gate. Three panels with the same ticker and market names: a random walk, a planted
signal (each ticker copies the market 5 days later), and a random walk whose signal switches on just before the gate
window, so that what the gate must decide is certain, not a matter of how fast a tiny model learns."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stocktrend.platform.data.synthetic import switching_signal_universe, write_directory

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "stocktrend")
N_DAYS = 1100
TRAIN = ["train", "--model", "lstm", "--preset", "tiny", "--epochs", "4", "--accumulate", "1", "--top-k", "8",
         "--sequence-length", "10"]


@pytest.fixture(scope="module")
def panels(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop-data")
    return {"rw": write_directory(switching_signal_universe(N_DAYS, switch_day=N_DAYS, seed=1), d / "rw"),
            "planted": write_directory(switching_signal_universe(N_DAYS, switch_day=0, seed=1), d / "planted"),
            # the signal starts 90 days before the end: after the challenger's training and validation days,
            # inside the gate window (the last 63 labelled days)
            "switch": write_directory(switching_signal_universe(N_DAYS, switch_day=N_DAYS - 90, seed=1),
                                      d / "switch")}


def env_for(home: Path) -> dict:
    env = {**os.environ, "STOCKTREND_HOME": str(home)}
    for k in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


def cli(home: Path, *args: str, ok: tuple[int, ...] = (0,), timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([CLI, *args], env=env_for(home), capture_output=True, text=True, timeout=timeout)
    assert r.returncode in ok, (args, r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    return r


def aliases(home: Path, name: str = "stocktrend") -> dict[str, int]:
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return {a: int(v) for a, v in (c.get_registered_model(name).aliases or {}).items()}


def test_gate_promotes_a_planted_challenger_survives_sigkill_and_never_sees_the_window(panels, tmp_path):
    home = tmp_path / "home"
    r = cli(home, *TRAIN, "--data", panels["rw"])
    assert "served       : stocktrend@production = version 1 (the first version takes production)" in r.stdout
    assert aliases(home) == {"production": 1}

    # SIGKILL while the challenger trains: production and every other alias stay as they were.
    p = subprocess.Popen([CLI, "retrain", "--data", panels["planted"], "--epochs", "50"], env=env_for(home),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if line.startswith("retrain      :"):
            time.sleep(2)
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert aliases(home) == {"production": 1}

    r = cli(home, "retrain", "--data", panels["planted"], "--epochs", "4")  # exit 0: promoted
    out = r.stdout
    assert "gate         : PASS" in out and "decision     : promoted" in out, out
    now = aliases(home)
    assert now["production"] == now["challenger"] != 1 and now["previous_production"] == 1
    # The gate window holds no day either model saw: checked here again from the checkpoints' recorded dates.
    report = json.loads(next((home / "reports").glob("gate-stocktrend-v*/gate.json")).read_text())
    w0 = pd.Timestamp(report["window"][0])
    import torch
    from stocktrend.platform.data.splits import check_before_window
    dates = pd.DatetimeIndex(pd.read_csv(Path(panels["planted"]) / "SIG0.csv")["Date"])
    for version, segs in ((1, ("train", "val")), (now["production"], ("train", "val"))):
        ckpt = torch.load(_checkpoint(home, version), weights_only=True)
        seen = {f"v{version} {s}": tuple(ckpt["segment_dates"][s]) for s in segs}
        assert check_before_window(seen, w0, dates, 5) == [], seen
    # The report is an artifact of the challenger's MLflow run.
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    mv = c.get_model_version("stocktrend", str(now["production"]))
    assert {a.path for a in c.list_artifacts(mv.run_id, "gate")} == {"gate/gate.md", "gate/gate.json"}
    assert c.get_run(mv.run_id).data.tags["stocktrend.gate"] == "pass"


def _checkpoint(home: Path, version: int) -> Path:
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return home / "models" / c.get_model_version("stocktrend", str(version)).run_id / "model.pt"


def test_gate_keeps_a_planted_champion_against_a_random_walk_challenger(panels, tmp_path):
    home = tmp_path / "home"
    cli(home, *TRAIN, "--data", panels["planted"])
    dry = cli(home, "retrain", "--data", panels["switch"], "--epochs", "4", "--gate", "dry-run", ok=(3,))
    assert "decision     : dry-run: would keep" in dry.stdout and aliases(home) == {"production": 1}
    r = cli(home, "retrain", "--data", panels["switch"], "--epochs", "4", ok=(3,))  # exit 3: kept
    assert "gate         : FAIL" in r.stdout and "decision     : kept" in r.stdout
    assert aliases(home) == {"production": 1, "challenger": 3}
    # What the user gets wrong is one line and exit 2.
    bad = cli(home, "retrain", "--data", panels["switch"], "--as-of", "1990-01-01", ok=(2,))
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert "before" in bad.stderr or "outside" in bad.stderr
    bad = cli(home, "retrain", "--model", "nothing-here", ok=(2,))
    assert "unknown model 'nothing-here'" in bad.stderr


def test_score_is_idempotent_per_day_and_a_killed_run_leaves_whole_partitions(panels, tmp_path):
    home = tmp_path / "home"
    cli(home, *TRAIN, "--data", panels["planted"])
    r = cli(home, "score", "--start", "2003-10-01", "--end", "2004-03-19", "--engine", "local")
    assert "scored       : stocktrend v1: 3 ticker(s)" in r.stdout
    root = home / "scores" / "stocktrend" / "v1"
    files = sorted(root.glob("as_of=*/scores.parquet"))
    first = {f: f.stat().st_mtime_ns for f in files}
    frame = pd.concat([pd.read_parquet(f) for f in files])
    assert frame.groupby(["ticker", "as_of"]).size().max() == 1 and frame["ticker"].nunique() == 3
    # The same day again: its partition is replaced, the others are untouched, still one row per ticker and day.
    cli(home, "score", "--as-of", "2004-01-05", "--engine", "local")
    again = pd.concat([pd.read_parquet(f) for f in sorted(root.glob("as_of=*/scores.parquet"))])
    assert len(again) == len(frame) and again.groupby(["ticker", "as_of"]).size().max() == 1
    changed = [f for f in files if f.stat().st_mtime_ns != first[f]]
    assert [f.parent.name for f in changed] == ["as_of=2004-01-05"]
    # A run that dies while writing (os._exit inside the third file's write): every partition is whole, old or new.
    crash = f"""
import os
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
from stocktrend.loop import score as s
orig, n = pq.write_table, [0]
def dying(table, where, **kw):
    n[0] += 1
    if n[0] == 3:
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        os._exit(9)
    orig(table, where, **kw)
pq.write_table = dying
frame = pd.concat([pd.read_parquet(f) for f in sorted(Path({str(root)!r}).glob("as_of=*/scores.parquet"))])
frame["confidence"] = 0.123
s.write_partitions(frame, Path({str(home / "scores")!r}), s.resolve("stocktrend@1"))
"""
    p = subprocess.run([sys.executable, "-c", crash], env=env_for(home), capture_output=True, text=True, timeout=300)
    assert p.returncode == 9, p.stderr[-2000:]
    after = sorted(root.glob("as_of=*/scores.parquet"))
    assert after == files  # no partition lost, none added
    parts = [pd.read_parquet(f) for f in after]  # every one readable: no half-written file is visible
    new = [f for f, part in zip(after, parts) if (part["confidence"] == 0.123).all()]
    assert len(new) == 2 and all((part["confidence"] != 0.123).all() for f, part in zip(after, parts) if f not in new)
    assert list(root.glob("as_of=*/.scores.parquet.tmp-*"))  # the dead run's temporary file, invisible to readers
    cli(home, "score", "--start", "2003-10-01", "--end", "2004-03-19", "--engine", "local")  # the next run works
    assert not list(root.glob("as_of=*/.scores.parquet.tmp-*"))  # and clears what the dead run left
    # Offline monitoring of those scores: drift against the training reference, realised performance.
    r = cli(home, "monitor", "--start", "2003-10-01", "--end", "2004-03-19")
    assert "drift        : largest input PSI" in r.stdout and "realised     : hit rate" in r.stdout, r.stdout
    report = json.loads((home / "reports" / "monitor-stocktrend-v1" / "monitor.json").read_text())
    assert report["predictions"] == len(frame) and report["realised"]["predictions_known"] > 0
    assert report["psi"] and all(v >= 0 for v in report["psi"].values())
    bad = cli(home, "score", "--as-of", "2030-01-02", ok=(2,))
    assert "outside the data (" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = cli(home, "score", "--start", "2004-03-13", "--end", "2004-03-14", ok=(2,))  # a weekend
    assert "no trading day" in bad.stderr
