"""Seed 002's dual tower: a stock tower over the ticker's own features and a context tower over market, indicator and
calendar features, joined by an interaction layer.

Input: the window, summarised per tower as [last day's features, the window's mean] (a pooled window, no recurrence):
the seed's towers worked on one day's features; the mean adds the window's level at no cost. Each tower is an MLP to
``tower_out`` units; the interaction layer sees [stock, context, stock * context] (the element-wise product lets a
market state switch a stock signal on or off) before the dense head.

Which input columns go to which tower is part of the config (``stock_idx`` / ``context_idx``), chosen by feature name
when the model is built for a data set (``towers``, called through ``SPEC.sized``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin, mlp
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class DualTowerConfig(ConfigMixin):
    n_features: int = 50  # input features per day
    seq_len: int = 30  # days per window (informational)
    n_classes: int = 2
    stock_idx: tuple[int, ...] = ()  # input columns of the stock tower (the ticker's own features, ticker identity)
    context_idx: tuple[int, ...] = ()  # input columns of the context tower (market, indicators, calendar)
    tower: tuple[int, ...] = (64,)  # hidden widths of each tower
    tower_out: int = 32  # each tower's output width
    interaction: tuple[int, ...] = (64, 32)  # head widths after [s, c, s * c]
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if not self.stock_idx or not self.context_idx:
            raise ValueError("dual_tower needs input columns for both towers: the ticker's own features and at least "
                             "one market / indicator / calendar feature (raise --top-k if the selection kept none)")
        bad = [i for i in (*self.stock_idx, *self.context_idx) if not 0 <= i < self.n_features]
        if bad:
            raise ValueError(f"dual_tower tower columns out of range for {self.n_features} features: {bad[:5]}")


# Sizes only: a dual tower config is complete once the data set's columns are split between the towers.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {"tower": (128, 64), "tower_out": 64, "interaction": (128, 64), "dropout": 0.3},
    "small": {},
    "tiny": {"tower": (8,), "tower_out": 8, "interaction": (8,), "dropout": 0.0},
}

SPACE: dict[str, tuple] = {"tower_out": ("choice", [16, 32, 64]), "dropout": ("uniform", 0.0, 0.4)}
TINY_SPACE: dict[str, tuple] = {"tower_out": ("choice", [4, 8]), "dropout": ("uniform", 0.0, 0.2)}


def towers(names: Sequence[str], own: frozenset[str]) -> dict[str, Any]:
    """Input columns per tower, by feature name: the ticker's own features (and its identity) feed the stock tower,
    everything else (market, indicators, calendar) the context tower."""
    return {"stock_idx": tuple(i for i, n in enumerate(names) if n in own or n.startswith("ticker=")),
            "context_idx": tuple(i for i, n in enumerate(names) if n not in own and not n.startswith("ticker="))}


class DualTowerNet(nn.Module):
    def __init__(self, cfg: DualTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("stock_idx", torch.tensor(cfg.stock_idx, dtype=torch.long), persistent=False)
        self.register_buffer("context_idx", torch.tensor(cfg.context_idx, dtype=torch.long), persistent=False)
        self.stock = mlp(2 * len(cfg.stock_idx), cfg.tower, cfg.tower_out, cfg.dropout)
        self.context = mlp(2 * len(cfg.context_idx), cfg.tower, cfg.tower_out, cfg.dropout)
        self.head = mlp(3 * cfg.tower_out, cfg.interaction, cfg.n_classes, cfg.dropout)

    @staticmethod
    def _summary(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, -1], x.mean(1)], dim=-1)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.stock(self._summary(x.index_select(2, self.stock_idx)))
        c = self.context(self._summary(x.index_select(2, self.context_idx)))
        return {"logits": self.head(torch.cat([s, c, s * c], dim=-1))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)["logits"]


SPEC = ModelSpec(kind="dual_tower", config=DualTowerConfig, net=DualTowerNet, presets=PRESETS,
                 space={"default": SPACE, "tiny": TINY_SPACE}, class_task=Task.classification, input_groups=towers,
                 description="seed 002: stock tower x context tower, interaction layer")
