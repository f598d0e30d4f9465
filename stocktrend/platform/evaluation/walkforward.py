"""The parts of ``stocktrend evaluate`` that retrain the model's configuration: walk-forward folds and the leakage
audit (the seeds' protocol next to the honest one)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.platform.data.dataset import PreparedData, prepare
from stocktrend.platform.data.splits import walk_forward_boundaries
from stocktrend.platform.evaluation.cross_section import MIN_NAMES, evaluate_panel
from stocktrend.platform.evaluation.metrics import backtest, classification_scores
from stocktrend.platform.evaluation.regression import REG_COLS, score_returns
from stocktrend.platform.registry.checkpoint import Predictor, make_checkpoint
from stocktrend.platform.training.local import TrainConfig, fit, mode_of, model_config_for

log = logging.getLogger(__name__)

SCORE_COLS = ("accuracy", "balanced_accuracy", "f1", "auc", "mcc")


def monitored_metric(pred: Predictor) -> str:
    """The validation metric a model was chosen by: its training's ``monitor``, or the search's ``--metric``."""
    extra = pred.ckpt.get("extra", {})
    return extra.get("train_config", {}).get("monitor") or extra.get("search_metric") or "val_loss"


def retrain_config(pred: Predictor, epochs: int | None) -> TrainConfig:
    """The recipe a model was trained with (its checkpoint's train config); a search trial's best configuration
    (learning rate, weight decay, batch size, the search's metric) when a search registered it, with the quickstart's
    retrain length."""
    extra = pred.ckpt.get("extra", {})
    tc = dict(extra.get("train_config", {}))
    # a recipe recorded before the weight average existed trained (and so retrains) the raw weights
    if tc:
        tcfg = TrainConfig(**{"average_halflife": 0.0, **tc})
    elif "trial_config" in extra:
        trial = extra["trial_config"]
        lr = float(trial.get("lr", 2e-4))
        metric = monitored_metric(pred)
        tcfg = TrainConfig(epochs=10, patience=3, accumulate=1, lr=lr, max_lr=lr * 5,
                           batch_size=int(trial.get("batch_size", 64)),
                           weight_decay=float(trial.get("weight_decay", 5e-3)), monitor=metric,
                           monitor_mode=mode_of(metric), average_halflife=float(extra.get("average_halflife", 0.0)))
    else:
        tcfg = TrainConfig()
    return replace(tcfg, model=pred.model_kind, epochs=epochs or tcfg.epochs, progress=False)


def config_for_columns(pred: Predictor, data: PreparedData, input_names: list[str] | None = None):
    """The model's architecture over *these* columns: a fold (or the seeds' protocol) selects and orders its own top-K
    features, so the towers' / static branch's column positions (the spec's ``input_groups``) are derived again from
    the names."""
    if pred.spec.input_groups is None:
        return pred.config
    fresh = model_config_for(data, "small", pred.spec, input_names=input_names)
    routed = pred.spec.input_groups([], frozenset())  # the config fields that name input columns by position
    return replace(pred.config, **{f: getattr(fresh, f) for f in routed})


def retrained_outputs(pred: Predictor, data: PreparedData, windows: np.ndarray, epochs: int | None,
                      datamodule=None, input_names: list[str] | None = None) -> np.ndarray:
    """Train the model's configuration afresh on ``data`` (or ``datamodule``, whose columns are ``input_names``) and
    return its output matrix on ``windows``."""
    cfg = config_for_columns(pred, data, input_names)
    tcfg = retrain_config(pred, epochs)
    if datamodule is not None and tcfg.monitor == "val_rank_ic":  # the seeds' random split has no days to rank
        tcfg = replace(tcfg, monitor="val_loss", monitor_mode="min")
    res = fit(data, tcfg, cfg, run_test=False, datamodule=datamodule)
    fresh = Predictor(make_checkpoint(res.module.model, cfg, data, kind=pred.spec))
    return fresh.predict_proba(windows)[0]


def walk_forward(pred: Predictor, data: PreparedData, opts, score_all) -> pd.DataFrame:
    """K folds in time order, each retrained from scratch with the model's config and scored with the baselines
    (``score_all`` is the report's classification scorer)."""
    rows: list[dict[str, Any]] = []
    bounds = walk_forward_boundaries(pd.DatetimeIndex(data.dates), n_folds=opts.walk_forward)
    k_cls = len(pred.class_names)
    for k, b in enumerate(bounds):
        fold = prepare(data.panel, data.config, b)
        log.info("walk-forward fold %d/%d: test %s..%s", k + 1, len(bounds), *fold.date_range("test"))
        out = retrained_outputs(pred, fold, fold.windows(fold.samples["test"]), opts.epochs)
        base = {"fold": k + 1, "test_start": fold.date_range("test")[0]}
        if pred.task.is_regression:
            reg = score_returns(fold, out[:, 0])
            outputs = {n: p[:, None] for n, p in reg["predictions"].items()}
            cs = evaluate_panel(fold, outputs, opts.cost_bps) if len(fold.tickers) >= MIN_NAMES else None
            for name, s in reg["scores"].items():
                strat, _ = backtest(fold, reg["predictions"][name], threshold=0.0, cost_bps=opts.cost_bps)
                rows.append({**base, "who": name, **{c: s[c] for c in REG_COLS}, "sharpe": strat.sharpe,
                             **_cs(cs, name)})
            continue
        scores, tests, probs = score_all(fold, out[:, :k_cls], replace(opts, bootstrap=0))
        cs = evaluate_panel(fold, probs, opts.cost_bps) if len(fold.tickers) >= MIN_NAMES else None
        for name, s in scores.items():
            rows.append({**base, "who": name, **{c: s[c] for c in SCORE_COLS}, "sharpe": tests[name].sharpe,
                         **_cs(cs, name)})
    return pd.DataFrame(rows)


def _cs(cs: dict | None, name: str) -> dict[str, float]:
    if not cs:
        return {}
    return {"rank_ic": cs["ic"][name]["rank_ic_mean"], "rank_ic_t": cs["ic"][name]["rank_ic_t"],
            "ls_sharpe": cs["long_short"][name].sharpe}


def leakage_audit(pred: Predictor, data: PreparedData, opts) -> pd.DataFrame:
    """The same model and GBM under the honest protocol and under the seeds' (random split after oversampling)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from stocktrend.platform.data.datamodule import ArrayDataModule, StockDataModule
    from stocktrend.platform.evaluation.audit import seeds_protocol
    if not pred.task.is_classification or pred.spec.is_sklearn:
        raise ValueError("the leakage audit retrains classifiers trained with Lightning (hybrid, lstm, dual_tower)")
    seeds, seeds_names = seeds_protocol(data, with_names=True)
    names = list(data.kind.class_names)
    rows = []
    for protocol, dm, test, names in (
            ("honest (chronological, purged)", StockDataModule(data), (data.windows(data.samples["test"]),
                                                                       data.targets(data.samples["test"])), None),
            ("seeds (random split after oversampling)", ArrayDataModule(seeds), seeds["test"], seeds_names)):
        p = retrained_outputs(pred, data, test[0], opts.epochs, datamodule=dm, input_names=names)
        s = classification_scores(test[1], p, names, bootstrap=0)
        rows.append({"protocol": protocol, "who": "network", **{c: s[c] for c in SCORE_COLS}})
        x_tr, y_tr = ((data.windows(data.train_unbalanced), data.targets(data.train_unbalanced))
                      if protocol.startswith("honest") else seeds["train"])
        gb = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
        pg = gb.fit(x_tr.reshape(len(x_tr), -1), y_tr).predict_proba(test[0].reshape(len(test[0]), -1))
        s = classification_scores(test[1], pg, names, bootstrap=0)
        rows.append({"protocol": protocol, "who": "gradient_boosting", **{c: s[c] for c in SCORE_COLS}})
    return pd.DataFrame(rows)
