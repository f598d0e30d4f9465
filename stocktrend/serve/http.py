"""HTTP plumbing of the endpoint, apart from the model: client errors (4xx with a message), the body-size limit,
validation messages, the OpenAPI body of /predict and bearer-token auth."""
import hmac
import os

from fastapi import HTTPException, Request
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
    is answered 413 before it is read. Bodies without a Content-Length are counted while read, on every route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            declared = False
            for key, value in scope["headers"]:
                if key == b"content-length" and value.isdigit():
                    declared = True
                    if int(value) > MAX_BODY_BYTES:
                        answer = JSONResponse({"detail": f"request body of {int(value)} bytes exceeds the "
                                                         f"{MAX_BODY_BYTES}-byte limit"}, status_code=413)
                        await answer(scope, receive, send)
                        return
            if not declared:  # chunked: count while whoever reads the body (FastAPI or read_body) reads it
                receive = _counting(receive)
        await self.app(scope, receive, send)


def _counting(receive):
    size = 0

    async def limited():
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                # An HTTPException: FastAPI's body reader and the routes' error guard pass it through as a 413.
                raise HTTPException(413, f"request body exceeds the {MAX_BODY_BYTES}-byte limit")
        return message
    return limited


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


def check_token(request: Request) -> None:
    token = os.environ.get("STOCKTREND_API_TOKEN")
    if token and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                         f"Bearer {token}".encode()):  # constant time
        raise ClientError(401, "missing or wrong bearer token (Authorization: Bearer <STOCKTREND_API_TOKEN>)")
