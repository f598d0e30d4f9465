"""The ONNX model as every peer server of bench/peers/serving.py runs it (imported in the peers' own venvs: onnxruntime
and numpy only): the platform's exported graph (stocktrend.platform.registry.inference.export_onnx) in ONNX Runtime with 1 intra-op
and 1 inter-op thread, the whole graph run as the platform's replica runs it (``run(None, ...)``), and a softmax of the
``logits`` output (what the platform's ``Predictor.post`` does for a classifier)."""
import os

import numpy as np
import onnxruntime as ort


class OnnxModel:
    def __init__(self, path: str | None = None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(path or os.environ["MODEL_PATH"], so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.logits = [o.name for o in self.sess.get_outputs()].index("logits")

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """[N, T, F] float32 windows -> [N, classes] probabilities."""
        z = self.sess.run(None, {self.input: windows})[self.logits]
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)
