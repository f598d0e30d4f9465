"""What every model file shares: config (de)serialisation as plain data and the dense-head builder."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from torch import nn


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for frozen config dataclasses: tuples become lists (plain data for a weights-only
    checkpoint) and come back as tuples; an unknown field is an error, not silently ignored."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config field(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def mlp(d_in: int, widths: tuple[int, ...], d_out: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout per width, then a Linear to ``d_out``."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d_in, w), nn.ReLU(), nn.Dropout(dropout)]
        d_in = w
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)
