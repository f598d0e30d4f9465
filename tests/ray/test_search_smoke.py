"""`python -m stocktrend.tune.search --smoke-test` as a user (or `ray job submit`) runs it: a subprocess with its own
STOCKTREND_HOME and local Ray instance; the tiny search must finish, write its trial table and register its best
trial under the smoke-test model name (never the user's production model)."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.ray.local_head import ENV

pytestmark = pytest.mark.slow


def test_search_smoke_test_runs_end_to_end(tmp_path):
    import ray
    ray.shutdown()  # the subprocess starts its own local instance
    env = {**ENV, "STOCKTREND_HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "stocktrend.tune.search", "--smoke-test", "--name", "smoke"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "home" / "searches" / "smoke" / "trials.csv")
    assert len(table) == 2 and set(table["status"]) <= {"completed", "stopped early"}
    assert table["epochs"].max() <= 2
    assert "registered: stocktrend-smoke-test version 1" in proc.stdout
    # `stocktrend tune --promote`: the second search's best version is offered to production through the gate (the
    # same rule, report and exit codes as `stocktrend models promote`), never moved there unconditionally.
    cli = os.path.join(os.path.dirname(sys.executable), "stocktrend")
    again = subprocess.run([cli, "tune", "--smoke-test", "--name", "smoke2", "--promote"], env=env,
                           capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert again.returncode in (0, 3), again.stdout[-3000:] + again.stderr[-3000:]
    out = again.stdout
    assert "registered: stocktrend-smoke-test version 2" in out and "gate         : " in out, out
    assert "candidate v2" in out or "challenger v2" in out, out
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    production = int(c.get_registered_model("stocktrend-smoke-test").aliases["production"])
    assert production == (2 if again.returncode == 0 else 1), out
