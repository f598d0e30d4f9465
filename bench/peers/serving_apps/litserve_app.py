"""LitServe + ONNX Runtime (bench/peers/serving.py): ``python litserve_app.py --port P --workers N`` starts N inference
worker processes (``workers_per_device`` on the CPU; ``setup`` runs once in each) and LitServe's default number of API
server processes (``num_api_servers=None``: as many as inference workers). Stop it with SIGINT (SIGTERM to the main
process leaves the workers behind)."""
import argparse

import litserve as ls
import numpy as np

from onnx_model import OnnxModel


class OnnxAPI(ls.LitAPI):
    def setup(self, device):
        self.model = OnnxModel()

    def decode_request(self, request):  # the parsed JSON body
        return np.asarray(request["windows"], dtype=np.float32)

    def predict(self, x):
        return self.model(x)

    def encode_response(self, probs):
        return {"probabilities": probs.tolist()}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    server = ls.LitServer(OnnxAPI(api_path="/predict"), accelerator="cpu", devices=1, workers_per_device=a.workers,
                          timeout=30)
    server.run(host="127.0.0.1", port=a.port, log_level="warning", generate_client_file=False)
