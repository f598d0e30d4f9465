"""Ray Tune + Optuna + ASHA with real Ray on 2 CPUs (tiny search space), and through `ray job submit`."""

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from stocktrend.platform.data import cache
from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.registry.checkpoint import Predictor
from stocktrend.platform.data.dataset import build_dataset
from stocktrend.tune.search import SearchOptions, run_search
from tests.ray.local_head import local_head
from tests.ray.test_no_hang import POOR, RUNG
from tests.ray.test_raytrain import ROOT

pytestmark = pytest.mark.slow


def test_three_trial_search_asha_cache_and_registry(ray_local, tmp_path, monkeypatch, planted_dir):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    before = cache.COMPUTE_COUNT["tickers"]
    # A deliberately poor point (chance-level by construction, and the slowest of the space so that it reaches the
    # rung after the preset default it runs beside, on a panel the default learns by then) makes an ASHA stop certain.
    # (planted_dir's tickers copy the market: its signal needs the raw direction, not the panel's excess default)
    opts = SearchOptions(name="ci", preset="tiny", num_samples=3, **RUNG, data_dir=planted_dir, label_kind="binary",
                         model_name="tuned", extra_points=(POOR,))
    res = run_search(opts)
    table = res["table"]
    assert len(table) == 3 and (table["status"] != "error").all()
    # Ranked by val_loss, the table still shows what panel users judge: the rank IC at each trial's best epoch
    assert table["val_rank_ic"].notna().all()
    assert table["stopped_early"].any()  # ASHA stopped at least one trial
    assert (table.loc[table["stopped_early"], "epochs"] < 4).all()
    assert table["sequence_length"].nunique() >= 2  # windows were rebuilt per trial...
    assert cache.COMPUTE_COUNT["tickers"] <= before + 3  # ...from features computed at most once, by the driver
    assert len(list((tmp_path / "cache").glob("features-*.parquet"))) == 1
    assert Path(res["table_path"]).is_file() and (Path(res["table_path"]).with_suffix(".parquet")).is_file()
    # Best trial registered (the name's first version takes production), loadable, predicting on windows of its own
    # sequence length. (--promote belongs to the CLI's gated door: tests/loop/test_loop_cli.py, tests/test_k8s.py.)
    assert res["version"] == 1 and registry.get_version("tuned", "production")["version"] == 1
    path, _ = registry.download("tuned", "production")
    pred = Predictor.load(path)
    assert pred.seq_len == res["best_config"]["sequence_length"]
    data = build_dataset(pred.data_config)
    probs, _ = pred.predict_proba(data.with_transforms(pred.transforms).windows(data.samples["test"][:5]))
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1)
    # The Optuna study is persisted (resumable, inspectable) and every trial is a nested MLflow run.
    study = optuna.load_study(study_name="ci", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 3
    c = registry.client()
    exp = c.get_experiment_by_name(registry.EXPERIMENT)
    parent = c.search_runs([exp.experiment_id], "tags.mlflow.runName = 'search-ci'")[0]
    children = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3


def test_the_model_as_a_search_dimension(ray_local, tmp_path, monkeypatch):
    """--model lstm,gbm: the kind is a search dimension (a torch model and a scikit-learn one side by side); the best
    trial is registered as its own kind."""
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="--metric val_auc"):  # torch and scikit-learn losses do not compare
        run_search(SearchOptions(name="zoo", preset="tiny", model="lstm,gbm"))
    with pytest.raises(ValueError, match="needs a panel of 3 or more tickers"):  # msft alone has no cross-section
        run_search(SearchOptions(name="ric", preset="tiny", model="lstm", metric="val_rank_ic"))
    opts = SearchOptions(name="zoo", preset="tiny", model="lstm,gbm", num_samples=3, max_epochs=2, grace_period=1,
                         model_name="zoo-search", metric="val_auc")
    res = run_search(opts)
    table = res["table"]
    assert (table["status"] != "error").all(), table["error"].tolist()
    assert set(table["model"]) == {"lstm", "gbm"}  # the preset defaults of both are evaluated first
    assert {"lstm.hidden", "gbm.max_leaf_nodes"} <= set(table.columns)
    best_kind = table.iloc[0]["model"]
    path, info = registry.download("zoo-search", str(res["version"]))
    assert Predictor.load(path).model_kind == best_kind
    with pytest.raises(ValueError, match="search them separately"):
        run_search(SearchOptions(name="mixed", preset="tiny", model="lstm,lstm_transformer"))


