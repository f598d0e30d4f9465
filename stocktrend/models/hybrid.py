"""Hybrid stock-trend network: CNN -> BiLSTM -> Transformer encoder -> attention pooling -> dense head.

One model, one file, one frozen config (nanoGPT style). A checkpoint stores ``asdict(config)`` so the model is rebuilt
from the checkpoint alone; no class is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from stocktrend.models.common import ConfigMixin
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class HybridConfig(ConfigMixin):
    n_features: int = 50  # input features per day (top-K selected)
    seq_len: int = 30  # days per window (informational: the network accepts any length)
    n_classes: int = 2  # logits per class; 0 = regression (one output)
    conv_filters: tuple[int, ...] = (128, 256, 256, 256, 256)  # one Conv1d block per entry
    kernel_size: int = 5  # "same" padding keeps the time axis
    conv_dropout: float = 0.3
    lstm_hidden: int = 256  # per direction; the LSTM output is 2 x hidden (bidirectional)
    lstm_layers: int = 3
    lstm_dropout: float = 0.3  # between LSTM layers
    n_heads: int = 4  # transformer heads; d_model = 2 x lstm_hidden
    transformer_layers: int = 1
    ff_dim: int = 1060  # transformer feed-forward width (1060 puts the seed preset closest to the seeds' 7,702,786)
    transformer_dropout: float = 0.1
    dense: tuple[int, ...] = (256, 128, 64)  # dense head widths, each Linear -> BatchNorm -> ReLU -> Dropout
    dense_dropout: float = 0.35
    # The last day's inputs also go straight to the dense head (concatenated with the pooled sequence). Without this
    # path a weak signal in the latest inputs has to cross five conv blocks, the BiLSTM, the transformer and the
    # pooling average over days: on a planted rho 0.10 signal the hybrid kept 0.14 of the oracle's t where the lstm
    # kept 0.78 (bench/README.md, issue 38). False in checkpoints written before the field existed.
    last_day_skip: bool = False

    def __post_init__(self) -> None:
        if (2 * self.lstm_hidden) % self.n_heads:
            raise ValueError(f"d_model = 2 x lstm_hidden = {2 * self.lstm_hidden} must be divisible by n_heads "
                             f"= {self.n_heads}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {self.kernel_size}")
        if not self.conv_filters or self.n_features < 1 or self.lstm_layers < 1:
            raise ValueError("need at least one conv block, one input feature and one LSTM layer")


PRESETS: dict[str, HybridConfig] = {
    # The seeds' v2 network (Conv 128-256x4, BiLSTM 256x3, 4 heads, dense 256/128/64), plus the last day's inputs
    # into the head (every preset: bench/README.md, issue 38).
    "seed": HybridConfig(last_day_skip=True),
    # ~30x cheaper for CPU runs, tests and the quickstart.
    "small": HybridConfig(conv_filters=(32, 64, 64, 64, 64), lstm_hidden=48, lstm_layers=2, n_heads=4, ff_dim=192,
                          dense=(64, 32), conv_dropout=0.2, lstm_dropout=0.2, dense_dropout=0.3, last_day_skip=True),
    # Test-sized: forward + backward well under a second.
    "tiny": HybridConfig(conv_filters=(8, 8, 8, 8, 8), kernel_size=3, lstm_hidden=8, lstm_layers=1, n_heads=2,
                         ff_dim=16, dense=(8,), conv_dropout=0.0, lstm_dropout=0.0, transformer_dropout=0.0,
                         dense_dropout=0.0, last_day_skip=True),
}


# The search space beside the model (plain data; stocktrend.tune.space turns it into Tune distributions). ``width``
# multiplies the preset's conv filters, so every trial keeps the seeds' filter shape.
SPACE: dict[str, tuple] = {
    "width": ("choice", [0.5, 0.75, 1.0, 1.5]), "kernel_size": ("choice", [3, 5, 7]),
    "conv_dropout": ("uniform", 0.05, 0.4), "lstm_dropout": ("uniform", 0.05, 0.4),
    "dense_dropout": ("uniform", 0.1, 0.5), "lstm_hidden": ("choice", [32, 48, 64]),
}
SEED_SPACE: dict[str, tuple] = {
    "width": ("choice", [0.5, 0.75, 1.0]), "kernel_size": ("choice", [3, 5, 7]),
    "conv_dropout": ("uniform", 0.2, 0.4), "lstm_dropout": ("uniform", 0.2, 0.4),
    "dense_dropout": ("uniform", 0.25, 0.45), "lstm_hidden": ("choice", [128, 192, 256]),
}
TINY_SPACE: dict[str, tuple] = {
    "width": ("choice", [1.0, 2.0]), "kernel_size": ("choice", [3, 5]), "conv_dropout": ("uniform", 0.0, 0.2),
    "lstm_dropout": ("uniform", 0.0, 0.2), "dense_dropout": ("uniform", 0.0, 0.2), "lstm_hidden": ("choice", [8, 16]),
}


def from_params(base: HybridConfig, params: dict[str, Any]) -> HybridConfig:
    """A search trial's parameters on top of a config (``width`` scales the conv filters)."""
    width = float(params.get("width", 1.0))
    filters = tuple(max(4, int(round(f * width))) for f in base.conv_filters)
    return replace(base, conv_filters=filters, kernel_size=int(params.get("kernel_size", base.kernel_size)),
                   conv_dropout=float(params.get("conv_dropout", base.conv_dropout)),
                   lstm_dropout=float(params.get("lstm_dropout", base.lstm_dropout)),
                   dense_dropout=float(params.get("dense_dropout", base.dense_dropout)),
                   lstm_hidden=int(params.get("lstm_hidden", base.lstm_hidden)))


