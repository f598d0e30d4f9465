"""Gradient boosting on flattened windows (scikit-learn's histogram GBM); the number of trees is picked on the
validation segment (early stopping), as the networks pick their epoch there."""

from __future__ import annotations

from dataclasses import dataclass

from stocktrend.models.common import ConfigMixin
from stocktrend.models.spec import ModelSpec, Task


@dataclass(frozen=True)
class GBMConfig(ConfigMixin):
    n_features: int = 50
    seq_len: int = 30
    n_classes: int = 2
    max_iter: int = 300  # upper bound on trees; early stopping on validation usually stops sooner
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    # early stopping's patience, in trees (a field since issue 38: checkpoints from before it load with the 10 they
    # were trained with, and the loop's retrain of such a champion keeps it)
    n_iter_no_change: int = 10
    seed: int = 42

    def build(self):
        from sklearn.ensemble import HistGradientBoostingClassifier
        return HistGradientBoostingClassifier(max_iter=self.max_iter, learning_rate=self.learning_rate,
                                              max_leaf_nodes=self.max_leaf_nodes,
                                              min_samples_leaf=self.min_samples_leaf,
                                              l2_regularization=self.l2_regularization, early_stopping=True,
                                              n_iter_no_change=self.n_iter_no_change, random_state=self.seed)


PRESETS: dict[str, GBMConfig] = {
    "seed": GBMConfig(max_iter=500, max_leaf_nodes=31),
    # Stumps (one split a tree), many of them, with a long patience: on weak planted signals (us29, 8 features x 5
    # days) they keep 0.74-1.0 of the oracle where 15-leaf trees with a patience of 10 kept 0.54-0.94 (bench/README.md,
    # issue 38): a weak signal is mostly additive, and each tree adds little to the validation loss.
    "small": GBMConfig(max_iter=1000, learning_rate=0.1, max_leaf_nodes=2, n_iter_no_change=50),
    "tiny": GBMConfig(max_iter=10, max_leaf_nodes=4, min_samples_leaf=5),
}

SPACE: dict[str, tuple] = {"learning_rate": ("loguniform", 0.01, 0.2), "max_leaf_nodes": ("choice", [2, 3, 7, 15, 31]),
                           "min_samples_leaf": ("choice", [20, 40, 80]), "l2_regularization": ("loguniform", 0.01, 10)}
TINY_SPACE: dict[str, tuple] = {"max_leaf_nodes": ("choice", [3, 4]), "learning_rate": ("loguniform", 0.05, 0.3)}


SPEC = ModelSpec(kind="gbm", config=GBMConfig, presets=PRESETS, space={"default": SPACE, "tiny": TINY_SPACE},
                 fitted_by="sklearn", class_task=Task.classification, fit_uses_validation=True,
                 description="histogram gradient boosting on the flattened window, trees picked on validation")
