"""Seed 002's "SimpleLSTM": a 2-layer LSTM over the window, its last hidden state through a small dense head.

About 57.7k parameters at 21 inputs / 3 classes with the seed preset (LSTM 2 x 64 = 55,552; head 64 -> 32 -> 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin, mlp
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class LSTMConfig(ConfigMixin):
    n_features: int = 21  # input features per day
    seq_len: int = 30  # days per window (informational)
    n_classes: int = 3  # logits per class
    hidden: int = 64  # LSTM hidden size
    layers: int = 2  # stacked LSTM layers
    dropout: float = 0.2  # between LSTM layers and in the head
    dense: tuple[int, ...] = (32,)  # head widths (Linear -> ReLU -> Dropout)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1 or self.n_features < 1 or self.n_classes < 2:
            raise ValueError("lstm needs hidden >= 1, layers >= 1, n_features >= 1 and n_classes >= 2")


PRESETS: dict[str, LSTMConfig] = {
    "seed": LSTMConfig(),
    "small": LSTMConfig(hidden=48, dense=(32,)),
    "tiny": LSTMConfig(hidden=8, layers=1, dense=(8,), dropout=0.0),
}

# Search space beside the model (plain data; stocktrend.tune.space turns it into Tune distributions).
SPACE: dict[str, tuple] = {"hidden": ("choice", [32, 48, 64, 96]), "layers": ("choice", [1, 2, 3]),
                           "dropout": ("uniform", 0.0, 0.4)}
TINY_SPACE: dict[str, tuple] = {"hidden": ("choice", [4, 8]), "dropout": ("uniform", 0.0, 0.2)}


class LSTMNet(nn.Module):
    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_features, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = mlp(cfg.hidden, cfg.dense, cfg.n_classes, cfg.dropout)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, _ = self.lstm(x)
        return {"logits": self.head(h[:, -1])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)["logits"]


SPEC = ModelSpec(kind="lstm", config=LSTMConfig, net=LSTMNet, presets=PRESETS,
                 space={"default": SPACE, "tiny": TINY_SPACE}, class_task=Task.classification,
                 description="seed 002's SimpleLSTM: 2-layer LSTM -> last state -> dense head")
