"""The model zoo: every model kind the platform trains, serves and registers, behind one set of functions.

| kind | seed | what it predicts | trained by |
|---|---|---|---|
| hybrid | v2 | class probabilities (or a return with ``--label regression``); attention per day | Lightning |
| lstm | 002 | class probabilities | Lightning |
| dual_tower | 002 | class probabilities | Lightning |
| lstm_transformer | 003 | forward return + calibrated confidence | Lightning (Gaussian NLL) |
| mtl_lstm | 004 | class probabilities and forward return | Lightning (focal + Huber, 20 : 50) |
| rf, gbm | 004 | class probabilities | scikit-learn (skops file, no pickle) |

Every torch model has ``outputs(x) -> dict`` with some of: ``logits`` (batch, classes), ``ret`` (batch,),
``log_var`` (batch,), ``attention`` (batch, days). A checkpoint records the kind and the config as plain data, so every
consumer rebuilds the model from the checkpoint alone.
"""

from __future__ import annotations

import importlib
from typing import Any

KINDS = ("hybrid", "lstm", "dual_tower", "lstm_transformer", "mtl_lstm", "rf", "gbm")
SKLEARN = ("rf", "gbm")
_CONFIG = {"hybrid": "HybridConfig", "lstm": "LSTMConfig", "dual_tower": "DualTowerConfig",
           "lstm_transformer": "LSTMTransformerConfig", "mtl_lstm": "MTLConfig", "rf": "RFConfig", "gbm": "GBMConfig"}
_NET = {"hybrid": "HybridNet", "lstm": "LSTMNet", "dual_tower": "DualTowerNet", "lstm_transformer": "LSTMTransformerNet",
        "mtl_lstm": "MTLNet"}


def check(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown model {kind!r}; available: {', '.join(KINDS)}")
    return kind


def module(kind: str):
    return importlib.import_module(f"stocktrend.models.{check(kind)}")


def config_class(kind: str):
    return getattr(module(kind), _CONFIG[kind])


def preset(kind: str, name: str, **overrides: Any):
    return module(kind).preset(name, **overrides)


def presets(kind: str) -> list[str]:
    return list(module(kind).PRESETS)


def config_from_dict(kind: str, d: dict[str, Any]):
    return config_class(kind).from_dict(d)


def build(kind: str, cfg):
    """The torch network of a config (scikit-learn kinds are fitted, not built: see ``is_sklearn``)."""
    if kind in SKLEARN:
        raise ValueError(f"{kind} is a scikit-learn model: it is fitted by stocktrend.platform.training.sklearn_fit")
    return getattr(module(kind), _NET[kind])(cfg)


def is_sklearn(kind: str) -> bool:
    return check(kind) in SKLEARN


def task(kind: str, label_kind: str) -> str:
    """classification | regression | multitask: what the model predicts for a data set's label kind."""
    check(kind)
    if kind == "lstm_transformer":
        return "regression"
    if kind == "mtl_lstm":
        return "multitask"
    if kind == "hybrid" and label_kind == "regression":
        return "regression"
    return "classification"


def label_for(kind: str, label_kind: str) -> str:
    """The label kind a model needs, given the one asked for; an impossible pair is a clear error."""
    check(kind)
    if kind == "lstm_transformer":
        return "regression"  # it predicts the forward return itself
    if label_kind == "regression" and kind != "hybrid":
        raise ValueError(f"{kind} predicts classes: use --label binary or ternary (lstm_transformer and hybrid "
                         f"regress the return)")
    return label_kind


def space(kind: str, preset_name: str) -> dict[str, tuple]:
    """The model's own search space (plain data) for a preset; ``tiny`` has a test-sized one."""
    m = module(kind)
    if preset_name == "tiny" and hasattr(m, "TINY_SPACE"):
        return dict(m.TINY_SPACE)
    if preset_name == "seed" and hasattr(m, "SEED_SPACE"):
        return dict(m.SEED_SPACE)
    return dict(m.SPACE)


def from_params(kind: str, base, params: dict[str, Any]):
    """A config with a trial's model parameters applied (keys of the model's space; others are ignored)."""
    from dataclasses import fields, replace
    m = module(kind)
    if hasattr(m, "from_params"):
        return m.from_params(base, params)
    names = {f.name: f.type for f in fields(base)}
    kw = {k: (type(getattr(base, k))(v) if getattr(base, k) is not None else v)
          for k, v in params.items() if k in names and k in m.SPACE}
    return replace(base, **kw)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
