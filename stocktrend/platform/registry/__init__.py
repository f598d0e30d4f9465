"""What a trained model is and where it lives: the checkpoint format + Predictor, MLflow tracking and the registry.
May import platform.data and stocktrend.models; never training, evaluation, tune or serve."""
