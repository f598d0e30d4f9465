"""Local training, checkpoints and the MLflow registry, on tiny configs and synthetic data."""

import os

import numpy as np
import pytest
import torch

from stocktrend.platform.registry import mlflow_registry as registry
from stocktrend.platform.registry.checkpoint import CheckpointError, Predictor, read_checkpoint
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.training.jobs import train_job
from stocktrend.platform.data.synthetic import planted_signal_universe
from stocktrend.platform.training.local import TrainConfig, fit

FAST = TrainConfig(preset="tiny", epochs=8, batch_size=32, accumulate=1, lr=1e-3, max_lr=1e-2, progress=False)


@pytest.fixture(scope="module")
def planted():
    return build_dataset(DataConfig(tickers=(), top_k=16, sequence_length=20),
                         universe=planted_signal_universe(2000, noise=0.001, seed=1), use_cache=False)


@pytest.fixture(scope="module")
def trained(planted):
    return fit(planted, FAST)


def test_planted_signal_reaches_90_percent(trained, planted):
    acc = trained.test_metrics["test_acc"]
    majority = max(planted.class_counts("test").values()) / len(planted.samples["test"])
    assert acc >= 0.90, (acc, majority)
    assert len(trained.history) == trained.epochs_run and "val_loss" in trained.history[0]


def test_checkpoint_round_trip_gives_identical_predictions(trained, planted, tmp_path):
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    path = save_checkpoint(make_checkpoint(trained.module.model, trained.model_config, planted,
                                           trained.test_metrics), tmp_path / "m.pt")
    pred = Predictor.load(path)
    windows = planted.windows(planted.samples["test"])
    with torch.no_grad():
        expected = torch.softmax(trained.module.model.eval()(torch.from_numpy(windows)), -1).numpy()
    got, _ = pred.predict_proba(windows)
    np.testing.assert_array_equal(got, expected)
    assert pred.transforms.selected == planted.transforms.selected
    assert read_checkpoint(path)["data_hash"] == planted.panel.data_hash
    # Raw prices -> the same feature path -> the same window as the data set's last test sample.
    u = planted_signal_universe(2000, noise=0.001, seed=1)
    last_row = planted.offsets[1] - 1
    x = pred.features_from_prices(u.tickers["SIG0"], u.market)
    np.testing.assert_allclose(x[-20:], planted.x[last_row - 19:last_row + 1], rtol=1e-6, atol=1e-6)


def test_a_hybrid_checkpoint_from_before_last_day_skip_loads_and_predicts_as_it_was_trained(planted, tmp_path):
    """Checkpoints written before issue 38 have no ``last_day_skip`` in their config: they load as the network they
    stored (no skip), even though every preset now has it."""
    from stocktrend.models.hybrid import HybridNet, preset
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    cfg = preset("tiny", n_features=planted.n_features, last_day_skip=False)
    torch.manual_seed(0)
    net = HybridNet(cfg).eval()
    ckpt = make_checkpoint(net, cfg, planted, kind="hybrid")
    del ckpt["model_config"]["last_day_skip"]  # as the file of an earlier version holds it
    pred = Predictor.load(save_checkpoint(ckpt, tmp_path / "old.pt"))
    assert not pred.config.last_day_skip and preset("tiny").last_day_skip
    windows = planted.windows(planted.samples["test"][:64])
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(windows)), -1).numpy()
    np.testing.assert_allclose(pred.predict_proba(windows)[0], expected, rtol=1e-5, atol=1e-6)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/stocktrend-pwned",))


def test_malicious_checkpoint_is_refused(tmp_path):
    import os
    marker = "/tmp/stocktrend-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "stocktrend-checkpoint/1", "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not os.path.exists(marker)
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a stocktrend-checkpoint/1 file"):
        read_checkpoint(tmp_path / "other.pt")


