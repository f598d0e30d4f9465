"""Every model of the zoo (tiny preset): trains one epoch through the platform's train job, registers as an MLflow
Model, reloads from its checkpoint with identical outputs, loads through MLflow's own pyfunc client with the same
outputs, is evaluated next to baselines; scikit-learn model files cannot carry code."""

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stocktrend.models import zoo
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.synthetic import planted_signal_universe
from stocktrend.platform.registry.checkpoint import CheckpointError, Predictor, read_checkpoint, save_checkpoint
from stocktrend.platform.training.jobs import train_job
from stocktrend.platform.training.local import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A user data directory (so that `evaluate` rebuilds exactly this data from the checkpoint's data config)."""
    d = tmp_path_factory.mktemp("zoo-data")
    u = planted_signal_universe(1100, noise=0.001, seed=3, n_tickers=3)
    (d / "market").mkdir()
    for name, frame in u.tickers.items():
        frame.rename_axis("Date").reset_index().to_csv(d / f"{name}.csv", index=False)
    for name, frame in u.market.items():
        frame.rename_axis("Date").reset_index().to_csv(d / "market" / f"{name}.csv", index=False)
    return str(d)


def _expected(model, kind, x):
    """The outputs straight from the trained in-memory model (no checkpoint, no Predictor)."""
    if zoo.get(kind).is_sklearn:
        return model.estimator.predict_proba(x.reshape(len(x), -1))
    with torch.no_grad():
        out = model.eval().outputs(torch.from_numpy(x))
    if "logits" in out:
        probs = torch.softmax(out["logits"].float(), -1).numpy()
        return np.column_stack([probs, out["ret"].numpy()]) if "ret" in out else probs
    return out["ret"].numpy()[:, None]


@pytest.mark.parametrize("kind", zoo.KINDS)
def test_model_trains_registers_reloads_and_evaluates(kind, data_dir, tmp_path):
    import mlflow

    from stocktrend.platform.evaluation.report import EvalOptions, evaluate
    cfg = DataConfig(data_dir=data_dir, top_k=16, sequence_length=20)
    cfg = replace(cfg, label_kind=zoo.get(kind).label_for(cfg.label_kind))
    out = train_job(cfg, TrainConfig(preset="tiny", model=kind, epochs=1, batch_size=64, accumulate=1,
                                     progress=False), model_name=f"zoo-{kind}")
    assert out.version is not None and read_checkpoint(out.checkpoint_path)["model_kind"] == kind
    x = out.data.windows(out.data.samples["test"][:40])
    pred = Predictor.load(out.checkpoint_path)
    got, _ = pred.predict_proba(x)
    expected = _expected(out.fit.module.model, kind, x)
    np.testing.assert_array_equal(got[:, :expected.shape[1]], expected.astype(got.dtype))
    assert pred.output_names[:2] == (["return", "confidence"] if kind == "lstm_transformer"
                                     else ["Bajista", "Alcista"])
    if kind == "lstm_transformer":  # a calibrated probability that the predicted direction is right
        assert ((got[:, 1] > 0) & (got[:, 1] < 1)).all() and "calibration" in pred.ckpt
    # MLflow's own client loads the registered version and answers the same.
    pyfunc = mlflow.pyfunc.load_model(f"models:/zoo-{kind}/{out.version}")
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(x)), got)
    assert pyfunc.metadata.metadata["model_kind"] == kind
    res = evaluate(f"zoo-{kind}@{out.version}", tmp_path / "report", EvalOptions(bootstrap=50), log_to_mlflow=False)
    assert Path(res["report"]).is_file() and res["model_kind"] == kind
    if kind == "lstm_transformer":
        assert {"model", "zero", "momentum", "ridge", "gradient_boosting"} <= set(res["regression"])
        assert {"mae", "corr", "hit_rate", "rank_corr"} <= set(res["regression"]["model"])
    else:
        assert {"model", "majority", "momentum", "logistic_regression"} <= set(res["scores"])
    if kind == "mtl_lstm":
        assert "mae" in res["regression"]["model"]  # the return head is scored too
    assert "cross_section" in res  # three tickers: IC and long-short next to the baselines
    from stocktrend.cli.models import summary_lines
    lines = summary_lines(res)  # what `stocktrend evaluate` prints: every baseline's rank IC beside the model's
    baselines = [n for n in res["cross_section"]["ic"] if n != "model"]
    assert baselines and all(any(ln.startswith(f"{n[:13]:<13}: rank IC") for ln in lines) for n in baselines), lines


def test_regression_label_is_refused_for_classifiers():
    with pytest.raises(ValueError, match="lstm predicts classes"):
        zoo.get("lstm").label_for("regression")
    assert zoo.get("lstm_transformer").label_for("binary") == "regression"
    # a panel's market-neutral direction: the regressor takes the day's rank of the return (bench/README.md, issue 38)
    assert zoo.get("lstm_transformer").label_for("excess") == "rank"
    assert zoo.get("lstm_transformer").label_for("excess_regression") == "excess_regression"  # asked for: kept


