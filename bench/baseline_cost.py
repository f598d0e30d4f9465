"""Gradient-boosting baseline: 200 fixed trees vs trees chosen on the validation segment (issue 11).

    python bench/baseline_cost.py

Prints fit time, trees used, and test accuracy / AUC of each variant on the embedded MSFT data set (default
DataConfig: 30-day windows, top-50 features), measured side by side in one process.
"""
from __future__ import annotations

import time

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.evaluation.metrics import _flat


def main() -> None:
    d = build_dataset(DataConfig())
    tr, va, te = d.samples["train"], d.samples["val"], d.samples["test"]
    x_tr, y_tr = _flat(d.windows(tr)), d.targets(tr)
    x_va, y_va = _flat(d.windows(va)), d.targets(va)
    x_te, y_te = _flat(d.windows(te)), d.targets(te)
    print(f"train {x_tr.shape}, val {x_va.shape}, test {x_te.shape}")
    print("| variant | fit s | trees | test accuracy | test AUC |\n|---|---|---|---|---|")
    for name, kw, fit_kw in [("200 fixed trees (before)", {"early_stopping": False}, {}),
                             ("early-stopped on validation (now)", {"early_stopping": True, "n_iter_no_change": 10},
                              {"X_val": x_va, "y_val": y_va})]:
        t = time.perf_counter()
        gb = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0, **kw)
        gb.fit(x_tr, y_tr, **fit_kw)
        fit_s = time.perf_counter() - t
        p = gb.predict_proba(x_te)
        print(f"| {name} | {fit_s:.1f} | {gb.n_iter_} | {accuracy_score(y_te, p.argmax(1)):.3f} | "
              f"{roc_auc_score(y_te, p[:, 1]):.3f} |")


if __name__ == "__main__":
    main()