def test_a_streamed_search_reads_partitions_and_registers_its_best(ray_local, tmp_path, monkeypatch, planted_dir):
    """--data-transport auto on a panel too large for memory (the memory share forced down) streams: the driver
    partitions the features (no in-memory panel is built), each trial fits its own plan for its sequence length /
    top-K by streaming passes and trains reading a ticker at a time; the best trial is registered and predicts on
    windows of its own sequence length. scikit-learn models are refused on the streaming path."""
    from stocktrend.platform.data import transport
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    monkeypatch.setattr(transport, "MEMORY_SHARE", 1e-9)
    with pytest.raises(ValueError, match="search them with --data-transport object-store"):
        run_search(SearchOptions(name="sk", preset="tiny", model="gbm", metric="val_auc", data_dir=planted_dir,
                                 data_transport="stream"))
    opts = SearchOptions(name="streamed", preset="tiny", model="lstm", num_samples=2, max_epochs=2, grace_period=1,
                         scheduler="fifo", data_dir=planted_dir, label_kind="excess", metric="val_rank_ic",
                         epoch_windows=2048, model_name="streamed-search", data_transport="auto")
    res = run_search(opts)
    table = res["table"]
    assert len(table) == 2 and (table["status"] != "error").all(), table.get("error")
    assert table["best_val_rank_ic"].notna().all() and (table["epochs"] == 2).all()
    assert len(list((tmp_path / "cache").glob("features-*.dataset/_manifest.json"))) == 1
    assert not list((tmp_path / "cache").glob("features-*.parquet"))  # no process built the in-memory panel
    pred = Predictor.load(registry.download("streamed-search", str(res["version"]))[0])
    assert pred.seq_len == res["best_config"]["sequence_length"] and pred.model_kind == "lstm"
    from stocktrend.platform.data.stream import build_streamed
    streamed = build_streamed(pred.data_config)
    from stocktrend.platform.data.stream import ticker_windows
    x = ticker_windows(streamed.panel, streamed.plan, streamed.tickers[0], "test")["x"][:5]
    assert x.shape[1] == pred.seq_len and np.isfinite(pred.predict_proba(x)[0]).all()


def test_smoke_search_through_ray_job_submit_as_the_readme_says(tmp_path):
    """Issues 30 + the README (and the smoke search end to end, then `stocktrend tune --promote` on its home): a local `ray start --head` cluster with token authentication (on because
    ~/.ray/auth_token exists), `ray job submit --working-dir . -- python -m stocktrend.tune.search --smoke-test` from a
    shell with RAY_AUTH_MODE=token and no STOCKTREND_HOME: the results land in ~/stocktrend-runs, not in Ray's temporary
    copy of the working directory, and `stocktrend models list` finds the version there."""
    import os
    import subprocess
    import sys
    user = tmp_path / "user"  # the user's home directory, for the cluster and the submitting shell
    user.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    base = {k: v for k, v in os.environ.items()
            if k not in ("STOCKTREND_HOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_MODE")}
    base.update(HOME=str(user), PATH=f"{bin_dir}:{base.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    gen = subprocess.run([f"{bin_dir}/ray", "get-auth-token", "--generate"], env=base, capture_output=True, text=True,
                         timeout=60)
    assert gen.returncode == 0 and (user / ".ray" / "auth_token").is_file(), gen.stderr[-2000:]
    with local_head(env=base) as address:
        cmd = ["ray", "job", "submit", f"--address={address}", "--working-dir", ".", "--", "python", "-m",
               "stocktrend.tune.search", "--smoke-test", "--name", "job"]
        refused = subprocess.run(cmd, env=base, cwd=ROOT, capture_output=True, text=True, timeout=120)
        job = subprocess.run(cmd, env={**base, "RAY_AUTH_MODE": "token"}, cwd=ROOT, capture_output=True, text=True,
                             timeout=500)
    assert refused.returncode != 0 and "RAY_AUTH_MODE" in refused.stdout + refused.stderr  # what the README explains
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "succeeded" in job.stdout and "2 trials in" in job.stdout
    durable = user / "stocktrend-runs"
    assert f"results go to {durable}" in job.stdout  # the one line naming where the job's results went
    assert (durable / "searches" / "job" / "trials.csv").is_file() and (durable / "mlflow.db").is_file()
    listed = subprocess.run([f"{bin_dir}/stocktrend", "models", "list", "stocktrend-smoke-test"],
                            env={**base, "STOCKTREND_HOME": str(durable)}, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "stocktrend-smoke-test v1" in listed.stdout, listed.stdout + listed.stderr
    # The smoke search finished, wrote its trial table and registered its best trial under the smoke-test model name
    # (never the user's production model).
    table = pd.read_csv(durable / "searches" / "job" / "trials.csv")
    assert len(table) == 2 and set(table["status"]) <= {"completed", "stopped early"}, table
    assert table["epochs"].max() <= 2
    assert "registered: stocktrend-smoke-test version 1" in job.stdout

    # Then `stocktrend tune --promote` on that home, the head stopped (its own private instance, under the token the
    # user's ~/.ray holds): the second search's best version is offered to production through the gate (the same
    # rule, report and exit codes as `stocktrend models promote`), never moved there unconditionally.
    again = subprocess.run([f"{bin_dir}/stocktrend", "tune", "--smoke-test", "--name", "smoke2", "--promote"],
                           env={**base, "STOCKTREND_HOME": str(durable)}, capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    assert again.returncode in (0, 3), again.stdout[-3000:] + again.stderr[-3000:]
    out = again.stdout
    assert "registered: stocktrend-smoke-test version 2" in out and "gate         : " in out, out
    assert "candidate v2" in out or "challenger v2" in out, out
    import mlflow
    c = mlflow.MlflowClient(f"sqlite:///{durable / 'mlflow.db'}")
    production = int(c.get_registered_model("stocktrend-smoke-test").aliases["production"])
    assert production == (2 if again.returncode == 0 else 1), out