def test_the_regressors_mean_is_pulled_by_its_error_alone_and_its_variance_by_the_nll():
    """lstm_transformer's loss: the mean by Huber (each sample's pull on it does not shrink where the net predicts a
    large variance, which is how the joint NLL let it explain a weak signal away as noise), the log-variance by the
    Gaussian NLL around the detached mean; ``mean_loss="nll"`` keeps seed 003's joint NLL."""
    import torch
    from stocktrend.models.module import TrendModule

    def grads(mean_loss, log_var):
        m = TrendModule({"n_features": 4, "mean_loss": mean_loss}, model_kind="lstm_transformer",
                        label_kind="excess_regression")
        ret = torch.tensor([0.01, 0.01], requires_grad=True)
        lv = torch.tensor(log_var, requires_grad=True)
        m._loss({"ret": ret, "log_var": lv}, torch.tensor([0.0, 0.0]), None).backward()
        return ret.grad, lv.grad
    calm, wild = grads("huber", [-9.0, -9.0]), grads("huber", [-9.0, -5.0])
    assert torch.allclose(calm[0], wild[0]) and calm[0].abs().min() > 0  # the same pull whatever the variance
    assert wild[1][1] != calm[1][1]  # the variance still learns from the error
    nll = grads("nll", [-9.0, -5.0])[0]
    assert nll[1].abs() < nll[0].abs() / 10  # the joint NLL: a high-variance sample barely moves the mean
    spec = zoo.get("lstm_transformer")
    assert {spec.preset(p).mean_loss for p in spec.presets} == {"huber"}  # what every preset trains with
    assert spec.config_from_dict({"n_features": 4}).mean_loss == "nll"  # a checkpoint from before: as it was trained
    with pytest.raises(ValueError, match="mean_loss"):
        zoo.get("lstm_transformer").config(mean_loss="mse")


class Evil:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


def test_crafted_sklearn_model_files_are_refused(data_dir, tmp_path):
    import skops.io as sio
    cfg = DataConfig(data_dir=data_dir, top_k=8, sequence_length=10)
    out = train_job(cfg, TrainConfig(preset="tiny", model="rf", epochs=1, progress=False), register=False)
    ckpt = read_checkpoint(out.checkpoint_path)
    # A pickle where the skops file should be.
    bad = dict(ckpt, sklearn=torch.frombuffer(bytearray(pickle.dumps(Evil())), dtype=torch.uint8).clone())
    path = save_checkpoint(bad, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="pickles are refused"):
        Predictor.load(path)
    # A skops file that names a type outside the allow-list.
    bad = dict(ckpt, sklearn=torch.frombuffer(bytearray(sio.dumps({"x": Evil()})), dtype=torch.uint8).clone())
    path = save_checkpoint(bad, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="outside the allow-list"):
        Predictor.load(path)


def test_presets_and_sizes():
    from stocktrend.models.lstm import SPEC
    seed = SPEC.build(SPEC.preset("seed", n_features=21, n_classes=3))
    assert zoo.count_parameters(seed) == 57_731  # the seed's SimpleLSTM: ~57.7k at 21 inputs / 3 classes
    for kind in zoo.KINDS:
        assert set(zoo.get(kind).preset_names) == {"seed", "small", "tiny"}


def test_retraining_on_other_columns_rebuilds_the_towers_by_name():
    """Walk-forward folds and the seeds' protocol select and order their own top-K features: dual_tower's and
    lstm_transformer's column positions must follow the names, not the original model's positions."""
    from stocktrend.platform.evaluation.walkforward import config_for_columns
    from stocktrend.platform.training.local import model_config_for

    data = build_dataset(DataConfig(top_k=16, sequence_length=10), universe=planted_signal_universe(600, seed=3),
                         use_cache=False)
    for kind in ("dual_tower", "lstm_transformer"):
        d = data if kind == "dual_tower" else build_dataset(
            DataConfig(top_k=16, sequence_length=10, label_kind="regression"),
            universe=planted_signal_universe(600, seed=3), use_cache=False)
        names = list(d.transforms.input_names)
        cfg = model_config_for(d, "tiny", kind)

        class P:  # the parts of a Predictor config_for_columns reads
            config, spec = cfg, zoo.get(kind)
        shuffled = names[::-1]
        got = config_for_columns(P, d, shuffled)
        for field in ("stock_idx", "context_idx", "static_idx"):
            if hasattr(cfg, field):
                before = [names[i] for i in getattr(cfg, field)]
                after = [shuffled[i] for i in getattr(got, field)]
                assert sorted(before) == sorted(after), field
                assert not before or getattr(got, field) != getattr(cfg, field), field
        assert config_for_columns(P, d) == cfg  # the same columns: the same config


def test_the_forests_columns_per_split_have_a_floor_on_narrow_windows():
    """rf's small preset tries at least 12 columns a split (on us29's 5 days x 8 features, 3% would be one, and most
    splits would never see the column that carries a signal); on wide windows the share decides as before; a
    checkpoint from before the floor retrains with sklearn's own count for the share."""
    spec = zoo.get("rf")
    narrow, wide = spec.preset("small", n_features=8, seq_len=5), spec.preset("small", n_features=50, seq_len=30)
    assert narrow.columns_per_split() == 12 and narrow.build().max_features == 12
    assert wide.columns_per_split() == 45  # int(0.03 x 1,500), the floor not reached
    before = spec.config_from_dict({"n_features": 8, "seq_len": 5, "max_features": 0.03})
    assert before.columns_per_split() == max(1, int(0.03 * 40)) == 1
    assert spec.config_from_dict({"n_features": 2, "seq_len": 3, "min_features": 12}).columns_per_split() == 6
    assert spec.from_params(narrow, {"min_features": 1}).columns_per_split() == 1  # the search tries the floor too
    assert "min_features" in spec.space["default"]