def test_registry_train_promote_rollback_and_failed_runs(planted, monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    quick = TrainConfig(preset="tiny", epochs=1, batch_size=64, accumulate=1, progress=False)
    a = train_job(planted.config, quick, model_name="t", data=planted)
    b = train_job(planted.config, quick, model_name="t", data=planted)
    assert (a.version, b.version) == (1, 2)
    # The first version of a name takes production by itself; later ones only through the gate or a promotion.
    assert registry.aliases("t") == {"production": 1}
    assert not registry.promote("t", 1)["changed"]
    assert registry.promote("t", 2)["previous"] == 1
    assert registry.get_version("t", "production")["version"] == 2
    assert registry.rollback("t")["version"] == 1
    assert registry.get_version("t")["version"] == 1  # no ref = production
    with pytest.raises(registry.RegistryError, match="no earlier production version"):
        registry.rollback("t")
    with pytest.raises(registry.RegistryError, match="has no version 7"):
        registry.get_version("t", "7")
    with pytest.raises(registry.RegistryError, match="unknown model 'nope'"):
        registry.list_versions("nope")
    import tempfile
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what a download leaves in the temporary directory
    path, info = registry.download("t", "2")
    assert info["version"] == 2 and Predictor.load(path).config.n_features == 16
    # Fetched once into the home's model cache, whole; the next load reuses it; nothing is left in the temporary dir.
    cache = registry.model_cache("t")
    assert path.is_relative_to(cache) and [p.name for p in cache.iterdir()] == [path.relative_to(cache).parts[0]]
    mtime = path.stat().st_mtime_ns
    assert registry.download("t", "2")[0] == path and path.stat().st_mtime_ns == mtime
    assert list(scratch.iterdir()) == []
    path.unlink()  # the cached copy lost its file: fetched again, once
    assert registry.download("t", "2")[0] == path and path.is_file()
    # A download killed midway leaves its private folder beside the cache: invisible, removed once an hour old.
    dead = cache / ".tmp-v1-deadbeef-x"
    dead.mkdir()
    os.utime(dead, (0, 0))
    assert registry.download("t", "1")[0].is_file() and not dead.exists()
    # A checkpoint saved under another file name is stored under the canonical name and downloads fine.
    other = tmp_path / "renamed.pt"
    other.write_bytes(path.read_bytes())
    with registry.tracked_run("manual", {}) as run:
        v = registry.register_checkpoint(other, run.info.run_id, "t")
    assert registry.download("t", str(v))[0].name == registry.CHECKPOINT_FILE

    # A run that dies mid-training leaves a FAILED run and no new registered version.
    import lightning.pytorch as pl

    class Boom(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            raise RuntimeError("simulated crash")

    import stocktrend.platform.training.jobs as pipeline
    real_fit = pipeline.fit
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: real_fit(*a, callbacks=[Boom()], **k))
    before = [v["version"] for v in registry.list_versions("t")]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_job(planted.config, quick, model_name="t", data=planted)
    assert [v["version"] for v in registry.list_versions("t")] == before
    c = registry.client()
    runs = c.search_runs([c.get_experiment_by_name(registry.EXPERIMENT).experiment_id],
                         order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FAILED"


def test_finetune_from_registered_model(planted, monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    quick = TrainConfig(preset="tiny", epochs=1, batch_size=64, accumulate=1, progress=False)
    base = train_job(planted.config, quick, model_name="ft", data=planted)
    tuned = train_job(planted.config, quick, model_name="ft", finetune_from="ft@1", data=planted)
    assert tuned.version == 2
    assert tuned.fit.train_config.lr == pytest.approx(quick.lr * 0.1)
    assert tuned.fit.model_config == base.fit.model_config
    ckpt = read_checkpoint(tuned.checkpoint_path)
    assert ckpt["extra"]["finetune_from"] == "ft@1"


def test_epoch_windows_draws_a_fresh_subset_each_epoch(planted):
    """A capped epoch trains on epoch_windows windows (3 batches of 32 here, of a ~1,300-window segment), a different
    draw each epoch; validation still sees the whole segment."""
    import lightning.pytorch as pl

    class Seen(pl.Callback):
        def __init__(self):
            self.train: dict[int, list[float]] = {}
            self.val_windows = 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.train.setdefault(trainer.current_epoch, []).extend(batch[0].float().sum(dim=(1, 2)).tolist())

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            self.val_windows += len(batch[0])

    seen = Seen()
    cfg = TrainConfig(**{**FAST.__dict__, "epochs": 2, "epoch_windows": 96})
    assert cfg.train_batch_limit() == 3 and cfg.train_batch_limit(world_size=2) == 2
    assert TrainConfig().train_batch_limit() is None
    fit(planted, cfg, callbacks=[seen], run_test=False)
    assert len(planted.samples["train"]) > 1000
    assert [len(v) for v in seen.train.values()] == [96, 96]
    assert set(seen.train[0]) != set(seen.train[1])
    assert seen.val_windows == 2 * len(planted.samples["val"])


def test_a_last_bar_without_market_data_is_refused_not_mislabelled(trained, planted):
    """Features are computed on the dates the ticker shares with its market series: a bar after the market's last
    day would silently drop, and the prediction would be for an earlier day than the one reported."""
    from stocktrend.platform.data.sources import DataValidationError
    from stocktrend.platform.registry.checkpoint import make_checkpoint
    pred = Predictor(make_checkpoint(trained.module.model, trained.model_config, planted))
    u = planted_signal_universe(2000, noise=0.001, seed=1)
    prices = u.tickers["SIG0"]
    short_market = {k: v.iloc[:-3] for k, v in u.market.items()}
    with pytest.raises(DataValidationError, match=r"has no market/indicator data on that day.*MKT"):
        pred.features_from_prices(prices, short_market)
    pred.features_from_prices(prices.iloc[:-3], short_market)  # up to the market's last day: fine


def test_malformed_checkpoint_fields_are_one_clear_error(trained, planted):
    from stocktrend.platform.registry.checkpoint import make_checkpoint
    good = make_checkpoint(trained.module.model, trained.model_config, planted)
    assert set(good["segment_dates"]) == {"train", "val", "test"}
    for broken in ({k: v for k, v in good.items() if k != "transforms"},  # a missing field
                   {**good, "sequence_length": "thirty"},  # a field of the wrong type
                   {**good, "state_dict": {k: v[:1] if v.dim() else v for k, v in good["state_dict"].items()}}):  # shapes
        with pytest.raises(CheckpointError, match="the checkpoint is malformed"):
            Predictor(broken)


def test_scoring_on_another_universe_keeps_only_days_after_the_models_training(trained, planted):
    """evaluate --universe U: U's test segment comes from U's own dates; windows dated inside the period the model
    trained or was validated on are cut (all of them: a clear error)."""
    import pandas as pd

    from stocktrend.platform.evaluation.report import _after_training
    from stocktrend.platform.registry.checkpoint import make_checkpoint
    pred = Predictor(make_checkpoint(trained.module.model, trained.model_config, planted))
    test = planted.samples["test"]
    dates = pd.DatetimeIndex(planted.dates[test])
    mid = dates[len(dates) // 2]
    pred.ckpt["segment_dates"]["val"] = [pred.ckpt["segment_dates"]["val"][0], str(mid.date())]
    cut, note = _after_training(pred, planted)
    kept = pd.DatetimeIndex(cut.dates[cut.samples["test"]])
    assert 0 < len(kept) < len(test) and kept.min() > mid + pd.offsets.BDay(planted.config.horizon)
    assert f"{len(kept)} of {len(test)} windows" in note
    pred.ckpt["segment_dates"]["val"][1] = str(dates.max().date())
    with pytest.raises(ValueError, match="no honest test window"):
        _after_training(pred, planted)


def test_by_name_uses_the_tickers_the_model_was_trained_on(trained, planted):
    """A model trained on a --ticker subset of a universe answers by name for those tickers only, from the last day
    its market series cover."""
    from stocktrend.platform.registry.checkpoint import UnknownTickerError, make_checkpoint
    ckpt = make_checkpoint(trained.module.model, trained.model_config, planted)
    ckpt["data_config"] = {**ckpt["data_config"], "universe": "tech", "tickers": ["AAPL"], "data_dir": None,
                           "market": None, "indicators": []}
    pred = Predictor(ckpt)
    assert list(pred.source_universe().tickers) == ["AAPL"]
    with pytest.raises(UnknownTickerError, match="answers for AAPL"):
        pred.bars_for("MSFT")
    bars, market, _ = pred.bars_for("AAPL")
    assert bars.index[-1] <= min(m.index[-1] for m in market.values())


def test_the_tracking_variable_stays_the_users(monkeypatch, tmp_path):
    """CI found it: MLflow 3's set_tracking_uri exports MLFLOW_TRACKING_URI; a test that restored the environment
    afterwards brought back a value this process had exported, which was then taken for the user's, and every later
    home in the process wrote to that old store (a subprocess with the new home found no registry)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("a", "b"):
        monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path / name))
        registry.client()
        assert "MLFLOW_TRACKING_URI" not in os.environ
        assert (tmp_path / name / "mlflow.db").is_file()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")
    registry.client()
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'user.db'}"
    assert registry.tracking_uri() == f"sqlite:///{tmp_path / 'user.db'}"


def test_the_weight_average_is_what_validation_sees_and_what_is_kept(planted):
    """``average_halflife``: validation and the kept checkpoint use the weights' moving average. With a half-life of
    1e9 epochs the average never leaves the weights after the first optimizer step, so both epochs validate the same
    weights (the same loss to the last digit) and the kept weights sit far closer to the start than the raw ones."""
    import lightning.pytorch as pl

    from stocktrend.platform.training.averaging import EpochEMA, decay_for

    class Snap(pl.Callback):
        def on_fit_start(self, trainer, module):
            self.start = {k: v.detach().clone() for k, v in module.model.named_parameters()}

        def on_train_epoch_end(self, trainer, module):  # the raw weights (the average is swapped in at train end)
            self.raw = {k: v.detach().clone() for k, v in module.model.named_parameters()}

    snap = Snap()
    cfg = TrainConfig(**{**FAST.__dict__, "epochs": 2, "patience": 5, "epoch_windows": 96, "average_halflife": 1e9})
    res = fit(planted, cfg, callbacks=[snap], run_test=False)
    kept = res.module.model.state_dict()

    def moved(state):  # the parameters' distance from their initial values (buffers such as batch statistics aside)
        return sum(float((state[k] - snap.start[k]).norm()) for k in snap.start)

    assert res.epochs_run == 2 and len(res.history) == 2
    assert res.history[0]["val_loss"] == res.history[1]["val_loss"]
    assert 0 < moved(kept) < 0.2 * moved(snap.raw), (moved(kept), moved(snap.raw))
    assert abs(decay_for(1.0, 400, 4) ** 100 - 0.5) < 1e-9  # 400 batches / 4 accumulated = 100 steps an epoch
    assert decay_for(0.5, float("inf"), 1) ** 50 == pytest.approx(0.5)  # no length: 100 steps an epoch
    with pytest.raises(ValueError, match="half-life"):
        EpochEMA(0.0)


def test_the_weight_average_leaves_integer_buffers_alone(planted):
    """dual_tower routes its inputs by index buffers: an average of them, truncated back to integers, would feed the
    towers the wrong columns in every validation and in the weights kept. The update keeps an integer tensor's value
    (five updates at decay 0.9 truncate 19 of arange(60) without that rule) and averages floats; in a fit the index
    buffers keep their values and the floating-point weights are averaged (they differ from the raw ones)."""
    import lightning.pytorch as pl

    from stocktrend.platform.training.averaging import EpochEMA

    ema = EpochEMA(1.0)
    ema.decay = 0.9
    idx = torch.arange(60)
    avg = idx.clone()
    for _ in range(5):
        avg.copy_(ema._average(avg, idx, None))
    assert torch.equal(avg, idx)
    assert torch.allclose(ema._average(torch.zeros(3), torch.ones(3), None), torch.full((3,), 0.1))

    class Raw(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            self.raw = {k: v.detach().clone() for k, v in module.model.named_parameters()}

    raw = Raw()
    cfg = TrainConfig(**{**FAST.__dict__, "model": "dual_tower", "epochs": 2, "patience": 0, "epoch_windows": 96,
                         "average_halflife": 0.5})
    res = fit(planted, cfg, callbacks=[raw], run_test=False)
    net = res.module.model
    assert net.stock_idx.tolist() == list(res.model_config.stock_idx)
    assert net.context_idx.tolist() == list(res.model_config.context_idx) and len(net.context_idx) > 1
    assert any(not torch.equal(p, raw.raw[k]) for k, p in net.named_parameters())


def test_a_recipe_from_before_the_weight_average_retrains_the_raw_weights(trained, planted):
    """The loop retrains a champion with its own recipe: one recorded before ``average_halflife`` existed (a train
    config or a search's trial config without it) trained the raw weights and retrains them (today's default is the
    raw weights too, so those two cases guard a future default); one that records it keeps it."""
    from dataclasses import asdict

    from stocktrend.platform.evaluation.walkforward import retrain_config
    from stocktrend.platform.registry.checkpoint import make_checkpoint

    def recipe(extra):
        return retrain_config(Predictor(make_checkpoint(trained.module.model, trained.model_config, planted,
                                                        kind="hybrid", extra=extra)), None)

    old = {k: v for k, v in asdict(FAST).items() if k != "average_halflife"}
    assert recipe({"train_config": old}).average_halflife == 0.0
    assert recipe({"train_config": {**old, "average_halflife": 0.25}}).average_halflife == 0.25
    assert recipe({"trial_config": {"lr": 1e-3}}).average_halflife == 0.0
    assert recipe({"trial_config": {"lr": 1e-3}, "average_halflife": 0.5}).average_halflife == 0.5
    assert recipe({}).average_halflife == TrainConfig().average_halflife
