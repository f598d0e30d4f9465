"""What a model of the zoo is, declared once in its own file: ``SPEC = ModelSpec(...)``.

Every consumer (training, the search, checkpoints, serving, evaluation, the loop) asks the spec, never the model's
name: which config class and network rebuild it, its presets and search spaces, what it predicts for each label kind,
whether it takes static per-ticker inputs, returns attention, or is fitted by scikit-learn. Capability flags on the
model, as neuralforecast's models carry them; one file per model, as nanoGPT's.

Label kinds come in two families: *class* labels (binary, ternary, and their market-neutral variants) and *value*
labels (regression: the forward return, or its market-neutral variants). A model says what it predicts for each
family (``class_task`` / ``value_task``); a model that can only regress (``lstm_transformer``) turns a class label into
its value twin (``value_label``), one that can only classify refuses a value label with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Callable, Mapping, Sequence


class Task(str, Enum):
    """What a model predicts for a label: classes, a value, or both (a class head and a return head). A str enum:
    it prints, serialises and compares as its name."""

    classification = "classification"
    regression = "regression"
    multitask = "multitask"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_regression(self) -> bool:
        return self is Task.regression

    @property
    def is_classification(self) -> bool:
        return self is Task.classification

    @property
    def is_multitask(self) -> bool:
        return self is Task.multitask

    @property
    def predicts_classes(self) -> bool:
        """A class head: probabilities over the label's classes (classification and multitask)."""
        return self is not Task.regression


TASKS = tuple(t.value for t in Task)
# Label kinds whose target is a number (the forward return, the excess return over the day's universe mean, the day's
# cross-sectional rank); every other kind is a class. A class label's value twin is what a regressor trains on when
# that class label is asked for: the raw return for the raw direction; for the market-neutral direction (a panel's
# default), the day's rank, on which the lstm_transformer kept 0.66-0.75 of a weak planted signal where regressing
# the excess return itself kept 0.15-0.17 (bench/README.md, issue 38).
VALUE_LABELS = ("regression", "excess_regression", "rank")
VALUE_TWIN = {"binary": "regression", "ternary": "regression", "excess": "rank"}


