"""Ray Serve deployment with a FastAPI ingress: the registered model as an autoscaling, hot-swappable HTTP endpoint.

- The model comes from the registry by ``user_config["model"]`` (``NAME@ALIAS`` or ``NAME@VERSION``, or a checkpoint
  path). ``reconfigure`` loads it; with an alias, a background task polls the registry every ``poll_interval_s`` and
  swaps in a newly promoted version: the new model is loaded first and replaces the old one in one assignment, so no
  request fails during the swap. ``check_health`` fails a replica that has no loaded model, and Serve replaces it.
- ``/predict`` requests are merged by ``@serve.batch`` (max batch size and wait from ``user_config``).
- Bad input is a 4xx naming the problem (shape, feature count, NaN/inf, empty, too many items, body too large, too
  little history, unsorted/duplicate dates, bad prices, a version that is not served); never a 500.
- ``STOCKTREND_API_TOKEN`` set in the replica's environment turns on bearer-token auth (401 without it).
Build with ``app_builder(args)`` for ``serve run stocktrend.serve.app:app_builder`` and ``serve deploy
serve_config.yaml``; ``serve build stocktrend.serve.app:app`` uses the module-level ``app`` (default args).
``/predict`` also takes a binary .npy body (``Content-Type: application/x-npy``), read without pickles.
"""


import asyncio
import io
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve

from stocktrend.serve.backends import BACKENDS, ServedModel
from stocktrend.serve.config import BUILDER_ARGS, DEFAULT_USER_CONFIG
from stocktrend.serve.http import (NPY_TYPES, PREDICT_BODY, BodyLimit, ClientError, check_token, read_body,
                                   validation_message)
from stocktrend.serve.metrics import ServeMetrics
from stocktrend.serve.schemas import ModelInfo, PredictRequest, PredictResponse, TickerRequest, TickerResponse

log = logging.getLogger("stocktrend.serve")

api = FastAPI(title="stocktrend", description="Stock-trend predictions from the registered hybrid model. "
              "Not financial advice.", version="1")


api.add_middleware(BodyLimit)


def _authorized(request: Request) -> None:
    """As a route dependency: the token is checked before FastAPI validates the body (401, not 422 details)."""
    check_token(request)


@api.exception_handler(ClientError)
async def _client_error(request: Request, exc: ClientError):
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


@serve.deployment(
    max_ongoing_requests=32, max_queued_requests=64, health_check_period_s=5, health_check_timeout_s=10,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8,
                        "upscale_delay_s": 10, "downscale_delay_s": 60},
    user_config=DEFAULT_USER_CONFIG)
