"""Ray Serve deployment with a FastAPI ingress: the registered model as an autoscaling, hot-swappable HTTP endpoint.

- The model comes from the registry by ``user_config["model"]`` (``NAME@ALIAS`` or ``NAME@VERSION``, or a checkpoint
  path). ``reconfigure`` loads it; with an alias, a background task polls the registry every ``poll_interval_s`` and
  swaps in a newly promoted version: the new model is loaded first and replaces the old one in one assignment, so no
  request fails during the swap. ``check_health`` fails a replica that has no loaded model, and Serve replaces it.
- ``/predict`` requests are merged by ``@serve.batch`` (max batch size and wait from ``user_config``; two batches
  at a time).
- Bad input is a 4xx naming the problem (shape, feature count, NaN/inf, empty, too many items, body too large, too
  little history, unsorted/duplicate dates, bad prices, a version that is not served); never a 500.
- ``STOCKTREND_API_TOKEN`` set in the replica's environment turns on bearer-token auth (401 without it).
- A challenger (``user_config["challenger"]``, a second deployment reached through a handle,
  ``stocktrend.serve.challenger``) answers a sticky share of requests (``challenger_split``) or a shadow copy of all of
  them (``shadow``), set at run time through ``user_config`` (``stocktrend.serve.routing``). Every response names the
  version and role that answered. A failing challenger never takes the champion down: its errors are counted, the
  client gets the champion's answer, and after 3 failures in a row its share falls to 0 (logged).
Build with ``app_builder(args)`` for ``serve run stocktrend.serve.app:app_builder`` and ``serve deploy
serve_config.yaml``; ``serve build stocktrend.serve.app:app`` uses the module-level ``app`` (default args).
``/predict`` also takes a binary .npy body (``Content-Type: application/x-npy``), read without pickles.
"""


import asyncio
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve

from stocktrend.platform.registry.inference import BACKENDS
from stocktrend.serve.config import BUILDER_ARGS, DEFAULT_USER_CONFIG
from stocktrend.serve.host import ModelHost
from stocktrend.serve.http import (NPY_TYPES, PREDICT_BODY, BodyLimit, ClientError, check_token, read_body,
                                   validation_message)
