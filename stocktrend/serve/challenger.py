"""The challenger's deployment: a model replica without HTTP of its own, reached by the champion's ingress through a
deployment handle (``stocktrend.serve.app``). It loads its model by registry reference and follows its alias like the
champion (hot swap), exports the same metrics and drift gauges tagged ``role=challenger``, and answers windows scaled
for the champion (mapped to its own scaler, ``routing.adapt_windows``) or ticker requests (its own feature path)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from stocktrend.serve.host import ModelHost
from stocktrend.serve.routing import adapt_windows

CHALLENGER_DEFAULTS: dict[str, Any] = {"model": "stocktrend@challenger", "poll_interval_s": 5.0, "backend": "onnx",
                                       "max_history_days": 5000, "drift_window": 2000}


@serve.deployment(max_ongoing_requests=32, max_queued_requests=64, health_check_period_s=5,
                  health_check_timeout_s=10, user_config=CHALLENGER_DEFAULTS)
class ChallengerModel(ModelHost):
    role = "challenger"

    def __init__(self):
        self._init_host(CHALLENGER_DEFAULTS)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.cfg = {**CHALLENGER_DEFAULTS, **(user_config or {})}
        await self._load_and_follow(self.cfg["model"])

    def check_health(self) -> None:
        """Healthy without a model: a challenger that cannot load must not fail the application (the champion's
        ingress counts its failures and routes nothing to it); the load error is logged and in ``inputs``."""

    async def inputs(self) -> dict[str, Any]:
        return self.describe_inputs()

    async def predict_windows(self, x: np.ndarray, attention: bool, source: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        pred = self._require(None)
        target = self.describe_inputs()
        x = adapt_windows(x, source, target)
        probs, att = await asyncio.to_thread(pred.predict_proba, x, 512, attention)
        items = self._items(pred, probs, att, attention, last_rows=x[:, -1])
        return {"model": self.info["name"], "version": self.info["version"], "role": self.role, "predictions": items}

    async def predict_ticker(self, req: dict[str, Any]) -> dict[str, Any]:
        from stocktrend.serve.schemas import TickerRequest
        t0 = time.perf_counter()
        out = await self.ticker_answer(TickerRequest.model_validate(req))
        return out
