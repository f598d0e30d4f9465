"""The replay report's realised figures on frames built by hand (no Ray, no training): days a policy abstained
count as a rank IC of 0 (a policy that never had a model does not crash the report), and the direction a prediction
is judged on follows the model's label."""

import numpy as np
import pandas as pd

from stocktrend.loop.replay_report import direction_hits, direction_threshold, policy_metrics


def served(days, n_names=6, seed=0, skill=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for d in days:
        fwd = rng.normal(0, 0.02, n_names)
        for i in range(n_names):
            rows.append({"ticker": f"T{i}", "date": d, "score": skill * fwd[i] + rng.normal(0, 0.01), "fwd": fwd[i],
                         "ret1": fwd[i] / 5})
    f = pd.DataFrame(rows)
    f["excess"] = f["fwd"] - f.groupby("date")["fwd"].transform("mean")
    return f


def test_abstained_days_count_as_zero_and_a_policy_that_always_abstained_does_not_crash():
    days = pd.bdate_range("2020-01-01", periods=80)
    f = served(days[:40])
    full = policy_metrics(f, 5, 5.0, False, True, 0.0, pd.DatetimeIndex(days[:40]))
    half = policy_metrics(f, 5, 5.0, False, True, 0.0, pd.DatetimeIndex(days))
    assert full["rank_ic"] > 0.5 and np.isclose(half["rank_ic"], full["rank_ic"] / 2)
    empty = f.iloc[:0]
    none = policy_metrics(empty, 5, 5.0, False, True, 0.0, pd.DatetimeIndex(days))
    assert none["rank_ic"] == 0.0 and none["long_short"].sharpe == 0.0


def test_the_direction_follows_the_label():
    f = pd.DataFrame({"fwd": [0.01, 0.01, -0.01], "excess": [-0.002, 0.004, -0.003]})
    p_up = pd.Series([0.6, 0.4, 0.3])  # P(Alcista)
    assert direction_threshold("binary") == 0.5 and direction_threshold("ternary") == 0.0
    assert direction_hits(p_up, f, "binary").tolist() == [True, False, True]  # against the return
    assert direction_hits(p_up, f, "excess").tolist() == [False, False, True]  # against the excess return
    value = pd.Series([0.003, -0.001, 0.002])  # a predicted (excess) return
    assert direction_hits(value, f, "regression").tolist() == [True, False, False]
    assert direction_hits(value, f, "excess_regression").tolist() == [False, False, False]
    spread = pd.Series([0.2, -0.1, -0.3])  # P(Alcista) - P(Bajista), 3 classes
    assert direction_hits(spread, f, "ternary").tolist() == [True, False, True]
