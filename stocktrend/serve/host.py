"""What every model-serving replica does, champion or challenger: load a model by registry reference on an inference
backend, follow its alias (hot swap: the new model is loaded first and replaces the old one in one assignment), report
health, turn outputs into items, and feed the metrics and the drift window.

The drift window is a bounded deque of what the replica served (the last day of every window, in model-input space,
with the predicted label and confidence); a background task turns it into gauges every few seconds
(``stocktrend.serve.metrics``), so the request path only appends.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import Any

import numpy as np

from stocktrend.serve.http import ClientError
from stocktrend.serve.metrics import MIN_DRIFT_ROWS, ServeMetrics

log = logging.getLogger("stocktrend.serve")


class DriftWindow:
    """The last ``size`` served rows (last day of each window), labels and confidences."""

    def __init__(self, size: int = 2000):
        self.rows: collections.deque = collections.deque(maxlen=size)
        self.labels: collections.deque = collections.deque(maxlen=size)
        self.confidence: collections.deque = collections.deque(maxlen=size)

    def add(self, last_rows: np.ndarray, labels: list[str], confidence: list[float]) -> None:
        self.rows.extend(np.asarray(last_rows, dtype=np.float32))
        self.labels.extend(labels)
        self.confidence.extend(confidence)

    def snapshot(self) -> tuple[np.ndarray, list[str], list[float]]:
        rows = np.stack(list(self.rows)) if self.rows else np.zeros((0, 0), np.float32)
        return rows, list(self.labels), list(self.confidence)


class ModelHost:
    """The model part of a serving replica (mixed into the deployment classes)."""

    role = "champion"

    def _init_host(self, defaults: dict[str, Any]) -> None:
        self.predictor = None
        self.info: dict[str, Any] = {}
        self.error: str | None = "no model loaded yet"
        self.cfg = dict(defaults)
        self.metrics = ServeMetrics(role=self.role)
        self.drift = DriftWindow(int(defaults.get("drift_window", 2000)))
        self._poll_task: asyncio.Task | None = None
        self._metrics_task: asyncio.Task | None = None

    def _load(self, spec: str) -> None:
        from stocktrend.platform.registry.checkpoint import Predictor
        from stocktrend.platform.training.jobs import resolve_model
        from stocktrend.platform.registry.inference import ServedModel
        import ray
        import torch
        path, info = resolve_model(spec)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0) if ray.is_initialized() else 1.0
        threads = max(1, int(cpus))  # whole CPUs of this replica = its torch and ONNX Runtime threads
        torch.set_num_threads(threads)
        predictor = ServedModel(Predictor.load(path), str(self.cfg["backend"]), threads=threads)
        name, _, ref = spec.partition("@")
        new_info = {"name": info and name or os.path.basename(spec), "version": info["version"] if info else None,
                    "alias": ref if ref and not ref.isdigit() else None}
        # One assignment each: a request sees either the old model or the new one, never a mix.
        self.predictor, self.info, self.error, self._inputs = predictor, new_info, None, None
        self.drift = DriftWindow(int(self.cfg.get("drift_window", 2000)))  # a new model, a new window
        self.metrics.model(new_info["name"], new_info["version"], predictor.backend,
                           reference=predictor.ckpt.get("reference"), names=predictor.transforms.input_names)
        self.metrics.min_drift_rows = min(MIN_DRIFT_ROWS, int(self.cfg.get("drift_window", 2000)))
        log.info("serving %s version %s (%s)", new_info["name"], new_info["version"], self.role)

    async def _load_and_follow(self, spec: str) -> None:
        try:
            await asyncio.to_thread(self._load, spec)
        except Exception as exc:  # keep serving the previous model if there is one; health reports the problem
            self.error = f"cannot load model {spec!r}: {exc}"
            log.error(self.error)
        if self._poll_task is None and float(self.cfg["poll_interval_s"]) > 0:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll())
        if self._metrics_task is None:
            self._metrics_task = asyncio.get_running_loop().create_task(self.metrics.run(self._drift_snapshot))

    def _drift_snapshot(self):
        return self.drift.snapshot()

    async def _poll(self) -> None:
        from stocktrend.platform.registry import mlflow_registry as registry
        while True:
            await asyncio.sleep(float(self.cfg["poll_interval_s"]))
            spec = self._model_spec()
            name, _, ref = spec.partition("@")
            if not ref or ref.isdigit():
                continue  # pinned version or file: nothing to follow
            try:
                current = await asyncio.to_thread(registry.get_version, name, ref)
                if current["version"] != self.info.get("version"):
                    await asyncio.to_thread(self._load, spec)
            except Exception as exc:  # a registry hiccup must not kill the replica; the old model keeps serving
                log.warning("alias poll failed: %s", exc)

    def _model_spec(self) -> str:
        return self.cfg["model"]

    def check_health(self) -> None:
        if self.predictor is None:
            raise RuntimeError(self.error or "no model loaded")

    def _require(self, version: int | None):
        if self.predictor is None:
            raise ClientError(503, self.error or "no model loaded")
        if version is not None and version != self.info.get("version"):
            raise ClientError(404, f"model version {version} is not served; this endpoint serves "
                                   f"{self.info.get('name')} version {self.info.get('version')}")
        return self.predictor

    def _items(self, pred, probs: np.ndarray, att: np.ndarray | None, attention: bool,
               last_rows: np.ndarray | None = None) -> list[dict[str, Any]]:
        d = pred.describe(probs, att if attention else None)
        self.metrics.predictions(d.labels, d.confidence, d.predicted_return)
        if last_rows is not None:
            self.drift.add(last_rows, d.labels, d.confidence)
        items = []
        for i in range(len(probs)):
            items.append({"probabilities": dict(zip(pred.class_names, d.probabilities[i])), "label": d.labels[i],
                          "signal": d.signals[i], "confidence": d.confidence[i],
                          "predicted_return": d.predicted_return[i] if d.predicted_return is not None else None,
                          "attention": d.attention[i] if d.attention is not None else None})
        return items

    def describe_inputs(self) -> dict[str, Any]:
        """What another replica needs to send this model windows: input names, scaler, window, label (cached per
        loaded model)."""
        pred = self._require(None)
        cached = getattr(self, "_inputs", None)
        if cached is not None and cached["version"] == self.info.get("version"):
            return cached
        t = pred.transforms
        self._inputs = {"names": list(t.input_names), "mean": t.mean.tolist(), "scale": t.scale.tolist(),
                "n_selected": len(t.selected), "seq_len": pred.seq_len, "label_kind": pred.kind.value,
                "class_names": list(pred.class_names), "horizon": int(pred.ckpt["horizon"]), "task": pred.task.value,
                "tickers": sorted(pred.ckpt["tickers"]), "version": self.info.get("version"),
                "name": self.info.get("name")}
        return self._inputs

    # -- /predict/ticker: the training feature path, shared by champion and challenger ---------------------------------
    def _ticker_inputs(self, pred, req):
        """(prices, market, indicators) for /predict/ticker: the request's own bars, or the ticker's bars from the
        universe the model was trained on (loaded once per model version)."""
        import pandas as pd

        from stocktrend.platform.data.sources import validate_prices
        limit = int(self.cfg["max_history_days"])
        if req.prices is None:
            if req.ticker is None:
                raise ClientError(422, "send 'prices' (raw daily bars, oldest first) or 'ticker' (a name from the "
                                       "model's universe, optionally with 'as_of')")
            if req.market is not None:
                raise ClientError(422, "'market' goes with 'prices'; by ticker name the universe's own market series "
                                       "are used")
            return pred.bars_for(req.ticker, req.as_of, limit)
        if req.as_of is not None:
            raise ClientError(422, "'as_of' applies to predictions by ticker name; with 'prices', send the bars up to "
                                   "the day you want")
        if len(req.prices) > limit:
            raise ClientError(413, f"{len(req.prices)} bars exceed the limit of {limit}")
        prices = validate_prices(pd.DataFrame([b.model_dump(exclude_none=True) for b in req.prices]), "prices",
                                 required=("close",), repair=False)
        if req.market is not None:
            market = {name: validate_prices(pd.DataFrame([b.model_dump() for b in bars]), f"market[{name}]",
                                            required=("close",), repair=False) for name, bars in req.market.items()}
            return prices, market, {}
        u = pred.source_universe()
        return prices, u.market, u.indicators

    def _ticker_predict(self, pred, req) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
        """Bars -> features -> the last window -> (outputs, attention, the window's last row, its day)."""
        from stocktrend.platform.data.sources import DataValidationError
        from stocktrend.platform.registry.checkpoint import UnknownTickerError
        try:
            prices, market, indicators = self._ticker_inputs(pred, req)
            x = pred.features_from_prices(prices, market, indicators, req.ticker)
        except UnknownTickerError as exc:
            raise ClientError(404, str(exc)) from None
        except DataValidationError as exc:
            raise ClientError(422, str(exc)) from None
        window = x[None, -pred.seq_len:]
        probs, att = pred.predict_proba(window, 512, True)
        return probs, att, window[:, -1], str(prices.index[-1].date())

    async def ticker_answer(self, req, version: int | None = None) -> dict[str, Any]:
        pred = self._require(version)
        probs, att, last, day = await asyncio.to_thread(self._ticker_predict, pred, req)
        item = self._items(pred, probs, att, req.attention, last_rows=last)[0]
        return {**item, "model": self.info["name"], "version": self.info["version"], "role": self.role, "date": day,
                "ticker": req.ticker}
