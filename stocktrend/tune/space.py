"""Search spaces: each model's own space lives in its spec (``stocktrend/models/<kind>.py``, plain data); here it is
turned into Tune distributions and joined with what every model shares (sequence length and top-K, which change only
the windows and the selection, rebuilt per trial from the cached features; learning rate, weight decay and batch size
for the torch models).

One model: the parameters keep their own names (``width``, ``lstm_hidden``, ...). Several models (``--model
hybrid,lstm``): ``model`` becomes a search dimension and each model's parameters are prefixed with its kind
(``lstm.hidden``); a trial uses only its own model's.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from stocktrend.models.spec import ModelSpec

# Windows from 5 days: on a planted weak signal the short windows recovered more of it (logistic regression 0.40 ->
# 0.91 of the oracle at rho 0.05 from 30 to 5 days, the lstm 0.62 -> 0.68; bench/README.md, issue 38), while a
# signal spread over weeks needs the long ones: the search decides per data set.
COMMON: dict[str, dict[str, Any]] = {
    "small": {"sequence_length": tune.randint(5, 61), "top_k": tune.choice([8, 20, 30, 50, 80]),
              "lr": tune.loguniform(5e-5, 1e-3), "weight_decay": tune.loguniform(1e-4, 5e-2),
              "batch_size": tune.choice([32, 64, 128])},
    "seed": {"sequence_length": tune.randint(20, 61), "top_k": tune.choice([30, 50, 80]),
             "lr": tune.loguniform(1e-4, 5e-4), "weight_decay": tune.loguniform(1e-3, 1e-2),
             "batch_size": tune.choice([64, 128])},
    # Test-sized (CI): seconds per trial.
    "tiny": {"sequence_length": tune.randint(5, 31), "top_k": tune.choice([8, 12, 16]),
             "lr": tune.loguniform(1e-4, 1e-2), "weight_decay": tune.loguniform(1e-4, 5e-2),
             "batch_size": tune.choice([32, 64])},
}
COMMON_DEFAULTS: dict[str, dict[str, Any]] = {
    "small": {"sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3, "batch_size": 64},
    "seed": {"sequence_length": 30, "top_k": 50, "lr": 2e-4, "weight_decay": 5e-3, "batch_size": 64},
    "tiny": {"sequence_length": 20, "top_k": 12, "lr": 1e-3, "weight_decay": 5e-3, "batch_size": 64},
}
TORCH_ONLY = ("lr", "weight_decay", "batch_size")


def _dist(spec: tuple) -> Any:
    kind, *args = spec
    return {"choice": lambda: tune.choice(args[0]), "uniform": lambda: tune.uniform(*args),
            "loguniform": lambda: tune.loguniform(*args), "randint": lambda: tune.randint(*args)}[kind]()


def _common(spec: ModelSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The data and training parameters a model takes (scikit-learn models have no lr, weight decay or batch)."""
    return {k: v for k, v in params.items() if not (spec.is_sklearn and k in TORCH_ONLY)}


def search_space(specs: list[ModelSpec], preset_name: str) -> dict[str, Any]:
    """The Tune param_space of a search over ``specs`` (one or more models) at a preset."""
    if preset_name not in COMMON:
        raise ValueError(f"unknown search preset {preset_name!r}; available: {', '.join(COMMON)}")
    if len(specs) == 1:
        spec = specs[0]
        return {**_common(spec, COMMON[preset_name]),
                **{k: _dist(v) for k, v in spec.space_for(preset_name).items()}}
    space: dict[str, Any] = {"model": tune.choice([s.kind for s in specs]), **COMMON[preset_name]}
    for spec in specs:
        space.update({f"{spec.kind}.{k}": _dist(v) for k, v in spec.space_for(preset_name).items()})
    return space


def _in_domain(domain: Any, value: Any) -> bool:
    if hasattr(domain, "categories"):
        return value in domain.categories
    return domain.lower <= value < domain.upper  # tune.randint: the upper bound is excluded


def search_defaults(specs: list[ModelSpec], preset_name: str, start: dict[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
    """Points evaluated first: every model's preset (tuning starts from the defaults), with the window length and
    top-K of ``start`` (a universe's own data defaults, e.g. us29's 5 days x 8 features) where the preset's space
    holds them."""
    common = dict(COMMON_DEFAULTS[preset_name])
    for key, value in (start or {}).items():
        if key in ("sequence_length", "top_k") and _in_domain(COMMON[preset_name][key], value):
            common[key] = value
    if len(specs) == 1:
        spec = specs[0]
        return [{**_common(spec, common), **spec.search_defaults(preset_name)}]
    points = []
    everyone = {f"{s.kind}.{p}": v for s in specs for p, v in s.search_defaults(preset_name).items()}
    for spec in specs:
        points.append({"model": spec.kind, **common, **everyone})
    return points


def trial_model(config: dict[str, Any], specs: list[ModelSpec]) -> tuple[ModelSpec, dict[str, Any]]:
    """A trial's model spec and its own model parameters (prefixes removed)."""
    if len(specs) == 1:
        return specs[0], dict(config)
    spec = next(s for s in specs if s.kind == config["model"])
    return spec, {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith(f"{spec.kind}.")}


def trial_model_config(data, preset_name: str, config: dict[str, Any], specs: list[ModelSpec]):
    """A trial's parameters -> (its spec, the model config for this data set)."""
    from stocktrend.platform.training.local import model_config_for
    spec, params = trial_model(config, specs)
    return spec, spec.from_params(model_config_for(data, preset_name, spec), params)
