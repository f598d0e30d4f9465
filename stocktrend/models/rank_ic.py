"""Daily cross-sectional rank IC as a training metric: what panel users judge a model by, computed on the validation
(and test) segment every epoch so that checkpoints, early stopping, Tune and ASHA can rank trials by it
(``--monitor val_rank_ic`` / ``tune --metric val_rank_ic``).

Definition (the same as ``stocktrend.platform.evaluation.cross_section.daily_ic``, which the reports use): per day,
the Spearman correlation of the model's score with the realised forward return over that day's tickers, for days with
at least ``MIN_NAMES`` tickers where neither the score nor the return is constant; the metric is the mean over those
days. A model whose scores never rank anything (no qualifying day) scores 0, the value of no information.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torchmetrics

MIN_NAMES = 3  # the cross-section's rule (evaluation.cross_section.MIN_NAMES)


def score_from_output(out, n_classes: int):
    """One ranking score per sample: P(up) for two classes, P(up) - P(down) for three, the value for regressors
    (``n_classes`` 0); ``out`` holds probabilities for classifiers."""
    if n_classes == 0:
        return out.reshape(len(out), -1)[:, 0]
    return out[:, 1] if n_classes == 2 else out[:, -1] - out[:, 0]


def mean_daily_rank_ic(day: np.ndarray, score: np.ndarray, fwd: np.ndarray, min_names: int = MIN_NAMES) -> float:
    """Mean over days of the within-day Spearman correlation of ``score`` and ``fwd`` (see the module docstring)."""
    f = pd.DataFrame({"d": np.asarray(day), "s": np.asarray(score, dtype=np.float64),
                      "r": np.asarray(fwd, dtype=np.float64)})
    f = f[np.isfinite(f["s"]) & np.isfinite(f["r"])]
    if f.empty:
        return 0.0
    ranks = f.groupby("d")[["s", "r"]].rank()  # average ranks of ties, as pandas' Spearman
    a, b = ranks["s"], ranks["r"]
    g = pd.DataFrame({"d": f["d"], "a": a, "b": b, "ab": a * b, "aa": a * a, "bb": b * b}).groupby("d")
    s, n = g.sum(), g.size()
    cov = s["ab"] / n - s["a"] * s["b"] / n ** 2
    va = s["aa"] / n - (s["a"] / n) ** 2
    vb = s["bb"] / n - (s["b"] / n) ** 2
    ok = (n >= min_names) & (va > 1e-12) & (vb > 1e-12)
    if not ok.any():
        return 0.0
    return float((cov[ok] / np.sqrt(va[ok] * vb[ok])).mean())


class DailyRankIC(torchmetrics.Metric):
    """Accumulates (day, score, forward return) over an epoch (gathered across DDP workers) and computes
    ``mean_daily_rank_ic``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("day", default=[], dist_reduce_fx="cat")
        self.add_state("score", default=[], dist_reduce_fx="cat")
        self.add_state("fwd", default=[], dist_reduce_fx="cat")

    def update(self, score: torch.Tensor, day: torch.Tensor, fwd: torch.Tensor) -> None:
        # float32 on the device (MPS has no float64); compute() ranks in float64 on the CPU
        self.score.append(score.detach().float().reshape(-1))
        self.day.append(day.detach().round().long().reshape(-1))
        self.fwd.append(fwd.detach().float().reshape(-1))

    def compute(self) -> torch.Tensor:
        def cat(v):
            return (torch.cat(v) if isinstance(v, list) else v).cpu().numpy() if len(v) else np.zeros(0)
        return torch.tensor(mean_daily_rank_ic(cat(self.day), cat(self.score), cat(self.fwd)), dtype=torch.float32)
