"""Seed 003's regressor: temporal features through an LSTM and a Transformer encoder, static per-ticker inputs through a
dense branch, a regression head for the forward return (the horizon is a data setting; the seed used one year).

Confidence per prediction: the head predicts a mean and a log-variance of the forward return and is trained with the
Gaussian negative log-likelihood, so the network says how sure it is. The checkpoint then calibrates that on the
validation segment: confidence = P(the predicted direction is right), a logistic fit of "sign right" on
|mean| / std (``stocktrend.platform.registry.checkpoint``), instead of the seed's hand-made score of data completeness,
extremity and volatility.

Static inputs: the columns in ``static_idx`` (the ticker's identity when the data set has it, and slow per-ticker
characteristics such as 120-day volatility or 250-day return) are taken from the window's last day; with no static
column the branch sees the last day's whole feature vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin, mlp
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class LSTMTransformerConfig(ConfigMixin):
    n_features: int = 50
    seq_len: int = 30  # days per window (informational)
    n_classes: int = 0  # always 0: a regressor
    hidden: int = 64  # LSTM hidden size = transformer d_model
    lstm_layers: int = 1
    n_heads: int = 4
    transformer_layers: int = 1
    ff_dim: int = 128
    dropout: float = 0.1
    static_idx: tuple[int, ...] = ()  # input columns read from the last day by the static branch (empty: all of them)
    static_dense: tuple[int, ...] = (32,)  # static branch widths
    head: tuple[int, ...] = (32,)  # head widths after [pooled temporal, static]
    return_scale: float = 100.0  # the head predicts return x scale (percent), which keeps the NLL well conditioned
    # How the mean is trained: "huber" (as every regressor; the variance by the NLL around it; every preset) or "nll"
    # (seed 003's joint Gaussian NLL, which can explain a weak signal away as noise; the field's default, so that a
    # checkpoint saved before the field existed retrains as it was trained)
    mean_loss: str = "nll"

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden {self.hidden} must be divisible by n_heads {self.n_heads}")
        if self.n_classes != 0:
            raise ValueError("lstm_transformer is a regressor (n_classes must be 0)")
        if self.mean_loss not in ("huber", "nll"):
            raise ValueError(f"mean_loss must be 'huber' or 'nll', not {self.mean_loss!r}")


PRESETS: dict[str, LSTMTransformerConfig] = {
    "seed": LSTMTransformerConfig(hidden=128, lstm_layers=2, n_heads=8, transformer_layers=2, ff_dim=256,
                                  static_dense=(64,), head=(64, 32), mean_loss="huber"),
    "small": LSTMTransformerConfig(mean_loss="huber"),
    "tiny": LSTMTransformerConfig(hidden=8, n_heads=2, ff_dim=16, dropout=0.0, static_dense=(8,), head=(8,),
                                  mean_loss="huber"),
}

SPACE: dict[str, tuple] = {"hidden": ("choice", [32, 64, 96]), "dropout": ("uniform", 0.0, 0.3),
                           "transformer_layers": ("choice", [1, 2])}
TINY_SPACE: dict[str, tuple] = {"hidden": ("choice", [4, 8]), "dropout": ("uniform", 0.0, 0.2)}


# Slow per-ticker characteristics that the static branch reads from the last day (with the ticker's identity, when
# the data set has it).
STATIC_FEATURES = ("vol_60", "vol_120", "ret_120", "ret_250", "dist_max_250", "dist_min_250")


def static_columns(names: Sequence[str], own: frozenset[str]) -> dict[str, Any]:
    return {"static_idx": tuple(i for i, n in enumerate(names) if n in STATIC_FEATURES or n.startswith("ticker="))}


class LSTMTransformerNet(nn.Module):
    def __init__(self, cfg: LSTMTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_features, cfg.hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.n_heads, cfg.ff_dim, cfg.dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)
        static_in = len(cfg.static_idx) or cfg.n_features
        self.register_buffer("static_idx", torch.tensor(cfg.static_idx or range(cfg.n_features), dtype=torch.long),
                             persistent=False)
        self.static = mlp(static_in, cfg.static_dense[:-1], cfg.static_dense[-1], cfg.dropout) \
            if cfg.static_dense else nn.Identity()
        d_static = cfg.static_dense[-1] if cfg.static_dense else static_in
        self.head = mlp(cfg.hidden + d_static, cfg.head, 2, cfg.dropout)  # mean, log-variance

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, _ = self.lstm(x)
        h = self.transformer(h).mean(1)
        s = self.static(x[:, -1].index_select(1, self.static_idx))
        out = self.head(torch.cat([h, s], dim=-1))
        # Means and log-variances in return units (the head works in return x scale).
        scale = self.cfg.return_scale
        return {"ret": out[:, 0] / scale, "log_var": out[:, 1].clamp(-12, 12) - 2 * torch.log(
            torch.tensor(scale, dtype=out.dtype, device=out.device))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)["ret"]


SPEC = ModelSpec(kind="lstm_transformer", config=LSTMTransformerConfig, net=LSTMTransformerNet, presets=PRESETS,
                 space={"default": SPACE, "tiny": TINY_SPACE}, class_task=None, value_task=Task.regression,
                 static_inputs=True, input_groups=static_columns,
                 description="seed 003: LSTM -> Transformer + static branch; mean and variance of the return")
