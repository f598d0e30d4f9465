"""Plain FastAPI + ONNX Runtime (bench/peers/serving.py): ``uvicorn fastapi_app:app --workers N``; each worker process
imports this module and so builds its own session. The idiomatic FastAPI handler: a pydantic body model and a sync
``def`` (FastAPI runs it on its thread pool, off the event loop)."""
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from onnx_model import OnnxModel

MODEL = OnnxModel()
app = FastAPI()


class Req(BaseModel):
    windows: list[list[list[float]]]


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/predict")
def predict(req: Req):
    return {"probabilities": MODEL(np.asarray(req.windows, dtype=np.float32)).tolist()}