def _is_value_label(label_kind: str) -> bool:
    return label_kind in VALUE_LABELS


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # the name users type (--model) and checkpoints record
    config: type  # frozen config dataclass with ConfigMixin (to_dict / from_dict)
    presets: Mapping[str, Any]  # preset -> a config, or a dict of sizes that the data completes (dual_tower)
    space: Mapping[str, Mapping[str, tuple]]  # search space per preset; "default" serves presets without their own
    net: type | None = None  # the torch network (``outputs(x) -> dict``); None for scikit-learn models
    fitted_by: str = "lightning"  # lightning | sklearn
    class_task: Task | str | None = Task.classification  # what it predicts for a class label (None: cannot take one)
    value_task: Task | str | None = None  # what it predicts for a value label (None: it cannot take one)
    static_inputs: bool = False  # reads slow per-ticker columns from the window's last day (see ``input_groups``)
    attention: bool = False  # returns per-day attention weights
    fit_uses_validation: bool = False  # scikit-learn: the fit sees the validation segment (early stopping)
    # Searched parameters that are not config fields, with the value that reproduces the preset (hybrid's ``width``).
    param_defaults: Mapping[str, Any] = field(default_factory=dict)
    # A trial's parameters on top of a config; None = replace the config fields named in the space.
    params: Callable[[Any, dict[str, Any]], Any] | None = None
    # Input column names (and the set of the ticker's own feature names) -> config fields that route columns.
    input_groups: Callable[[Sequence[str], frozenset[str]], dict[str, Any]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.fitted_by not in ("lightning", "sklearn"):
            raise ValueError(f"{self.kind}: fitted_by must be lightning or sklearn, got {self.fitted_by!r}")
        if (self.net is None) != (self.fitted_by == "sklearn"):
            raise ValueError(f"{self.kind}: a lightning model needs a net, a scikit-learn one none")
        for name in ("class_task", "value_task"):
            t = getattr(self, name)
            if t is not None and t not in TASKS:
                raise ValueError(f"{self.kind}: unknown task {t!r}; tasks: {', '.join(TASKS)}")
            if t is not None:
                object.__setattr__(self, name, Task(t))
        if self.class_task is None and self.value_task is None:
            raise ValueError(f"{self.kind}: a model must predict something (class_task or value_task)")
        if "default" not in self.space:
            raise ValueError(f"{self.kind}: the search space needs a 'default' entry")

    # -- what it is ------------------------------------------------------------------------------------------------
    @property
    def is_sklearn(self) -> bool:
        return self.fitted_by == "sklearn"

    @property
    def preset_names(self) -> list[str]:
        return list(self.presets)

    def label_for(self, label_kind: str) -> str:
        """The label kind this model trains on, given the one asked for; an impossible pair is a clear error."""
        if _is_value_label(label_kind):
            if self.value_task is None:
                raise ValueError(f"{self.kind} predicts classes: use --label binary or ternary (lstm_transformer "
                                 f"and hybrid regress the return), not {label_kind!r}")
            return label_kind
        if self.class_task is None:  # a regressor given a class label regresses that label's value
            return value_label(label_kind)
        return label_kind

    def task(self, label_kind: str) -> Task:
        """classification | regression | multitask: what the model predicts for a label kind it trains on."""
        task = self.value_task if _is_value_label(label_kind) else self.class_task
        if task is None:
            raise ValueError(f"{self.kind} cannot train on label {label_kind!r}")
        return task

    # -- configs ---------------------------------------------------------------------------------------------------
    def preset(self, name: str, **overrides: Any):
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for {self.kind}; available: {', '.join(self.presets)}")
        base = self.presets[name]
        if isinstance(base, Mapping):
            return self.config(**{**base, **overrides})
        return replace(base, **overrides)

    def config_from_dict(self, d: dict[str, Any]):
        return self.config.from_dict(d)

    def sized(self, preset: str, n_features: int, seq_len: int, n_classes: int, label_kind: str,
              input_names: Sequence[str], ticker_features: frozenset[str], **overrides: Any):
        """A preset sized for a data set: its input width, window and classes, and (models that route columns) which
        columns go where, chosen by feature name."""
        sized: dict[str, Any] = {"n_features": n_features, "seq_len": seq_len,
                                 "n_classes": n_classes if self.task(label_kind).predicts_classes else 0}
        if self.input_groups is not None:
            sized.update(self.input_groups(list(input_names), ticker_features))
        return self.preset(preset, **{**sized, **overrides})

    def build(self, cfg):
        """The torch network of a config (scikit-learn models are fitted, not built)."""
        if self.net is None:
            raise ValueError(f"{self.kind} is a scikit-learn model: it is fitted by "
                             f"stocktrend.platform.training.sklearn_fit")
        return self.net(cfg)

    # -- search ----------------------------------------------------------------------------------------------------
    def space_for(self, preset: str) -> dict[str, tuple]:
        """The model's own search space (plain data) for a preset."""
        return dict(self.space.get(preset, self.space["default"]))

    def search_defaults(self, preset: str) -> dict[str, Any]:
        """The preset's own value of every searched parameter (the search starts there)."""
        base = self.presets[preset]
        cfg = None if isinstance(base, Mapping) else base
        values = dict(base) if isinstance(base, Mapping) else {}
        defaults = {f.name: f.default for f in fields(self.config)}
        out = {}
        for key in self.space_for(preset):
            if key in self.param_defaults:
                out[key] = self.param_defaults[key]
            elif cfg is not None:
                out[key] = getattr(cfg, key)
            else:
                out[key] = values.get(key, defaults[key])
        return out

    def from_params(self, base, params: dict[str, Any]):
        """A config with a trial's model parameters applied (keys of the model's space; others are ignored)."""
        if self.params is not None:
            return self.params(base, params)
        names = {f.name for f in fields(base)}
        known = set().union(*(set(s) for s in self.space.values()))
        kw = {k: (type(getattr(base, k))(v) if getattr(base, k) is not None else v)
              for k, v in params.items() if k in names and k in known}
        return replace(base, **kw)


def value_label(label_kind: str) -> str:
    """The value twin of a class label: what a regressor trains on when a class label is asked for."""
    if _is_value_label(label_kind):
        return label_kind
    if label_kind not in VALUE_TWIN:
        raise ValueError(f"label {label_kind!r} has no value twin")
    return VALUE_TWIN[label_kind]


def is_value_label(label_kind: str) -> bool:
    return _is_value_label(label_kind)
