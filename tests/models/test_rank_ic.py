"""val_rank_ic: the daily cross-sectional rank IC as a training metric (checkpoints, early stopping, Tune), the same
number the reports compute, on panels only."""

import numpy as np
import pandas as pd
import pytest
import torch

from stocktrend.models.rank_ic import DailyRankIC, mean_daily_rank_ic
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.synthetic import planted_cross_section_universe, random_walk_universe
from stocktrend.platform.evaluation.cross_section import daily_ic, evaluate_panel
from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
from stocktrend.platform.training.local import TrainConfig, fit


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(40), rng.integers(1, 9, 40))  # some days with fewer than 3 names
    score = rng.normal(size=len(day)).round(1)  # ties
    fwd = 0.3 * score + rng.normal(size=len(day))
    fwd[rng.random(len(day)) < 0.05] = np.nan  # unknown forward returns
    score[day == 7] = 0.5  # a day of constant scores ranks nothing
    return day, score, fwd


def test_the_metric_is_the_reports_rank_ic():
    day, score, fwd = _frame()
    ref = daily_ic(pd.DataFrame({"date": day, "score": score, "fwd": fwd}))["rank_ic"].mean()
    assert mean_daily_rank_ic(day, score, fwd) == pytest.approx(ref, abs=1e-9)
    m = DailyRankIC()  # accumulated over batches, as over an epoch
    for part in np.array_split(np.arange(len(day)), 5):
        m.update(torch.tensor(score[part]), torch.tensor(day[part]), torch.tensor(fwd[part]))
    assert float(m.compute()) == pytest.approx(ref, abs=1e-6)
    assert mean_daily_rank_ic(day, np.zeros(len(day)), fwd) == 0.0  # constant scores: no information


@pytest.fixture(scope="module")
def panel():
    return build_dataset(DataConfig(top_k=12, sequence_length=10, label_kind="excess"),
                         universe=planted_cross_section_universe(700, 6, seed=3), use_cache=False)


def test_training_picks_and_stops_by_val_rank_ic_on_a_panel(panel):
    tcfg = TrainConfig(preset="tiny", epochs=4, patience=2, batch_size=256, accumulate=1, progress=False,
                       monitor="val_rank_ic", monitor_mode="max", precision="32-true")
    r = fit(panel, tcfg)
    seen = [row["val_rank_ic"] for row in r.history]
    assert len(seen) == r.epochs_run and all(np.isfinite(seen))
    assert r.best_score == pytest.approx(max(seen), abs=1e-6)  # the checkpoint kept is the best rank IC's
    # The test segment's number is the cross-section report's for the weights returned.
    pred = Predictor(make_checkpoint(r.module.model, r.model_config, panel, kind="hybrid"))
    p, _ = pred.predict_proba(panel.windows(panel.samples["test"]))
    report = evaluate_panel(panel, {"model": p})["ic"]["model"]["rank_ic_mean"]
    assert r.test_metrics["test_rank_ic"] == pytest.approx(report, abs=1e-3)


def test_gbm_reports_val_rank_ic_the_same_way(panel):
    r = fit(panel, TrainConfig(model="gbm", preset="tiny", progress=False, monitor="val_rank_ic", monitor_mode="max"))
    pred = Predictor(make_checkpoint(r.module.model, r.model_config, panel, kind="gbm"))
    p, _ = pred.predict_proba(panel.windows(panel.samples["test"]))
    report = evaluate_panel(panel, {"model": p})["ic"]["model"]["rank_ic_mean"]
    assert r.test_metrics["test_rank_ic"] == pytest.approx(report, abs=1e-9)
    assert r.best_score == r.history[0]["val_rank_ic"]


def test_val_rank_ic_needs_a_panel(panel):
    one = build_dataset(DataConfig(top_k=8, sequence_length=10), universe=random_walk_universe(900, seed=1),
                        use_cache=False)
    assert not one.is_panel
    # `stocktrend train`'s default, --monitor auto: the rank IC where a cross-section exists, the loss elsewhere
    auto = TrainConfig(monitor="auto", monitor_mode="max")
    assert (auto.resolved(panel).monitor, auto.resolved(panel).monitor_mode) == ("val_rank_ic", "max")
    assert (auto.resolved(one).monitor, auto.resolved(one).monitor_mode) == ("val_loss", "min")
    with pytest.raises(ValueError, match="needs a panel of 3 or more tickers"):
        fit(one, TrainConfig(preset="tiny", epochs=1, progress=False, monitor="val_rank_ic", monitor_mode="max"))


def test_a_rank_ic_model_retrains_on_a_custom_split_by_its_loss(panel):
    """The leakage audit retrains a model on the seeds' random split (a custom data module without days): a model
    chosen by val_rank_ic is retrained there by val_loss; fit itself says why it cannot rank such batches."""
    from stocktrend.platform.data.datamodule import ArrayDataModule
    from stocktrend.platform.evaluation.walkforward import retrained_outputs
    from stocktrend.platform.training.local import train_config_dict
    tcfg = TrainConfig(preset="tiny", epochs=1, patience=2, batch_size=256, accumulate=1, progress=False,
                       monitor="val_rank_ic", monitor_mode="max")
    r = fit(panel, tcfg, run_test=False)
    pred = Predictor(make_checkpoint(r.module.model, r.model_config, panel, kind="hybrid",
                                     extra={"train_config": train_config_dict(r.train_config)}))
    segs = {s: (panel.windows(rows), panel.targets(rows)) for s, rows in panel.samples.items()}
    with pytest.raises(ValueError, match="custom data module"):
        fit(panel, tcfg, run_test=False, datamodule=ArrayDataModule(segs, batch_size=256))
    out = retrained_outputs(pred, panel, segs["test"][0][:50], 1, datamodule=ArrayDataModule(segs, batch_size=256))
    assert out.shape == (50, 2) and np.isfinite(out).all()
