"""Drift statistics, shared by the serving replicas (rolling windows of what they served) and ``stocktrend monitor``
(batch scores): the population stability index of every model input against the checkpoint's training reference,
the class-mix shift against the validation segment, and mean confidence.

PSI = sum over bins of (a - e) * ln(a / e), with e the share of training rows and a the share of served rows in each
of the reference's decile bins. Empty bins are smoothed by adding half a count to every bin of both sides before the
shares are taken (Jeffreys' prior), so a bin seen in one distribution only adds a large but finite term. Bands, the
usual ones: below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 significant shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stocktrend.platform.data.reference import bin_counts

PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25
SMOOTHING = 0.5  # counts added to every bin of both distributions


def psi(reference_counts: list[int] | np.ndarray, edges: list[float] | np.ndarray, values: np.ndarray) -> float:
    actual = bin_counts(edges, values).astype(np.float64) + SMOOTHING
    expected = np.asarray(reference_counts, dtype=np.float64) + SMOOTHING
    a, e = actual / actual.sum(), expected / expected.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def band(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "stable" if value < PSI_MODERATE else "moderate" if value < PSI_SIGNIFICANT else "significant"


def feature_psis(reference: dict[str, dict[str, list]], rows: np.ndarray, names: list[str]) -> dict[str, float]:
    """PSI of each model input (columns of ``rows``, named ``names``) that the reference has."""
    rows = np.asarray(rows, dtype=np.float64)
    return {n: psi(reference[n]["counts"], reference[n]["edges"], rows[:, j])
            for j, n in enumerate(names) if n in reference and len(rows)}


def class_mix_shift_pp(reference_mix: dict[str, float], labels: list[str] | np.ndarray) -> dict[str, float]:
    """Per class: the served share minus the validation share, in percentage points."""
    labels = np.asarray(labels)
    n = max(len(labels), 1)
    return {c: float((np.sum(labels == c) / n - share) * 100) for c, share in reference_mix.items()}


def drift_summary(reference: dict[str, Any] | None, rows: np.ndarray, names: list[str], labels, confidence
                  ) -> dict[str, Any]:
    """Everything a monitor reports about one model over a window of served predictions."""
    out: dict[str, Any] = {"n": int(len(labels)), "mean_confidence": float(np.mean(confidence)) if len(confidence)
                           else float("nan")}
    if not reference:
        out.update(psi={}, psi_max=float("nan"), class_shift_pp={}, class_shift_max_pp=float("nan"))
        return out
    psis = feature_psis(reference.get("features", {}), rows, names)
    shift = class_mix_shift_pp(reference.get("predictions", {}).get("class_mix", {}), labels)
    out.update(psi=psis, psi_max=max(psis.values()) if psis else float("nan"), class_shift_pp=shift,
               class_shift_max_pp=max((abs(v) for v in shift.values()), default=float("nan")),
               reference_mean_confidence=reference.get("predictions", {}).get("mean_confidence", float("nan")))
    return out