@serve.ingress(api)
class StockTrendService:
    def __init__(self):
        self.predictor = None
        self.info: dict[str, Any] = {}
        self.error: str | None = "no model loaded yet"
        self.cfg = dict(DEFAULT_USER_CONFIG)
        self.metrics = ServeMetrics()
        self._poll_task: asyncio.Task | None = None
        self._metrics_task: asyncio.Task | None = None
        self._inflight = 0  # /predict requests in the handler right now

    # -- model loading and hot swap --------------------------------------------------------------------------------
    def _load(self, spec: str) -> None:
        from stocktrend.platform.registry.checkpoint import Predictor
        from stocktrend.platform.training.jobs import resolve_model
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
        self.predictor, self.info, self.error = predictor, new_info, None
        self.metrics.model(new_info["name"], new_info["version"], predictor.backend)
        log.info("serving %s version %s", new_info["name"], new_info["version"])

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = {**DEFAULT_USER_CONFIG, **(user_config or {})}
        if cfg["backend"] not in BACKENDS:
            self.error = f"unknown backend {cfg['backend']!r}; choose one of {', '.join(BACKENDS)}"
            log.error(self.error)
            cfg["backend"] = self.cfg["backend"]
        self.cfg = cfg
        self._batched.set_max_batch_size(int(cfg["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(cfg["batch_wait_timeout_s"]))
        try:
            await asyncio.to_thread(self._load, cfg["model"])
        except Exception as exc:  # keep serving the previous model if there is one; health reports the problem
            self.error = f"cannot load model {cfg['model']!r}: {exc}"
            log.error(self.error)
        if self._poll_task is None and float(cfg["poll_interval_s"]) > 0:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll())
        if self._metrics_task is None:
            self._metrics_task = asyncio.get_running_loop().create_task(self.metrics.run())

    async def _poll(self) -> None:
        from stocktrend.platform.registry import mlflow_registry as registry
        while True:
            await asyncio.sleep(float(self.cfg["poll_interval_s"]))
            spec = self.cfg["model"]
            name, _, ref = spec.partition("@")
            if not ref or ref.isdigit():
                continue  # pinned version or file: nothing to follow
            try:
                current = await asyncio.to_thread(registry.get_version, name, ref)
                if current["version"] != self.info.get("version"):
                    await asyncio.to_thread(self._load, spec)
            except Exception as exc:  # a registry hiccup must not kill the replica; the old model keeps serving
                log.warning("alias poll failed: %s", exc)

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

    # -- batching ----------------------------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple[Any, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        # Requests are grouped by the predictor that validated them, so a hot swap mid-batch cannot mix models.
        out: list[Any] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (pred, _) in enumerate(items):
            groups.setdefault(id(pred), []).append(i)
        for idx in groups.values():
            pred = items[idx[0]][0]
            x = np.concatenate([items[i][1] for i in idx])
            probs, att = await self._run_model(pred, x)
            start = 0
            for i in idx:
                n = len(items[i][1])
                out[i] = (probs[start:start + n], att[start:start + n])
                start += n
        return out

    async def _run_model(self, pred, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.batch(len(x))
        if len(x) <= pred.inline_windows:  # measured under ~1 ms: cheaper than a hop to a worker thread, and short
            return pred.predict_proba(x, 512, True)  # enough not to stall the event loop
        return await asyncio.to_thread(pred.predict_proba, x, 512, True)

    async def _infer(self, pred, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Batching only helps under concurrency: a request alone on the replica runs at once, with no batch wait. The
        # count is of /predict requests anywhere in the handler (reading their body included): a small model call
        # runs inline on the loop, so requests that only reached _infer would never overlap and never batch.
        if int(self.cfg["max_batch_size"]) <= 1 or self._inflight <= 1:
            return await self._run_model(pred, x)
        return await self._batched((pred, x))

    def _items(self, pred, probs: np.ndarray, att: np.ndarray | None, attention: bool) -> list[dict[str, Any]]:
        d = pred.describe(probs, att if attention else None)
        self.metrics.predictions(d.labels, d.confidence, d.predicted_return)
        items = []
        for i in range(len(probs)):
            items.append({"probabilities": dict(zip(pred.class_names, d.probabilities[i])), "label": d.labels[i],
                          "signal": d.signals[i], "confidence": d.confidence[i],
                          "predicted_return": d.predicted_return[i] if d.predicted_return is not None else None,
                          "attention": d.attention[i] if d.attention is not None else None})
        return items

    async def _guarded(self, route: str, fn):
        """Client errors pass through as 4xx; anything unexpected is logged and answered as a 500 with its type (Ray
        Serve counts requests, errors and latency by route and status itself)."""
        try:
            return await fn()
        except (ClientError, HTTPException):
            raise
        except Exception as exc:
            log.exception("unexpected error on %s", route)
            raise ClientError(500, f"internal error: {type(exc).__name__}") from exc

    # -- routes ----------------------------------------------------------------------------------------------------
    def _check_count(self, n: int) -> None:
        if n == 0:
            raise ClientError(422, "windows: at least 1 window is needed")
        if n > int(self.cfg["max_items"]):
            raise ClientError(413, f"{n} windows exceed the limit of {self.cfg['max_items']} per request")

    def _parse_predict(self, body: bytes, request: Request) -> tuple[np.ndarray, bool, int | None]:
        """JSON (``PredictRequest``) or a binary .npy body -> (windows, attention, version). Parsed straight from the
        bytes (pydantic's JSON parser, or np.load without pickles): no intermediate Python objects for FastAPI."""
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype in NPY_TYPES:
            try:
                x = np.load(io.BytesIO(body), allow_pickle=False)
            except Exception as exc:  # not a .npy file, or an object array (pickles are refused)
                raise ClientError(422, f"body is not a readable .npy array: {exc}") from None
            if x.dtype.kind not in "fiu":
                raise ClientError(422, f"the .npy array must be numeric, got dtype {x.dtype}")
            q = request.query_params
            try:
                version = int(q["version"]) if "version" in q else None
            except ValueError:
                raise ClientError(422, f"query parameter version must be an integer, got {q['version']!r}") from None
            attention = q.get("attention", "false").lower() in ("1", "true", "yes")
            x = x.astype(np.float32, copy=False)
        else:
            try:
                req = PredictRequest.model_validate_json(body)
            except ValidationError as exc:
                raise ClientError(422, validation_message(exc)) from None
            version, attention = req.version, req.attention
            self._check_count(len(req.windows))  # before building an array from an oversized request
            try:
                x = np.asarray(req.windows, dtype=np.float32)
            except ValueError:
                raise ClientError(422, "windows must be a rectangular [batch][sequence_length][n_features] "
                                       "array (rows of different lengths)") from None
        self._check_count(len(x) if x.ndim else 0)
        return x, attention, version

    @api.post("/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY)
    async def predict(self, request: Request) -> Response:
        """Windows already scaled and selected as ``GET /model`` describes, as JSON ``{"windows": [...]}`` or as a
        binary .npy array (``Content-Type: application/x-npy``)."""
        async def run():
            check_token(request)
            self._inflight += 1
            try:
                body = await read_body(request)
                return await self._predict_body(body, request)
            finally:
                self._inflight -= 1
        return await self._guarded("/predict", run)

    async def _predict_body(self, body: bytes, request: Request) -> Response:
        x, attention, version = self._parse_predict(body, request)
        pred = self._require(version)
        if x.ndim != 3 or x.shape[1:] != (pred.seq_len, pred.n_features):
            raise ClientError(422, f"windows must have shape [batch][{pred.seq_len}][{pred.n_features}] for this "
                                   f"model, got {list(x.shape)}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0].tolist()
            raise ClientError(422, f"windows contain NaN or infinite values (first at index {bad})")
        probs, att = await self._infer(pred, x)
        return JSONResponse({"model": self.info["name"], "version": self.info["version"],
                             "predictions": self._items(pred, probs, att, attention)})

    def _ticker_inputs(self, pred, req: TickerRequest):
        """(prices, market, indicators) for /predict/ticker: the request's own bars, or the ticker's bars from the
        universe the model was trained on (loaded once per model version)."""
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

    @api.post("/predict/ticker", response_model=TickerResponse, dependencies=[Depends(_authorized)])
    async def predict_ticker(self, req: TickerRequest, request: Request) -> TickerResponse:
        """Raw daily bars (``prices``) or just a ``ticker`` of the model's universe (optionally ``as_of`` a date) ->
        the training feature path -> the prediction for the next ``horizon`` days after the last bar."""
        from stocktrend.platform.data.sources import DataValidationError
        from stocktrend.platform.registry.checkpoint import UnknownTickerError

        async def run():
            check_token(request)
            pred = self._require(req.version)
            try:
                prices, market, indicators = await asyncio.to_thread(self._ticker_inputs, pred, req)
                out = await asyncio.to_thread(pred.predict_prices, prices, market, indicators, True, req.ticker)
            except UnknownTickerError as exc:
                raise ClientError(404, str(exc)) from None
            except DataValidationError as exc:
                raise ClientError(422, str(exc)) from None
            probs = pred.output_matrix(out)
            att = np.asarray(out.attention) if out.attention is not None else None
            item = self._items(pred, probs, att, req.attention)[0]
            return TickerResponse(**item, model=self.info["name"], version=self.info["version"],
                                  date=str(prices.index[-1].date()), ticker=req.ticker)
        return await self._guarded("/predict/ticker", run)

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        if self.predictor is None:
            return JSONResponse({"status": "unhealthy", "detail": self.error}, status_code=503)
        return JSONResponse({"status": "ok", "model": self.info["name"], "version": self.info["version"]})

    @api.get("/model", response_model=ModelInfo)
    async def model(self, request: Request) -> ModelInfo:
        check_token(request)
        pred = self._require(None)
        ck = pred.ckpt
        return ModelInfo(name=self.info["name"], version=self.info["version"], alias=self.info["alias"],
                         model_kind=pred.model_kind, outputs=pred.output_names, label_kind=ck["label_kind"], class_names=pred.class_names, sequence_length=pred.seq_len,
                         n_features=pred.n_features, horizon=int(ck["horizon"]), data_hash=ck["data_hash"],
                         metrics={k: float(v) for k, v in ck["metrics"].items() if isinstance(v, (int, float))},
                         features=pred.transforms.input_names, **pred.describe_backend(),
                         market=list(pred.data_config.market) if pred.data_config.market is not None else None)


def app_builder(args: dict[str, Any] | None = None):
    """``serve run stocktrend.serve.app:app_builder model=stocktrend@production`` and serve_config.yaml use this.

    args: model, backend, poll_interval_s, max_batch_size, batch_wait_timeout_s, max_items, min_replicas,
    max_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s, max_ongoing_requests,
    max_queued_requests, num_cpus (per replica, default 1; also its torch / ONNX Runtime threads), env_vars (e.g.
    MLFLOW_TRACKING_URI, STOCKTREND_HOME for the replicas)."""
    args = dict(args or {})
    unknown = set(args) - BUILDER_ARGS
    if unknown:
        raise ValueError(f"unknown app_builder arg(s): {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(BUILDER_ARGS))}")
    user_config = {k: type(DEFAULT_USER_CONFIG[k])(args[k]) for k in DEFAULT_USER_CONFIG if k in args}
    autoscaling = {"min_replicas": int(args.get("min_replicas", 1)), "max_replicas": int(args.get("max_replicas", 2)),
                   "target_ongoing_requests": float(args.get("target_ongoing_requests", 8)),
                   "upscale_delay_s": float(args.get("upscale_delay_s", 10)),
                   "downscale_delay_s": float(args.get("downscale_delay_s", 60))}
    return StockTrendService.options(
        user_config={**DEFAULT_USER_CONFIG, **user_config}, autoscaling_config=autoscaling,
        max_ongoing_requests=int(args.get("max_ongoing_requests", 32)),
        max_queued_requests=int(args.get("max_queued_requests", 64)),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 1)),
                           **({"runtime_env": {"env_vars": {k: str(v) for k, v in args["env_vars"].items()}}}
                              if args.get("env_vars") else {})}).bind()


# The application with the default args: `serve build stocktrend.serve.app:app -o serve.yaml` writes a config from it
# (serve build wants an Application, not a builder); `serve run stocktrend.serve.app:app` also works.
app = app_builder()
