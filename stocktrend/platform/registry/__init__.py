"""What a trained model is and where it lives: the checkpoint format + Predictor, MLflow tracking and the registry.
May import platform.data and stocktrend.models; never training, evaluation, tune or serve."""

# The inference backends (stocktrend.platform.registry.inference), named here so that parsing a command or a serve
# config does not import torch.
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
