"""Evaluating predicted forward returns (lstm_transformer, hybrid with a regression label, mtl_lstm's return head)
next to baselines on the same test windows.

Scores: MAE, RMSE, correlation and rank correlation with the realised forward return, hit rate (the predicted sign is
the realised sign; a zero return counts as up, as in the binary label) and, for panels, the cross-sectional IC
(``cross_section``). Baselines: zero, the training mean, momentum (the trailing ``horizon``-day return as the
forecast), ridge regression and gradient boosting on the flattened windows (its trees picked on validation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stocktrend.platform.data.dataset import PreparedData

REG_COLS = ("mae", "rmse", "corr", "rank_corr", "hit_rate")


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    import pandas as pd
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    constant = np.ptp(pred) == 0 or np.std(pred) < 1e-12  # a constant forecast has no correlation
    return {"n": int(len(y)), "mae": float(np.abs(pred - y).mean()), "rmse": float(np.sqrt(((pred - y) ** 2).mean())),
            "corr": float("nan") if constant else float(np.corrcoef(pred, y)[0, 1]),
            "rank_corr": float("nan") if constant else float(pd.Series(pred).rank().corr(pd.Series(y).rank())),
            "hit_rate": float(((pred >= 0) == (y >= 0)).mean())}


def regression_baselines(data: PreparedData, seed: int = 0) -> dict[str, np.ndarray]:
    """Forecasts of the forward return on the test samples by every baseline."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    test, train, val = data.samples["test"], data.train_unbalanced, data.samples["val"]
    fwd = data.target_value  # the forward return, or the excess return / rank of a market-neutral label
    out: dict[str, np.ndarray] = {"zero": np.zeros(len(test)), "train_mean": np.full(len(test), fwd[train].mean())}
    h = data.config.horizon
    close = data.panel.meta["close"].to_numpy()
    starts = data.offsets[np.searchsorted(data.offsets, test, side="right") - 1]
    out["momentum"] = close[test] / close[np.maximum(test - h, starts)] - 1

    def flat(rows):
        w = data.windows(rows)
        return w.reshape(len(w), -1)
    x_tr, x_te = flat(train), flat(test)
    out["ridge"] = Ridge(alpha=100.0).fit(x_tr, fwd[train]).predict(x_te)
    gb = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=seed, early_stopping=True,
                                       n_iter_no_change=10)
    out["gradient_boosting"] = gb.fit(x_tr, fwd[train], X_val=flat(val), y_val=fwd[val]).predict(x_te)
    return out


def score_returns(data: PreparedData, model_ret: np.ndarray) -> dict[str, Any]:
    """Scores of the model's forecasts and every baseline's on the same test samples."""
    y = data.target_value[data.samples["test"]]
    preds = {"model": np.asarray(model_ret, dtype=np.float64), **regression_baselines(data)}
    return {"scores": {k: regression_scores(y, p) for k, p in preds.items()}, "predictions": preds}


def report_lines(res: dict[str, Any], horizon: int) -> list[str]:
    lines = [f"## Predicted {horizon}-day return (test segment)", "",
             "| | " + " | ".join(REG_COLS) + " |", "|---|" + "---|" * len(REG_COLS)]
    for name, s in res["scores"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s[c]:.4f}" for c in REG_COLS) + " |")
    m = res["scores"]["model"]
    beaten = [k for k, s in res["scores"].items() if k != "model" and m["mae"] < s["mae"]]
    lines += ["", f"The model's MAE beats: {', '.join(beaten) or 'no baseline'}; hit rate {m['hit_rate']:.3f} vs "
              f"'always up' {res['scores']['zero']['hit_rate']:.3f}.", ""]
    return lines
