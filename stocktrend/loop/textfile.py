"""Realised performance as Prometheus series: ``stocktrend monitor`` (or the evening job after ``score``) writes
``$STOCKTREND_HOME/monitoring/textfile/realised-<model>.prom`` in Prometheus' text format, the way node_exporter's
textfile collector reads batch-job results; ``stocktrend monitoring up`` serves that folder to its Prometheus (no third
daemon), and a team's node_exporter can point ``--collector.textfile.directory`` at it instead.

Series (labels ``model``, ``version``, ``who``: model | always_up | momentum):
``stocktrend_realised_hit_rate``, ``stocktrend_realised_rank_ic`` (panels), ``stocktrend_realised_days_known``,
``stocktrend_realised_timestamp_seconds`` (when the file was written)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

HELP = {
    "stocktrend_realised_hit_rate": "share of predictions whose direction was right, outcomes known so far "
                                    "(who: the model or a baseline on the same ticker-days)",
    "stocktrend_realised_rank_ic": "mean daily cross-sectional rank IC over the days with known outcomes",
    "stocktrend_realised_days_known": "trading days whose outcome is known behind the realised series",
    "stocktrend_realised_timestamp_seconds": "when stocktrend monitor wrote these series",
}


def folder(home: Path) -> Path:
    return Path(home) / "monitoring" / "textfile"


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(model: str, version: Any, realised: dict[str, Any], now: float | None = None) -> str:
    base = f'model="{_label(model)}",version="{_label(version)}"'
    rows: dict[str, list[str]] = {k: [] for k in HELP}
    for who in ("model", "always_up", "momentum"):
        key = "hit_rate" if who == "model" else f"{who}_hit_rate"
        if isinstance(realised.get(key), float) and math.isfinite(realised[key]):
            rows["stocktrend_realised_hit_rate"].append(f'{{{base},who="{who}"}} {realised[key]:.6g}')
    for who in ("model", "momentum"):
        v = realised.get(f"{who}_rank_ic")
        if isinstance(v, float) and math.isfinite(v):
            rows["stocktrend_realised_rank_ic"].append(f'{{{base},who="{who}"}} {v:.6g}')
    rows["stocktrend_realised_days_known"].append(f"{{{base}}} {int(realised.get('days_known', 0))}")
    rows["stocktrend_realised_timestamp_seconds"].append(f"{{{base}}} {now or time.time():.3f}")
    out = []
    for name, lines in rows.items():
        if lines:
            out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge", *(name + ln for ln in lines)]
    return "\n".join(out) + "\n"


def write(home: Path, model: str, version: Any, realised: dict[str, Any]) -> Path:
    """Atomically (write + rename, as the textfile collector requires) replace this model's file."""
    d = folder(home)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"realised-{model}.prom"
    tmp = path.with_suffix(f".prom.{os.getpid()}.tmp")
    tmp.write_text(render(model, version, realised))
    tmp.replace(path)
    return path
