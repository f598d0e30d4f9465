"""Models kept outside this package: ``STOCKTREND_MODELS=my_models.tcn:SPEC,other.mod:SPEC`` adds each named
``ModelSpec`` to the zoo, in every process that imports it (the CLI, and the Ray workers of trials, Train runs and
Serve replicas, which inherit the variable from the local instance a command starts, or from ``runtime_env`` on a
cluster). The module must be importable there (installed, or on ``PYTHONPATH``).

This is the only place a model is found from a string; inside the package the zoo lists its specs directly.
"""

from __future__ import annotations

import importlib
import os

ENV = "STOCKTREND_MODELS"


def load() -> list:
    from stocktrend.models.spec import ModelSpec
    out = []
    for entry in (e.strip() for e in os.environ.get(ENV, "").split(",")):
        if not entry:
            continue
        module, _, attr = entry.partition(":")
        try:
            spec = getattr(importlib.import_module(module), attr or "SPEC")
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{ENV}: cannot load {entry!r} ({type(exc).__name__}: {exc}); use module:ATTRIBUTE of "
                             f"an importable module") from None
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"{ENV}: {entry!r} is a {type(spec).__name__}, not a ModelSpec")
        out.append(spec)
    return out
