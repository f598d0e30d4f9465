"""Fitting the scikit-learn models of the zoo (``rf``, ``gbm``) on the same data set, with the same outputs as a
Lightning fit: a FitResult with validation and test metrics under the same names (``val_loss``, ``test_auc``, ...).

They see the oversampled training windows, flattened (as the logistic-regression and gradient-boosting baselines do);
``gbm`` picks its number of trees on the validation segment. No Lightning, no Ray Train: one process.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stocktrend.models.sklearn_base import SklearnNet, flatten
from stocktrend.platform.data.dataset import PreparedData
from stocktrend.platform.training.results import FitResult


class SklearnModule:
    """What callers of ``fit`` use of a module (``.model``, ``.parameters()``, ``.eval()``) for a fitted estimator."""

    def __init__(self, estimator):
        self.model = SklearnNet(estimator)

    def parameters(self):
        return iter(())

    def eval(self):
        return self


def segment_metrics(estimator, data: PreparedData, segment: str) -> dict[str, float]:
    from sklearn import metrics as skm
    rows = data.samples[segment]
    y = data.targets(rows)
    p = estimator.predict_proba(flatten(data.windows(rows)))
    out = {f"{segment}_loss": float(skm.log_loss(y, p, labels=list(range(data.kind.n_classes)))),
           f"{segment}_acc": float(skm.accuracy_score(y, p.argmax(1))),
           f"{segment}_mcc": float(skm.matthews_corrcoef(y, p.argmax(1)))}
    if data.is_panel:
        from stocktrend.models.rank_ic import mean_daily_rank_ic, score_from_output
        day = data.dates[rows].astype("datetime64[D]").astype(np.int64)
        out[f"{segment}_rank_ic"] = mean_daily_rank_ic(day, score_from_output(p, p.shape[1]),
                                                       data.forward_return[rows])
    if len(np.unique(y)) > 1:
        out[f"{segment}_auc"] = float(skm.roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else
                                      skm.roc_auc_score(y, p, multi_class="ovr"))
    return out


def fit_sklearn(data: PreparedData, tcfg, mcfg, run_test: bool = True) -> FitResult:
    t0 = time.perf_counter()
    estimator = mcfg.build()
    if tcfg.patience <= 0 and "n_iter_no_change" in estimator.get_params():
        # A fixed-length refit: the number of trees the gated fit picked (``epochs``), no early stopping.
        estimator.set_params(max_iter=max(1, tcfg.epochs), early_stopping=False)
    rows = data.samples["train"]
    x, y = flatten(data.windows(rows)), data.targets(rows)
    kw: dict[str, Any] = {}
    if tcfg.spec.fit_uses_validation and tcfg.patience > 0:
        val = data.samples["val"]
        kw = {"X_val": flatten(data.windows(val)), "y_val": data.targets(val)}
    estimator.fit(x, y, **kw)
    val = segment_metrics(estimator, data, "val")
    row = {"epoch": 0, **val, "seconds": time.perf_counter() - t0}
    best = val.get(tcfg.monitor)
    # gbm's boosting iterations (trees picked on validation) stand as its epochs: what a refit repeats; rf: 1
    iters = int(getattr(estimator, "n_iter_", 1))
    return FitResult(SklearnModule(estimator), mcfg, tcfg, best, iters - 1, iters, [row],
                     segment_metrics(estimator, data, "test") if run_test else {})
