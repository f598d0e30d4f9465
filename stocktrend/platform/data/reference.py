"""The training reference a checkpoint carries, for drift monitoring: per model input, the decile edges of its values
on the training segment and the count of training rows in each bin.

The rows are the last day of every (unbalanced) training window, in model-input space (scaled and selected): exactly
what a serving replica sees as the last day of each window it answers, so the two distributions compare directly.
Edges are the 10%, 20%, ..., 90% quantiles (of at most 200,000 sampled rows); a feature with repeated quantiles (a
near-constant or discrete input) keeps its distinct edges only. Counts are over every training row. Calendar
inputs (functions of the date: any window of weeks looks "shifted" against a decade) and the ticker one-hots are
not monitored.

A caveat users should know: slow inputs (120-day volatility, 200-day averages) are persistent, so their PSI over a
short window of served days measures how the current regime differs from the training years' mix; values above 0.1
are common without anything being broken. The thresholds of the alert rules are starting points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DECILES = np.linspace(0.1, 0.9, 9)
CONFIDENCE_EDGES = [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]  # bins of the confidence distribution


def feature_reference(x: np.ndarray, rows: np.ndarray, names: list[str], max_rows: int = 200_000,
                      seed: int = 0) -> dict[str, dict[str, list]]:
    rows = np.unique(np.asarray(rows))
    if len(rows) == 0:
        return {}
    sample = rows if len(rows) <= max_rows else np.sort(np.random.default_rng(seed).choice(rows, max_rows, False))
    quantiles = np.quantile(np.asarray(x[sample], dtype=np.float64), DECILES, axis=0)  # (9, k)
    out: dict[str, dict[str, list]] = {}
    values = np.asarray(x[rows], dtype=np.float64)
    from stocktrend.platform.data.features import calendar_features
    unmonitored = set(calendar_features(pd.DatetimeIndex([])))
    for j, name in enumerate(names):
        if name in unmonitored or name.startswith("ticker="):
            continue
        edges = np.unique(quantiles[:, j])
        counts = np.bincount(np.searchsorted(edges, values[:, j], side="right"), minlength=len(edges) + 1)
        out[name] = {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}
    return out


def bin_counts(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins (-inf, e1], (e1, e2], ..., (e_last, inf) of a reference."""
    edges = np.asarray(edges, dtype=np.float64)
    return np.bincount(np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right"),
                       minlength=len(edges) + 1)


def prediction_reference(outputs: np.ndarray, labels: list[str], confidence: np.ndarray, class_names: list[str],
                         buckets: list[float]) -> dict[str, Any]:
    """The class mix of a model's predicted labels and the distribution of its confidence on the validation segment."""
    names = list(class_names) or ["Bajista", "Alcista"]
    n = max(len(labels), 1)
    mix = {c: float(np.sum(np.asarray(labels) == c) / n) for c in names}
    conf = np.asarray(confidence, dtype=np.float64)
    return {"class_mix": mix, "confidence_edges": list(buckets), "confidence_counts":
            bin_counts(buckets, conf).astype(int).tolist(), "mean_confidence": float(conf.mean()) if len(conf)
            else float("nan"), "n": int(len(labels))}
