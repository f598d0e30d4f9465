"""What a fit returns, whoever fitted it (Lightning locally or on Ray Train workers, or scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FitResult:
    module: Any  # TrendModule with the best weights loaded (or a fitted scikit-learn model, see sklearn_fit)
    model_config: Any  # the model's frozen config
    train_config: TrainConfig
    best_score: float | None
    best_epoch: int | None
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)
