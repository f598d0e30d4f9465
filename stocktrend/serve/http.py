"""HTTP plumbing of the endpoint, apart from the model: client errors (4xx with a message), the body-size limit,
validation messages, the OpenAPI body of /predict, bearer-token auth and the replica's Prometheus metrics."""
import os

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from stocktrend.serve.schemas import PredictRequest

MAX_BODY_BYTES = int(os.environ.get("STOCKTREND_MAX_BODY_BYTES", 8 * 2**20))


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BodyLimit:
    """Pure ASGI middleware (no extra task per request, unlike ``@app.middleware``): a declared body over the limit
    is answered 413 before it is read. Bodies without a Content-Length are counted while read (``read_body``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                    await JSONResponse({"detail": f"request body of {int(value)} bytes exceeds the "
                                                  f"{MAX_BODY_BYTES}-byte limit"}, status_code=413)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ClientError(413, f"request body exceeds the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"]) or "body"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


NPY_TYPES = ("application/x-npy", "application/octet-stream")
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PredictRequest.model_json_schema()},
    "application/x-npy": {"schema": {"type": "string", "format": "binary",
                                     "description": "a float32/float64 .npy array [batch][sequence_length][n_features]"
                                                    " (np.save; no pickles); options as query parameters "
                                                    "?attention=true&version=N"}}}}}


class Metrics:
    """Prometheus metrics of one replica (``GET /metrics``)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("stocktrend_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("stocktrend_request_seconds", "request latency", ["route", "status"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.batch = Histogram("stocktrend_batch_size", "windows per model call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.classes = Counter("stocktrend_predictions", "predicted labels", ["label"], registry=self.registry)
        self.confidence = Histogram("stocktrend_confidence", "confidence of predictions", registry=self.registry,
                                    buckets=(0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0))
        self.version = Gauge("stocktrend_model_version", "served model version", ["name"], registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)


def check_token(request: Request) -> None:
    token = os.environ.get("STOCKTREND_API_TOKEN")
    if token and request.headers.get("authorization", "") != f"Bearer {token}":
        raise ClientError(401, "missing or wrong bearer token (Authorization: Bearer <STOCKTREND_API_TOKEN>)")
