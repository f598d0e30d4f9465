"""BentoML + ONNX Runtime (bench/peers/serving.py): ``bentoml serve bento_service:OnnxService`` with BENTO_WORKERS=N
worker processes (``__init__`` runs once in each), 1 thread per worker for the sync API. Run it with
BENTOML_DO_NOT_TRACK=true (usage tracking is on by default) and BENTOML_HOME in a temporary directory."""
import os

import bentoml
import numpy as np

from onnx_model import OnnxModel


@bentoml.service(workers=int(os.environ.get("BENTO_WORKERS", "1")), threads=1, traffic={"timeout": 30})
class OnnxService:
    def __init__(self) -> None:
        self.model = OnnxModel()

    @bentoml.api  # POST /predict, JSON body {"windows": [[[...]]]}
    def predict(self, windows: list[list[list[float]]]) -> dict:
        return {"probabilities": self.model(np.asarray(windows, dtype=np.float32)).tolist()}