from stocktrend.serve.routing import KEY_HEADER, incompatibility, routes_to_challenger
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
class StockTrendService(ModelHost):
    role = "champion"

    def __init__(self, challenger=None):
        self._init_host(DEFAULT_USER_CONFIG)
        self._inflight = 0  # /predict requests in the handler right now
        self._challenger = challenger  # a DeploymentHandle of ChallengerModel, or None
        self._challenger_inputs: dict[str, Any] | None = None
        self._challenger_failures = 0
        self._split = 0.0  # effective share (0 after repeated failures or when shadowing)
        self._shadow_tasks: set[asyncio.Task] = set()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = {**DEFAULT_USER_CONFIG, **(user_config or {})}
        if cfg["backend"] not in BACKENDS:
            self.error = f"unknown backend {cfg['backend']!r}; choose one of {', '.join(BACKENDS)}"
            log.error(self.error)
            cfg["backend"] = self.cfg["backend"]
        split = float(cfg["challenger_split"])
        if not 0 <= split <= 1:
            log.error("challenger_split %s is outside [0, 1]: keeping %s", split, self.cfg["challenger_split"])
            cfg["challenger_split"] = split = float(self.cfg["challenger_split"])
        model_changed = (cfg["model"], cfg["backend"]) != (self.cfg.get("model"), self.cfg.get("backend")) or \
            self.predictor is None
        self.cfg = cfg
        # Routing changes apply to the next request: no replica restart, no request lost.
        self._split = 0.0 if (self._challenger is None or cfg["shadow"]) else split
        self._challenger_failures = 0
        self.metrics.challenger_share = self._split if self._challenger is not None else None
        log.info("routing: challenger share %.3f, shadow %s", self._split, bool(cfg["shadow"]))
        self._batched.set_max_batch_size(int(cfg["max_batch_size"]))
        self._batched.set_batch_wait_timeout_s(float(cfg["batch_wait_timeout_s"]))
        if model_changed:
            await self._load_and_follow(cfg["model"])

    # -- the challenger ------------------------------------------------------------------------------------------------
    async def _challenger_ready(self) -> bool:
        """The challenger's inputs (fetched once per challenger version), checked against the champion's."""
        if self._challenger_inputs is not None:
            return True
        try:
            inputs = await asyncio.wait_for(self._challenger.inputs.remote(), timeout=10)
        except Exception as exc:
            self._challenger_failed(f"not ready: {type(exc).__name__}: {exc}")
            return False
        why = incompatibility(self.describe_inputs(), inputs, self.cfg["challenger_routes"])
        if why:
            log.error("challenger %s v%s cannot answer the champion's requests (%s): its share is 0",
                      inputs.get("name"), inputs.get("version"), why)
            self._split = 0.0
            self.metrics.challenger_share = 0.0
            return False
        self._challenger_inputs = inputs
        return True

    def _challenger_failed(self, why: str) -> None:
        self._challenger_failures += 1
        self.metrics.error(self._challenger_inputs.get("version") if self._challenger_inputs else "", "challenger")
        if self._challenger_failures >= 3 and self._split > 0:
            log.error("challenger failed %d times in a row (%s): its share falls to 0 until the next "
                      "reconfigure", self._challenger_failures, why)
            self._split = 0.0
            self.metrics.challenger_share = 0.0

    async def _ask_challenger(self, method: str, *args) -> dict[str, Any] | None:
        """The challenger's answer, or None (counted; the caller answers with the champion)."""
        if not await self._challenger_ready():
            return None
        try:
            out = await asyncio.wait_for(getattr(self._challenger, method).remote(*args),
                                         timeout=float(self.cfg["challenger_timeout_s"]))
        except Exception as exc:  # a broken or slow challenger never costs the client an answer
            self._challenger_failed(f"{type(exc).__name__}: {str(exc)[:200]}")
            return None
        self._challenger_failures = 0
        if out.get("version") != self._challenger_inputs.get("version"):
            self._challenger_inputs = None  # it hot-swapped: fetch its inputs again next time
        return out

    def _shadow_after(self, after: BackgroundTasks | None, method: str, args: tuple,
                      champion_labels: list[str]) -> None:
        """Shadow once the champion's answer is sent (Starlette runs a response's background tasks after its last
        body chunk): the copy's routing and serialisation then never delay the client."""
        if after is None:
            self._shadow(method, args, champion_labels)
            return

        async def start() -> None:  # async: Starlette would run a plain function in a thread, without the loop
            self._shadow(method, args, champion_labels)
        after.add_task(start)

    def _shadow(self, method: str, args: tuple, champion_labels: list[str]) -> None:
        """A copy of the request for the challenger, off the request path: a bounded set of tasks; when full the copy
        is dropped (counted), so shadowing never slows the champion."""
        if len(self._shadow_tasks) >= int(self.cfg["shadow_queue"]):
            self.metrics.shadow_dropped()
            return
        champion_version = self.info.get("version")

        async def call():
            out = await self._ask_challenger(method, *args)
            if out is not None:
                labels = [p["label"] for p in out["predictions"]] if "predictions" in out else [out["label"]]
                agreed = float(np.mean([a == b for a, b in zip(labels, champion_labels)])) if labels else 0.0
                self.metrics.shadow(champion_version, out.get("version"), agreed)
        task = asyncio.get_running_loop().create_task(call())
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    # -- batching ----------------------------------------------------------------------------------------------------
    # Two batches at a time: while one batch's model call runs in a worker thread (ONNX Runtime and torch release the
    # GIL), the event loop parses the requests that keep arriving and a second batch can start, instead of every
    # request on the replica waiting on one call. Measured side by side (bench/peers/serving.py, one replica, c=32):
    # 896 -> 995 req/s, and 1,036 with batches of at most 16 (the default max_batch_size; 16 x 2 = the deployment's
    # max_ongoing_requests, as Serve advises). Not settable at run time: Serve fixes it when the class is defined.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0, max_concurrent_batches=2)
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
                out[i] = (probs[start:start + n], att[start:start + n] if att is not None else None)
                start += n
        return out

    async def _run_model(self, pred, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.metrics.batch(len(x))
        if len(x) <= pred.inline_windows:  # measured under ~1 ms: cheaper than a hop to a worker thread, and short
            return pred.predict_proba(x, 512, True)  # enough not to stall the event loop
        return await asyncio.to_thread(pred.predict_proba, x, 512, True)

    async def _infer(self, pred, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Batching only helps under concurrency: a request alone on the replica runs at once, with no batch wait. The
        # count is of /predict requests anywhere in the handler (reading their body included). Requests received in
        # the same turn of the event loop would otherwise never overlap (parsing and a small model call run inline,
        # without an await), so one yield lets them reach this point first: they then share one model call, whose
        # cost per window falls with the batch (small preset, ONNX: 0.37 ms for 1 window, 0.24 ms/window for 32:
        # bench/serve_load.py).
        if int(self.cfg["max_batch_size"]) <= 1:
            return await self._run_model(pred, x)
        if self._inflight <= 1:
            await asyncio.sleep(0)
            if self._inflight <= 1:
                return await self._run_model(pred, x)
        return await self._batched((pred, x))

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
    async def predict(self, request: Request, after: BackgroundTasks) -> Response:
        """Windows already scaled and selected as ``GET /model`` describes, as JSON ``{"windows": [...]}`` or as a
        binary .npy array (``Content-Type: application/x-npy``)."""
        async def run():
            check_token(request)
            self._inflight += 1
            try:
                body = await read_body(request)
                return await self._predict_body(body, request, after)
            finally:
                self._inflight -= 1
        return await self._guarded("/predict", run)

    async def _predict_body(self, body: bytes, request: Request, after: BackgroundTasks | None = None) -> Response:
        t0 = time.perf_counter()
        x, attention, version = self._parse_predict(body, request)
        pred = self._require(version)
        if x.ndim != 3 or x.shape[1:] != (pred.seq_len, pred.n_features):
            raise ClientError(422, f"windows must have shape [batch][{pred.seq_len}][{pred.n_features}] for this "
                                   f"model, got {list(x.shape)}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0].tolist()
            raise ClientError(422, f"windows contain NaN or infinite values (first at index {bad})")
        key = request.headers.get(KEY_HEADER)
        if version is None and self.cfg["challenger_routes"] == "all" and routes_to_challenger(key, self._split):
            out = await self._ask_challenger("predict_windows", x, attention, self.describe_inputs())
            if out is not None:
                self.metrics.request(out["version"], "challenger", "windows", (time.perf_counter() - t0) * 1e3)
                return JSONResponse(out)
        probs, att = await self._infer(pred, x)
        items = self._items(pred, probs, att, attention, last_rows=x[:, -1])
        self.metrics.request(self.info["version"], self.role, "windows", (time.perf_counter() - t0) * 1e3)
        if self.cfg["shadow"] and self._challenger is not None and self.cfg["challenger_routes"] == "all":
            self._shadow_after(after, "predict_windows", (x, attention, self.describe_inputs()),
                               [i["label"] for i in items])
        return JSONResponse({"model": self.info["name"], "version": self.info["version"], "role": self.role,
                             "predictions": items})

    @api.post("/predict/ticker", response_model=TickerResponse, dependencies=[Depends(_authorized)])
    async def predict_ticker(self, req: TickerRequest, request: Request, after: BackgroundTasks) -> TickerResponse:
        """Raw daily bars (``prices``) or just a ``ticker`` of the model's universe (optionally ``as_of`` a date) ->
        the training feature path -> the prediction for the next ``horizon`` days after the last bar."""
        async def run():
            t0 = time.perf_counter()
            check_token(request)
            self._require(req.version)
            key = req.ticker or request.headers.get(KEY_HEADER)
            if req.version is None and routes_to_challenger(key, self._split):
                out = await self._ask_challenger("predict_ticker", req.model_dump())
                if out is not None:
                    self.metrics.request(out["version"], "challenger", "ticker", (time.perf_counter() - t0) * 1e3)
                    return TickerResponse(**out)
            out = await self.ticker_answer(req, req.version)
            self.metrics.request(self.info["version"], self.role, "ticker", (time.perf_counter() - t0) * 1e3)
            if self.cfg["shadow"] and self._challenger is not None:
                self._shadow_after(after, "predict_ticker", (req.model_dump(),), [out["label"]])
            return TickerResponse(**out)
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
                         model_kind=pred.model_kind, outputs=pred.output_names, label_kind=ck["label_kind"],
                         class_names=pred.class_names, sequence_length=pred.seq_len,
                         n_features=pred.n_features, horizon=int(ck["horizon"]), data_hash=ck["data_hash"],
                         metrics={k: float(v) for k, v in ck["metrics"].items() if isinstance(v, (int, float))},
                         features=pred.transforms.input_names, **pred.describe_backend(),
                         market=list(pred.data_config.market) if pred.data_config.market is not None else None,
                         challenger=(self.cfg.get("challenger") or None), challenger_split=self._split,
                         shadow=bool(self.cfg["shadow"]) and self._challenger is not None)


def _as(default: Any, value: Any) -> Any:
    """A builder arg (a YAML value, or a string from ``serve run ... key=value``) as the default's type."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    return type(default)(value)


def app_builder(args: dict[str, Any] | None = None):
    """``serve run stocktrend.serve.app:app_builder model=stocktrend@production`` and serve_config.yaml use this.

    args: model, backend, poll_interval_s, max_batch_size, batch_wait_timeout_s, max_items, min_replicas,
    max_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s, look_back_period_s (Serve's window
    over which the ongoing requests are averaged, default 30), max_ongoing_requests,
    max_queued_requests, num_cpus (per replica, default 1; also its torch / ONNX Runtime threads), env_vars (e.g.
    MLFLOW_TRACKING_URI, STOCKTREND_HOME for the replicas), challenger (NAME@ALIAS|VERSION: a second deployment),
    challenger_split, shadow, challenger_timeout_s, shadow_queue, challenger_num_cpus, drift_window."""
    args = dict(args or {})
    unknown = set(args) - BUILDER_ARGS
    if unknown:
        raise ValueError(f"unknown app_builder arg(s): {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(BUILDER_ARGS))}")
    user_config = {k: _as(DEFAULT_USER_CONFIG[k], args[k]) for k in DEFAULT_USER_CONFIG if k in args}
    autoscaling = {"min_replicas": int(args.get("min_replicas", 1)), "max_replicas": int(args.get("max_replicas", 2)),
                   "target_ongoing_requests": float(args.get("target_ongoing_requests", 8)),
                   "upscale_delay_s": float(args.get("upscale_delay_s", 10)),
                   "downscale_delay_s": float(args.get("downscale_delay_s", 60)),
                   "look_back_period_s": float(args.get("look_back_period_s", 30))}
    env_vars = {k: str(v) for k, v in (args.get("env_vars") or {}).items()}
    if "STOCKTREND_HOME" in env_vars and "MLFLOW_TRACKING_URI" not in env_vars:
        # The replicas' home decides their store too, unless the user exported a tracking URI: an inherited
        # MLFLOW_TRACKING_URI (MLflow exports the one a process last used) may point at an older home.
        from stocktrend.platform.registry.mlflow_registry import user_tracking_uri
        env_vars["MLFLOW_TRACKING_URI"] = (user_tracking_uri()
                                           or f"sqlite:///{Path(env_vars['STOCKTREND_HOME']) / 'mlflow.db'}")
    actor = {"num_cpus": float(args.get("num_cpus", 1)),
             **({"runtime_env": {"env_vars": env_vars}} if env_vars else {})}
    challenger = None
    if user_config.get("challenger"):
        from stocktrend.serve.challenger import CHALLENGER_DEFAULTS, ChallengerModel
        challenger = ChallengerModel.options(
            user_config={**CHALLENGER_DEFAULTS, "model": user_config["challenger"],
                         **{k: user_config[k] for k in ("backend", "poll_interval_s", "max_history_days",
                                                        "drift_window") if k in user_config}},
            autoscaling_config={**autoscaling, "min_replicas": 1},
            ray_actor_options={**actor, "num_cpus": float(args.get("challenger_num_cpus", actor["num_cpus"]))}).bind()
    return StockTrendService.options(
        user_config={**DEFAULT_USER_CONFIG, **user_config}, autoscaling_config=autoscaling,
        max_ongoing_requests=int(args.get("max_ongoing_requests", 32)),
        max_queued_requests=int(args.get("max_queued_requests", 64)),
        ray_actor_options=actor).bind(challenger)


# The application with the default args: `serve build stocktrend.serve.app:app -o serve.yaml` writes a config from it
# (serve build wants an Application, not a builder); `serve run stocktrend.serve.app:app` also works.
app = app_builder()
