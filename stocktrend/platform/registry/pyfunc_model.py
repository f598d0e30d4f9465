"""The MLflow pyfunc flavor of a stocktrend checkpoint: ``mlflow.pyfunc.load_model("models:/NAME@production")``
returns a model whose ``predict(windows)`` gives the Predictor's output matrix (class probabilities for classifiers;
the predicted return and confidence for regressors), and ``mlflow models serve`` serves it.

MLflow's "models from code": this file is the model's code (copied into the logged model), the weights-only
checkpoint is its artifact, and nothing is pickled: loading the checkpoint goes through ``Predictor.load`` and
``torch.load(weights_only=True)`` / skops with an allow-list, as everywhere else in the platform.
"""

import mlflow
import numpy as np


class StockTrendModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from stocktrend.platform.registry.checkpoint import Predictor
        self.pred = Predictor.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        """windows [batch][sequence_length][n_features] (already scaled and selected, as /model lists) -> outputs."""
        out, _ = self.pred.predict_proba(np.asarray(model_input, dtype=np.float32))
        return out


mlflow.models.set_model(StockTrendModel())