def preset(name: str, **overrides: Any) -> HybridConfig:
    return SPEC.preset(name, **overrides)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out), nn.ReLU(),
                         nn.Dropout(dropout))


class AttentionPooling(nn.Module):
    """Linear score per day -> softmax over time -> weighted sum. The weights say which days mattered."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Linear(d, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.softmax(self.score(h).squeeze(-1), dim=1)  # (B, L)
        return torch.einsum("bl,bld->bd", w, h), w


class HybridNet(nn.Module):
    def __init__(self, cfg: HybridConfig):
        super().__init__()
        self.cfg = cfg
        chans = (cfg.n_features, *cfg.conv_filters)
        self.conv = nn.Sequential(*[ConvBlock(a, b, cfg.kernel_size, cfg.conv_dropout)
                                    for a, b in zip(chans[:-1], chans[1:])])
        self.lstm = nn.LSTM(chans[-1], cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            bidirectional=True, dropout=cfg.lstm_dropout if cfg.lstm_layers > 1 else 0.0)
        d = 2 * cfg.lstm_hidden
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ff_dim, cfg.transformer_dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)
        self.pool = AttentionPooling(d)
        head: list[nn.Module] = []
        widths = (d + (cfg.n_features if cfg.last_day_skip else 0), *cfg.dense)
        for a, b in zip(widths[:-1], widths[1:]):
            head += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(cfg.dense_dropout)]
        head.append(nn.Linear(widths[-1], cfg.n_classes if cfg.n_classes > 0 else 1))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, days, features) -> logits (batch, n_classes) or (batch,) for regression."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.n_features:
            raise ValueError(f"expected input (batch, days, {self.cfg.n_features}), got {tuple(x.shape)}")
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        h, _ = self.lstm(h)
        h = self.transformer(h)
        pooled, weights = self.pool(h)
        if self.cfg.last_day_skip:
            pooled = torch.cat([pooled, x[:, -1, :]], dim=-1)
        out = self.head(pooled)
        if self.cfg.n_classes == 0:
            out = out.squeeze(-1)
        return (out, weights) if return_attention else out

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The zoo's common call: logits (or the regression value as ``ret``) and the per-day attention weights."""
        out, att = self.forward(x, return_attention=True)
        return {("ret" if self.cfg.n_classes == 0 else "logits"): out, "attention": att}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SPEC = ModelSpec(
    kind="hybrid", config=HybridConfig, net=HybridNet, presets=PRESETS,
    space={"default": SPACE, "seed": SEED_SPACE, "tiny": TINY_SPACE},
    class_task=Task.classification, value_task=Task.regression, attention=True,
    param_defaults={"width": 1.0}, params=from_params,
    description="seeds' v2: Conv1d blocks -> BiLSTM -> Transformer -> attention pooling -> dense head")
