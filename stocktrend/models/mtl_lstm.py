"""Seed 004's multi-task LSTM: one shared LSTM, two heads. An action head classifies the trend (focal loss, gamma
configurable: it down-weights the easy majority days) and a return head regresses the forward return; the losses are
weighted 20 : 50 as in the seed (``cls_weight`` : ``reg_weight``). Both outputs are served.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin, mlp
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class MTLConfig(ConfigMixin):
    n_features: int = 50
    seq_len: int = 30  # days per window (informational)
    n_classes: int = 2  # classes of the action head
    hidden: int = 64  # shared LSTM
    layers: int = 2
    dropout: float = 0.2
    head: tuple[int, ...] = (32,)  # widths of each head
    focal_gamma: float = 2.0  # focal loss focusing parameter (0 = cross-entropy)
    cls_weight: float = 20.0  # loss weights, the seed's 20 : 50
    reg_weight: float = 50.0
    return_scale: float = 100.0  # the return head predicts return x scale (percent)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError("mtl_lstm's action head needs a classification label (binary or ternary)")
        if self.focal_gamma < 0 or self.cls_weight < 0 or self.reg_weight < 0:
            raise ValueError("focal_gamma and the loss weights must be >= 0")


PRESETS: dict[str, MTLConfig] = {
    "seed": MTLConfig(hidden=128, head=(64,)),
    "small": MTLConfig(),
    "tiny": MTLConfig(hidden=8, layers=1, head=(8,), dropout=0.0),
}

SPACE: dict[str, tuple] = {"hidden": ("choice", [32, 64, 96]), "dropout": ("uniform", 0.0, 0.4),
                           "focal_gamma": ("uniform", 0.0, 3.0)}
TINY_SPACE: dict[str, tuple] = {"hidden": ("choice", [4, 8]), "focal_gamma": ("uniform", 0.0, 3.0)}


class MTLNet(nn.Module):
    def __init__(self, cfg: MTLConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_features, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.action = mlp(cfg.hidden, cfg.head, cfg.n_classes, cfg.dropout)
        self.ret = mlp(cfg.hidden, cfg.head, 1, cfg.dropout)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, _ = self.lstm(x)
        last = h[:, -1]
        return {"logits": self.action(last), "ret": self.ret(last)[:, 0] / self.cfg.return_scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)["logits"]


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy scaled by (1 - p_true)^gamma per sample (Lin et al. 2017); class weights optional."""
    logp = torch.log_softmax(logits.float(), -1)
    logp_true = logp.gather(1, y[:, None])[:, 0]
    loss = -((1 - logp_true.exp()) ** gamma) * logp_true
    if weight is not None:
        w = weight[y]
        return (loss * w).sum() / w.sum()
    return loss.mean()


SPEC = ModelSpec(kind="mtl_lstm", config=MTLConfig, net=MTLNet, presets=PRESETS,
                 space={"default": SPACE, "tiny": TINY_SPACE}, class_task=Task.multitask,
                 description="seed 004: shared LSTM, action head (focal loss) + return head (Huber)")
