"""Search spaces for the hybrid model, next to the presets they search (stocktrend.models.hybrid.PRESETS).

Conv filter sizes are searched as a width multiplier on the preset's shape (the seeds' 128-256-256-256-256), so every
trial keeps the seeds' pattern. ``sequence_length`` and ``top_k`` change only the windows and the selection, which are
rebuilt per trial from the cached features (cheap; features are never recomputed).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ray import tune

from stocktrend.models.hybrid import HybridConfig, preset

SPACES: dict[str, dict[str, Any]] = {
    "small": {
        "width": tune.choice([0.5, 0.75, 1.0, 1.5]),  # x conv filters of the preset
        "kernel_size": tune.choice([3, 5, 7]),
        "conv_dropout": tune.uniform(0.05, 0.4),
        "lstm_dropout": tune.uniform(0.05, 0.4),
        "dense_dropout": tune.uniform(0.1, 0.5),
        "lstm_hidden": tune.choice([32, 48, 64]),
        "sequence_length": tune.randint(10, 61),  # 10..60 days
        "top_k": tune.choice([20, 30, 50, 80]),
        "lr": tune.loguniform(5e-5, 1e-3),
        "weight_decay": tune.loguniform(1e-4, 5e-2),
        "batch_size": tune.choice([32, 64, 128]),
    },
    "seed": {
        "width": tune.choice([0.5, 0.75, 1.0]),
        "kernel_size": tune.choice([3, 5, 7]),
        "conv_dropout": tune.uniform(0.2, 0.4),
        "lstm_dropout": tune.uniform(0.2, 0.4),
        "dense_dropout": tune.uniform(0.25, 0.45),
        "lstm_hidden": tune.choice([128, 192, 256]),
        "sequence_length": tune.randint(20, 61),
        "top_k": tune.choice([30, 50, 80]),
        "lr": tune.loguniform(1e-4, 5e-4),
        "weight_decay": tune.loguniform(1e-3, 1e-2),
        "batch_size": tune.choice([64, 128]),
    },
    # Test-sized (CI): seconds per trial.
    "tiny": {
        "width": tune.choice([1.0, 2.0]),
        "kernel_size": tune.choice([3, 5]),
        "conv_dropout": tune.uniform(0.0, 0.2),
        "lstm_dropout": tune.uniform(0.0, 0.2),
        "dense_dropout": tune.uniform(0.0, 0.2),
        "lstm_hidden": tune.choice([8, 16]),
        "sequence_length": tune.randint(10, 31),
        "top_k": tune.choice([8, 12, 16]),
        "lr": tune.loguniform(1e-4, 1e-2),
        "weight_decay": tune.loguniform(1e-4, 5e-2),
        "batch_size": tune.choice([32, 64]),
    },
}

# The presets' own values: evaluated first (OptunaSearch points_to_evaluate) so tuning starts from the default.
DEFAULTS: dict[str, dict[str, Any]] = {
    "small": {"width": 1.0, "kernel_size": 5, "conv_dropout": 0.2, "lstm_dropout": 0.2, "dense_dropout": 0.3,
              "lstm_hidden": 48, "sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3,
              "batch_size": 64},
    "seed": {"width": 1.0, "kernel_size": 5, "conv_dropout": 0.3, "lstm_dropout": 0.3, "dense_dropout": 0.35,
             "lstm_hidden": 256, "sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3,
             "batch_size": 64},
    "tiny": {"width": 1.0, "kernel_size": 3, "conv_dropout": 0.0, "lstm_dropout": 0.0, "dense_dropout": 0.0,
             "lstm_hidden": 8, "sequence_length": 20, "top_k": 12, "lr": 1e-3, "weight_decay": 5e-3,
             "batch_size": 64},
}


def model_config(space_preset: str, params: dict[str, Any], n_features: int, seq_len: int, n_classes: int
                 ) -> HybridConfig:
    """A trial's parameters -> a HybridConfig (the preset with the searched fields replaced)."""
    base = preset(space_preset)
    width = float(params.get("width", 1.0))
    filters = tuple(max(4, int(round(f * width))) for f in base.conv_filters)
    return replace(base, n_features=n_features, seq_len=seq_len, n_classes=n_classes, conv_filters=filters,
                   kernel_size=int(params.get("kernel_size", base.kernel_size)),
                   conv_dropout=float(params.get("conv_dropout", base.conv_dropout)),
                   lstm_dropout=float(params.get("lstm_dropout", base.lstm_dropout)),
                   dense_dropout=float(params.get("dense_dropout", base.dense_dropout)),
                   lstm_hidden=int(params.get("lstm_hidden", base.lstm_hidden)))
