"""The model zoo: the list of every model's spec and a lookup by name.

| kind | seed | what it predicts | trained by |
|---|---|---|---|
| hybrid | v2 | class probabilities (or a return with ``--label regression``); attention per day | Lightning |
| lstm | 002 | class probabilities | Lightning |
| dual_tower | 002 | class probabilities | Lightning |
| lstm_transformer | 003 | forward return + calibrated confidence | Lightning (Gaussian NLL) |
| mtl_lstm | 004 | class probabilities and forward return | Lightning (focal + Huber, 20 : 50) |
| rf, gbm | 004 | class probabilities | scikit-learn (skops file, no pickle) |

Every torch model has ``outputs(x) -> dict`` with some of: ``logits`` (batch, classes), ``ret`` (batch,),
``log_var`` (batch,), ``attention`` (batch, days). What a model is (config, network, presets, search space, task per
label kind, capabilities) is its file's ``SPEC`` (``stocktrend.models.spec.ModelSpec``). Adding a model: one new file
with its config, network and ``SPEC``, and one line in ``SPECS`` below (docs/models.md, "Add a model"); a model kept outside
this package joins through ``STOCKTREND_MODELS`` (``stocktrend.models.plugins``).
"""

from __future__ import annotations

from stocktrend.models import DEFAULT_KIND  # noqa: F401 (the zoo's name for it)
from stocktrend.models import dual_tower, gbm, hybrid, lstm, lstm_transformer, mtl_lstm, plugins, rf
from stocktrend.models.spec import ModelSpec

SPECS: tuple[ModelSpec, ...] = (
    hybrid.SPEC,
    lstm.SPEC,
    dual_tower.SPEC,
    lstm_transformer.SPEC,
    mtl_lstm.SPEC,
    rf.SPEC,
    gbm.SPEC,
)
_BY_KIND: dict[str, ModelSpec] = {s.kind: s for s in (*SPECS, *plugins.load())}
KINDS: tuple[str, ...] = tuple(_BY_KIND)


def get(kind: str | ModelSpec) -> ModelSpec:
    """The spec of a model name (a spec is returned as it is); an unknown name lists the zoo."""
    if isinstance(kind, ModelSpec):
        return kind
    try:
        return _BY_KIND[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {kind!r}; available: {', '.join(KINDS)}") from None


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec at run time (this process only; Ray workers learn of it through ``STOCKTREND_MODELS``)."""
    global KINDS
    if spec.kind in _BY_KIND and _BY_KIND[spec.kind] is not spec:
        raise ValueError(f"model {spec.kind!r} is already in the zoo")
    _BY_KIND[spec.kind] = spec
    KINDS = tuple(_BY_KIND)
    return spec


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
