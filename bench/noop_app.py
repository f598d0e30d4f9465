"""The floor of the HTTP stack for bench/serve_load.py: uvicorn + FastAPI, a handler that only reads the body."""
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok": true}', media_type="application/json")
