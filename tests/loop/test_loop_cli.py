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
from tests.cli import LOOP_DAYS as N_DAYS, LOOP_TRAIN, checkpoint_of as _checkpoint, clone_home

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "stocktrend")
TRAIN = LOOP_TRAIN


@pytest.fixture(scope="module")
def panels(tmp_path_factory, planted_panel):
    d = tmp_path_factory.mktemp("loop-data")
    return {"rw": write_directory(switching_signal_universe(N_DAYS, switch_day=N_DAYS, seed=1), d / "rw"),
            "planted": planted_panel,  # the panel the session's planted_home was trained on (tests/conftest.py)
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

    r = cli(home, "retrain", "--data", panels["planted"], "--epochs", "4", "--no-refit")  # exit 0: promoted
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


def test_gate_keeps_a_planted_champion_against_a_random_walk_challenger(panels, planted_home, tmp_path):
    home = clone_home(planted_home, tmp_path / "home")
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


def test_score_is_idempotent_per_day_and_a_killed_run_leaves_whole_partitions(panels, planted_home, tmp_path):
    home = clone_home(planted_home, tmp_path / "home")
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
    # ... and as Prometheus series (issue 40): the same realised hit rates, for `stocktrend monitoring up` to serve
    prom = (home / "monitoring" / "textfile" / "realised-stocktrend.prom").read_text()
    hit = report["realised"]["hit_rate"]
    assert f'stocktrend_realised_hit_rate{{model="stocktrend",version="1",who="model"}} {hit:.6g}' in prom, prom
    assert "# TYPE stocktrend_realised_days_known gauge" in prom
    bad = cli(home, "score", "--as-of", "2030-01-02", ok=(2,))
    assert "outside the data (" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = cli(home, "score", "--start", "2004-03-13", "--end", "2004-03-14", ok=(2,))  # a weekend
    assert "no trading day" in bad.stderr
    # The evening job's form: the last trading day in the data, the bars from $STOCKTREND_DATA.
    last = pd.read_csv(Path(panels["planted"]) / "SIG0.csv")["Date"].iloc[-1]

    def evening(data_dir):
        return subprocess.run([CLI, "score", "--as-of", "latest", "--engine", "local"], capture_output=True,
                              text=True, timeout=300, env={**env_for(home), "STOCKTREND_DATA": data_dir})
    r = evening(panels["planted"])
    assert r.returncode == 0 and f"as of        : {last} (the last trading day in the data)" in r.stdout, r.stdout
    r = evening(str(tmp_path / "no-bars-here"))
    assert r.returncode == 2 and "no-bars-here" in r.stderr, r.stderr  # the variable is what was read


def test_a_collapsed_champion_is_replaced_forced_moves_are_recorded_and_a_refit_serves_the_recent_past(
        panels, planted_home, tmp_path, monkeypatch):
    """A champion whose output is constant (every weight zeroed: its AUC cannot be computed) does not block a sane
    challenger; a forced promotion is recorded on the version; --refit promotes a version trained through the as-of
    day, and the next retrain gates against the refit's gated parent; the staleness is printed within its bound."""
    import mlflow
    import torch

    from stocktrend.platform.registry import mlflow_registry as registry
    from stocktrend.platform.registry.checkpoint import read_checkpoint, save_checkpoint
    home = clone_home(planted_home, tmp_path / "home")
    ckpt = read_checkpoint(_checkpoint(home, 1))
    ckpt["state_dict"] = {k: torch.zeros_like(v) for k, v in ckpt["state_dict"].items()}
    monkeypatch.setenv("STOCKTREND_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with registry.tracked_run("collapsed", {}) as run:
        path = save_checkpoint(ckpt, tmp_path / "collapsed" / "model.pt")
        v2 = registry.register_checkpoint(path, run.info.run_id, "stocktrend", {}, ckpt=ckpt)
    # The one door: without --force the collapsed version is gated (and fails its floor); with it, recorded.
    r = cli(home, "models", "promote", "stocktrend", str(v2), ok=(3,))
    assert "constant predictions" in r.stdout and "decision     : kept" in r.stdout, r.stdout
    r = cli(home, "models", "promote", "stocktrend", str(v2), "--force")
    assert aliases(home)["production"] == v2
    c = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    tags = c.get_model_version("stocktrend", str(v2)).tags
    assert tags["stocktrend.forced"] == "true" and "--force" in tags["stocktrend.forced_by"]

    r = cli(home, "retrain", "--data", panels["planted"], "--epochs", "4", "--refit")
    out = r.stdout
    assert "the champion's cannot be computed (constant predictions); the floors decide" in out, out
    assert "gate         : PASS" in out and "decision     : promoted" in out, out
    stale = [ln for ln in out.splitlines() if ln.startswith("staleness    :") and "bound" in ln][0]
    days, bound = int(stale.split(": ")[1].split(" ")[0]), int(stale.split("bound ")[1].split(")")[0].split(":")[0])
    assert 0 < days <= bound, stale
    now = aliases(home)
    gated, refit = now["challenger"], now["production"]
    assert refit == gated + 1 and c.get_model_version("stocktrend", str(refit)).tags["stocktrend.refit_of"] == \
        str(gated)
    assert int(c.get_model_version("stocktrend", str(refit)).tags["stocktrend.staleness_days"]) == 0
    # The refit trained through the window; the next retrain judges its gated parent on the window instead.
    r = cli(home, "retrain", "--data", panels["planted"], "--epochs", "4", ok=(0, 3))
    assert f"its gated parent v{gated}, the same configuration, stands in for it" in r.stdout, r.stdout


def test_bad_gate_options_are_one_line_before_any_training(panels, planted_home, tmp_path):
    home = clone_home(planted_home, tmp_path / "home")
    for args, msg in [(("--auc-margin", "-0.1"), "--auc-margin must be >= 0"),
                      (("--change-metric", "acu"), "unknown --change-metric 'acu'"),
                      (("--change-metric", "corr"), "not computed for this classifier"),
                      (("--beat", "ridge"), "no such baseline for a classifier")]:
        r = cli(home, "retrain", "--data", panels["planted"], *args, ok=(2,))
        assert r.stderr.startswith("error: ") and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
            r.stderr
        assert "retrain      :" not in r.stdout  # nothing trained
    assert aliases(home) == {"production": 1}
