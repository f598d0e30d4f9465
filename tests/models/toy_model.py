"""A model added the way docs/models.md's "Add a model" says, kept outside the package: one file with a frozen config, a
network with ``outputs(x) -> dict`` and a ``SPEC``. The test puts it in the zoo with ``STOCKTREND_MODELS`` (the
package's own models are one line each in ``stocktrend/models/zoo.py`` instead)."""

from dataclasses import dataclass

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin
from stocktrend.models.spec import ModelSpec


@dataclass(frozen=True)
class ToyConfig(ConfigMixin):
    n_features: int = 8  # input features per day
    seq_len: int = 10  # days per window (informational)
    n_classes: int = 2  # logits per class
    hidden: int = 8  # width of the per-day projection


PRESETS = {"tiny": ToyConfig(), "small": ToyConfig(hidden=32)}
SPACE = {"hidden": ("choice", [4, 8, 16])}


class ToyNet(nn.Module):
    """Project each day, average over the window, classify."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.day = nn.Linear(cfg.n_features, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.n_classes)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(torch.relu(self.day(x)).mean(1))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)["logits"]


SPEC = ModelSpec(kind="toy", config=ToyConfig, net=ToyNet, presets=PRESETS, space={"default": SPACE},
                 class_task="classification", description="a test model: per-day projection, mean, linear head")
