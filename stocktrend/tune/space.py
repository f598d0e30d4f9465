"""Search spaces: each model's own space lives beside it (``stocktrend/models/<kind>.py``, plain data); here it is
turned into Tune distributions and joined with what every model shares (sequence length and top-K, which change only
the windows and the selection, rebuilt per trial from the cached features; learning rate, weight decay and batch size
for the torch models).

One model: the parameters keep their own names (``width``, ``lstm_hidden``, ...). Several models (``--model
hybrid,lstm``): ``model`` becomes a search dimension and each model's parameters are prefixed with its kind
(``lstm.hidden``); a trial uses only its own model's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ray import tune

from stocktrend.models import zoo
from stocktrend.models.hybrid import HybridConfig, from_params, preset

COMMON: dict[str, dict[str, Any]] = {
    "small": {"sequence_length": tune.randint(10, 61), "top_k": tune.choice([20, 30, 50, 80]),
              "lr": tune.loguniform(5e-5, 1e-3), "weight_decay": tune.loguniform(1e-4, 5e-2),
              "batch_size": tune.choice([32, 64, 128])},
    "seed": {"sequence_length": tune.randint(20, 61), "top_k": tune.choice([30, 50, 80]),
             "lr": tune.loguniform(1e-4, 5e-4), "weight_decay": tune.loguniform(1e-3, 1e-2),
             "batch_size": tune.choice([64, 128])},
    # Test-sized (CI): seconds per trial.
    "tiny": {"sequence_length": tune.randint(10, 31), "top_k": tune.choice([8, 12, 16]),
             "lr": tune.loguniform(1e-4, 1e-2), "weight_decay": tune.loguniform(1e-4, 5e-2),
             "batch_size": tune.choice([32, 64])},
}
COMMON_DEFAULTS: dict[str, dict[str, Any]] = {
    "small": {"sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3, "batch_size": 64},
    "seed": {"sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3, "batch_size": 64},
    "tiny": {"sequence_length": 20, "top_k": 12, "lr": 1e-3, "weight_decay": 5e-3, "batch_size": 64},
}
TORCH_ONLY = ("lr", "weight_decay", "batch_size")
# The hybrid presets' own values of its searched parameters (``width`` 1.0 = the preset's filters).
HYBRID_DEFAULTS: dict[str, dict[str, Any]] = {
    "small": {"width": 1.0, "kernel_size": 5, "conv_dropout": 0.2, "lstm_dropout": 0.2, "dense_dropout": 0.3,
              "lstm_hidden": 48},
    "seed": {"width": 1.0, "kernel_size": 5, "conv_dropout": 0.3, "lstm_dropout": 0.3, "dense_dropout": 0.35,
             "lstm_hidden": 256},
    "tiny": {"width": 1.0, "kernel_size": 3, "conv_dropout": 0.0, "lstm_dropout": 0.0, "dense_dropout": 0.0,
             "lstm_hidden": 8},
}


def _dist(spec: tuple) -> Any:
    kind, *args = spec
    return {"choice": lambda: tune.choice(args[0]), "uniform": lambda: tune.uniform(*args),
            "loguniform": lambda: tune.loguniform(*args), "randint": lambda: tune.randint(*args)}[kind]()


def _model_defaults(kind: str, preset_name: str) -> dict[str, Any]:
    if kind == "hybrid":
        return dict(HYBRID_DEFAULTS[preset_name])
    base = zoo.module(kind).PRESETS[preset_name]
    values = base if isinstance(base, dict) else base.__dict__
    default = zoo.config_class(kind)
    out = {}
    for key in zoo.space(kind, preset_name):
        out[key] = values.get(key, getattr(default, "__dataclass_fields__")[key].default)
    return out


def _common(kind: str, preset_name: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in table[preset_name].items() if not (zoo.is_sklearn(kind) and k in TORCH_ONLY)}


def search_space(models: list[str], preset_name: str) -> dict[str, Any]:
    """The Tune param_space of a search over ``models`` (one or more kinds) at a preset."""
    if preset_name not in COMMON:
        raise ValueError(f"unknown search preset {preset_name!r}; available: {', '.join(COMMON)}")
    for k in models:
        zoo.check(k)
    if len(models) == 1:
        kind = models[0]
        return {**_common(kind, preset_name, COMMON),
                **{k: _dist(v) for k, v in zoo.space(kind, preset_name).items()}}
    space: dict[str, Any] = {"model": tune.choice(list(models)), **COMMON[preset_name]}
    for kind in models:
        space.update({f"{kind}.{k}": _dist(v) for k, v in zoo.space(kind, preset_name).items()})
    return space


def search_defaults(models: list[str], preset_name: str) -> list[dict[str, Any]]:
    """Points evaluated first: every model's preset (tuning starts from the defaults)."""
    if len(models) == 1:
        kind = models[0]
        return [{**_common(kind, preset_name, COMMON_DEFAULTS), **_model_defaults(kind, preset_name)}]
    points = []
    everyone = {f"{k}.{p}": v for k in models for p, v in _model_defaults(k, preset_name).items()}
    for kind in models:
        points.append({"model": kind, **COMMON_DEFAULTS[preset_name], **everyone})
    return points


def trial_model(config: dict[str, Any], models: list[str]) -> tuple[str, dict[str, Any]]:
    """A trial's model kind and its own model parameters (prefixes removed)."""
    if len(models) == 1:
        return models[0], dict(config)
    kind = config["model"]
    return kind, {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith(f"{kind}.")}


def trial_model_config(data, preset_name: str, config: dict[str, Any], models: list[str]):
    """A trial's parameters -> the model config for this data set."""
    from stocktrend.platform.training.local import model_config_for
    kind, params = trial_model(config, models)
    return kind, zoo.from_params(kind, model_config_for(data, preset_name, kind), params)


# The hybrid search as before (kept for callers that search the hybrid model only).
SPACES: dict[str, dict[str, Any]] = {p: search_space(["hybrid"], p) for p in COMMON}
DEFAULTS: dict[str, dict[str, Any]] = {p: search_defaults(["hybrid"], p)[0] for p in COMMON}


def model_config(space_preset: str, params: dict[str, Any], n_features: int, seq_len: int, n_classes: int
                 ) -> HybridConfig:
    """A hybrid trial's parameters -> a HybridConfig (the preset with the searched fields replaced)."""
    return from_params(replace(preset(space_preset), n_features=n_features, seq_len=seq_len, n_classes=n_classes),
                       params)
