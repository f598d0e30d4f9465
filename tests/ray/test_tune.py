"""Ray Tune + Optuna + ASHA with real Ray on 2 CPUs (tiny search space), and through `ray job submit`."""

from pathlib import Path

import numpy as np
import optuna
import pytest

from stocktrend.platform.data import cache
from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.registry.checkpoint import Predictor
from stocktrend.platform.data.dataset import build_dataset
from stocktrend.tune.search import SearchOptions, run_search
from tests.ray.local_head import local_head, submit
from tests.ray.test_no_hang import POOR
from tests.ray.test_raytrain import ROOT

pytestmark = pytest.mark.slow


def test_three_trial_search_asha_cache_and_registry(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    before = cache.COMPUTE_COUNT["tickers"]
    # A deliberately poor point (tiny learning rate, and the slowest of the space so that it reaches each rung after
    # the preset default it runs beside) makes an ASHA stop certain.
    poor = POOR
    opts = SearchOptions(name="ci", preset="tiny", num_samples=3, max_epochs=4, grace_period=1,
                         model_name="tuned", promote=True, extra_points=(poor,))
    res = run_search(opts)
    table = res["table"]
    assert len(table) == 3 and (table["status"] != "error").all()
    assert table["stopped_early"].any()  # ASHA stopped at least one trial
    assert (table.loc[table["stopped_early"], "epochs"] < 4).all()
    assert table["sequence_length"].nunique() >= 2  # windows were rebuilt per trial...
    assert cache.COMPUTE_COUNT["tickers"] <= before + 1  # ...from features computed at most once, by the driver
    assert len(list((tmp_path / "cache").glob("features-*.parquet"))) == 1
    assert Path(res["table_path"]).is_file() and (Path(res["table_path"]).with_suffix(".parquet")).is_file()
    # Best trial registered, promoted, loadable, predicting on windows of its own sequence length.
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


def test_search_through_ray_job_submit(tmp_path):
    with local_head() as address:
        job = submit(address, ROOT, {"STOCKTREND_HOME": str(tmp_path)}, "-m", "stocktrend.tune.search", "--preset",
                     "tiny", "--num-samples", "2", "--max-epochs", "2", "--grace-period", "1", "--name", "job")
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "succeeded" in job.stdout and "2 trials in" in job.stdout
    assert (tmp_path / "searches" / "job" / "trials.csv").is_file()
