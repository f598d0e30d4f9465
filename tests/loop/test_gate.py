"""The gate's rule on frames built by hand: no training, no Ray, no MLflow (except the alias step), seconds in all.
Every floor and change rule for binary, 3-class, regression and panel frames; metrics that cannot be computed (NaN,
constant outputs, one class, too few predictions) are a FAIL with the reason, never an exception; ties; dry-run and
off; a first model (no champion) judged on its floors alone."""

import math

import numpy as np
import pandas as pd
import pytest

from stocktrend.loop.gate import GateOptions, gate_metrics, gate_rules, judge, run_gate

N_DAYS, N_NAMES = 40, 6


def frame(score, target, probs=None, fwd=None, n_names=N_NAMES):
    """A window frame as ``window_frame`` builds it: one row per (ticker, day)."""
    n = len(score)
    days = pd.bdate_range("2024-01-01", periods=-(-n // n_names)).repeat(n_names)[:n]
    f = pd.DataFrame({"ticker": [f"T{i % n_names}" for i in range(n)], "date": days,
                      "fwd": np.asarray(fwd if fwd is not None else target, dtype=np.float64),
                      "ret1": np.zeros(n), "score": np.asarray(score, dtype=np.float64),
                      "target": target})
    if probs is not None:
        for j in range(probs.shape[1]):
            f[f"p{j}"] = probs[:, j]
    return f


def binary(quality: float, seed: int = 0, n: int = N_DAYS * N_NAMES, constant: float | None = None):
    """A binary classifier whose P(up) tracks the outcome with weight ``quality`` (< 0: below chance)."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(0, 0.02, n)
    y = (ret >= 0).astype(np.int64)
    p = 1 / (1 + np.exp(-(quality * ret / 0.02 + rng.normal(0, 1, n))))
    if constant is not None:
        p = np.full(n, constant)
    return frame(p, y, np.column_stack([1 - p, p]), fwd=ret)


def regressor(quality: float, seed: int = 0, n: int = N_DAYS * N_NAMES, constant: float | None = None):
    rng = np.random.default_rng(seed)
    ret = rng.normal(0, 0.02, n)
    pred = 0.5 * quality * ret + rng.normal(0, 0.005, n)
    if constant is not None:
        pred = np.full(n, constant)
    return frame(pred, ret, fwd=ret)


def baselines_for(regression: bool, like):
    base = {"momentum": like.assign(score=0.0) if regression else like.assign(score=0.5, p0=0.5, p1=0.5)}
    if regression:
        base["train_mean"] = like.assign(score=0.001)
    else:
        base["majority"] = like.assign(score=1.0, p0=0.0, p1=1.0)
    return base


def gate(opts, champion, challenger, regression=False, n_classes=2, extra=None):
    base = {**baselines_for(regression, challenger), **(extra or {})}
    return run_gate(opts, champion, challenger, base, regression, n_classes, "v1", "v2")


# ---------------------------------------------------------------------------------------------------------------------
# classifiers
# ---------------------------------------------------------------------------------------------------------------------

def test_binary_floor_and_change():
    good, better, chance = binary(1.5, 1), binary(3.0, 2), binary(0.0, 3)
    r = gate(GateOptions(), good, better)
    assert r.passed, r.failures
    assert r.metrics["challenger"]["auc"] > r.metrics["champion"]["auc"] > 0.6
    r = gate(GateOptions(), better, good)  # worse than the champion: the change rule fails, the floor passes
    assert not r.passed and r.thresholds["auc"]["passed"] and not r.thresholds["auc vs champion"]["passed"]
    r = gate(GateOptions(), good, chance)  # at chance: below 0.5 + margin
    assert not r.passed and not r.thresholds["auc"]["passed"]


def test_a_below_chance_model_never_passes_even_against_a_worse_champion():
    awful, bad = binary(-3.0, 4), binary(-1.0, 5)
    r = gate(GateOptions(auc_margin=0.0), awful, bad)
    assert r.metrics["challenger"]["auc"] < 0.5 and not r.passed
    assert any("auc" in f and "misses challenger >= 0.5" in f for f in r.failures), r.failures


def test_negative_margins_unknown_metrics_and_baselines_are_refused():
    for bad, match in [(dict(auc_margin=-0.1), "auc-margin must be >= 0"), (dict(min_change=-1), "min-change"),
                       (dict(change_metric="acu"), "unknown --change-metric 'acu'"),
                       (dict(beat=("momentun",)), "unknown baseline"), (dict(gate_days=2), "gate-days"),
                       (dict(val_days=0), "val-days"), (dict(mode="on"), "unknown --gate")]:
        with pytest.raises(ValueError, match=match):
            GateOptions(**bad).check()
    with pytest.raises(ValueError, match="not computed for this classifier"):
        GateOptions(change_metric="corr").check_for(regression=False, panel=True)
    with pytest.raises(ValueError, match="not computed for this regressor on a single ticker"):
        GateOptions(change_metric="rank_ic").check_for(regression=True, panel=False)
    with pytest.raises(ValueError, match="no such baseline for a classifier"):
        GateOptions(beat=("ridge",)).check_for(regression=False, panel=False)


def test_ties_pass_at_min_change_zero_and_fail_above_it():
    a = binary(2.0, 6)
    assert gate(GateOptions(), a, a.copy()).passed
    r = gate(GateOptions(min_change=0.01), a, a.copy())
    assert not r.passed and not r.thresholds["auc vs champion"]["passed"]


def test_three_classes_use_one_vs_rest_auc():
    rng = np.random.default_rng(7)
    n = N_DAYS * N_NAMES
    ret = rng.normal(0, 0.02, n)
    y = np.where(ret < -0.005, 0, np.where(ret > 0.005, 2, 1))

    def model(q):
        logits = np.column_stack([-q * ret, np.zeros(n), q * ret]) / 0.02 + rng.normal(0, 1, (n, 3))
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return frame(p[:, 2] - p[:, 0], y, p, fwd=ret)
    good, flipped = model(2.0), model(-2.0)
    r = gate(GateOptions(), flipped, good, n_classes=3)
    assert r.passed and r.metrics["challenger"]["auc"] > 0.6 > r.metrics["champion"]["auc"]
    r = gate(GateOptions(), good, flipped, n_classes=3)
    assert not r.passed and not r.thresholds["auc"]["passed"]


# ---------------------------------------------------------------------------------------------------------------------
# regressors and panels
# ---------------------------------------------------------------------------------------------------------------------

def test_regressors_need_mae_correlation_and_direction():
    good, better, inverse = regressor(1.0, 8), regressor(2.0, 9), regressor(-2.0, 10)
    r = gate(GateOptions(), good, better, regression=True, n_classes=0)
    assert set(r.thresholds) >= {"mae", "corr", "hit_rate", "corr vs champion"}
    assert r.thresholds["corr"]["passed"] and r.thresholds["hit_rate"]["passed"]
    r = gate(GateOptions(), good, inverse, regression=True, n_classes=0)  # anti-correlated: below chance
    assert not r.passed and not r.thresholds["corr"]["passed"] and not r.thresholds["hit_rate"]["passed"]


def test_a_panel_metric_as_change_metric_adds_a_rank_ic_floor():
    good, inverse = binary(2.0, 11), binary(-2.0, 12)
    r = gate(GateOptions(change_metric="rank_ic", auc_margin=0.0), inverse, good)
    assert r.passed and r.metrics["challenger"]["rank_ic"] > 0 > r.metrics["champion"]["rank_ic"]
    assert "rank_ic" in r.thresholds and "rank_ic vs champion" in r.thresholds
    r = gate(GateOptions(change_metric="rank_ic", auc_margin=0.0), inverse.assign(score=-inverse["score"]),
             inverse)
    assert not r.thresholds["rank_ic"]["passed"]


def test_beat_names_baselines_the_challenger_must_beat():
    weak, strong = binary(0.7, 13), binary(3.0, 14)
    extra = {"momentum": strong.copy()}  # a momentum baseline that ranks better than the challenger
    r = gate(GateOptions(beat=("momentum",)), weak, weak.copy(), extra=extra)
    assert not r.passed and not r.thresholds["auc vs momentum"]["passed"]
    r = gate(GateOptions(beat=("momentum", "majority")), weak, strong)
    assert r.passed, r.failures  # majority's AUC cannot be computed (constant): it does not block


# ---------------------------------------------------------------------------------------------------------------------
# what cannot be computed is a FAIL with its reason, never an exception
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("regression", [False, True])
def test_a_constant_challenger_fails_with_the_reason(regression):
    make = regressor if regression else binary
    r = gate(GateOptions(change_metric="corr" if regression else None), make(1.0, 15),
             make(1.0, 15, constant=0.003 if regression else 0.6), regression=regression,
             n_classes=0 if regression else 2)
    assert not r.passed and any("constant predictions" in f for f in r.failures), r.failures


@pytest.mark.parametrize("regression", [False, True])
def test_a_constant_champion_is_replaced_by_a_sane_challenger(regression):
    make = regressor if regression else binary
    r = gate(GateOptions(), make(1.0, 16, constant=0.5 if not regression else 0.0), make(2.0, 17),
             regression=regression, n_classes=0 if regression else 2)
    assert r.passed, r.failures
    change = [t for t in r.thresholds.values() if t["kind"] == "change"][0]
    assert "cannot be computed (constant predictions); the floors decide" in change["detail"]


def test_one_class_windows_nan_outputs_and_tiny_windows_fail_with_reasons():
    one = binary(2.0, 18)
    one = one.assign(target=1)
    r = gate(GateOptions(), one.copy(), one)
    assert not r.passed and any("one class" in f for f in r.failures), r.failures
    nan = binary(2.0, 19)
    nan.loc[3, ["score", "p1"]] = np.nan
    r = gate(GateOptions(), binary(2.0, 19), nan)
    assert not r.passed and any("non-finite predictions" in f for f in r.failures)
    tiny = binary(2.0, 20, n=6)
    r = gate(GateOptions(), tiny.copy(), tiny)
    assert not r.passed and any("too few predictions" in f for f in r.failures)
    values, reasons = gate_metrics(nan.assign(score=np.inf), regression=True, n_classes=0, panel=True)
    assert all(math.isnan(v) for v in values.values()) and set(reasons) == set(values)
    assert r.to_json()  # NaN metrics serialise (as null)


def test_a_first_model_has_floors_only():
    r = gate(GateOptions(), None, binary(2.0, 21))
    assert r.passed and "champion" not in r.metrics and all(t["kind"] == "floor" for t in r.thresholds.values())
    r = gate(GateOptions(), None, binary(-2.0, 22))
    assert not r.passed


def test_judge_never_raises_on_missing_metrics():
    rules = gate_rules(GateOptions(beat=("momentum",)), False, True, {})
    out = judge(rules, {"challenger": {"auc": math.nan}}, {"challenger": {"auc": "why not"}})
    assert [v.passed for v in out] == [False, False, False]
    assert "why not" in out[0].text


def test_dry_run_and_off_in_the_alias_step(three_versions):
    from stocktrend.loop.door import KEPT, PROMOTED, decide
    from stocktrend.platform.registry import mlflow_registry as registry
    c = three_versions
    passed = gate(GateOptions(), binary(1.0, 23), binary(3.0, 24))
    failed = gate(GateOptions(), binary(3.0, 24), binary(1.0, 23))
    assert decide("m", passed, "dry-run", 1, 2)[1] == PROMOTED and registry.aliases("m")["production"] == 1
    assert decide("m", failed, "dry-run", 1, 2)[1] == KEPT and registry.aliases("m")["production"] == 1
    assert decide("m", failed, "enabled", 1, 2, challenger_alias=2)[1] == KEPT
    assert registry.aliases("m") == {"production": 1, "challenger": 2}
    assert decide("m", failed, "off", 1, 2, by="test")[1] == PROMOTED and registry.aliases("m")["production"] == 2
    tags = c.get_model_version("m", "2").tags
    assert tags["stocktrend.forced"] == "true" and tags["stocktrend.forced_by"] == "test"
    # a compare-and-set: a decision against a champion that has moved meanwhile changes nothing
    assert decide("m", passed, "enabled", 1, 3)[1] == KEPT and registry.aliases("m")["production"] == 2
