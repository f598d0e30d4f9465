"""The drift gauge is silent in distribution and loud out of it (issue 40's open question: the monitoring fixture's
served windows scored PSI > 1 against the reference because they are ~90 consecutive days, and slow inputs such as
120-day volatility sit in a few deciles over any short stretch; a sample of the training windows spread over the
training years scores near 0)."""

import numpy as np
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.reference import feature_reference
from stocktrend.platform.data.synthetic import planted_cross_section_universe
from stocktrend.platform.evaluation.drift import PSI_MODERATE, PSI_SIGNIFICANT, feature_psis


@pytest.fixture(scope="module")
def data():
    return build_dataset(DataConfig(top_k=16, sequence_length=10),
                         universe=planted_cross_section_universe(1500, 6, seed=4), use_cache=False)


def test_training_windows_spread_over_the_years_are_silent(data):
    names = data.transforms.input_names
    reference = feature_reference(data.x, data.train_unbalanced, names)
    assert len(reference) >= 10
    sample = np.random.default_rng(0).choice(data.train_unbalanced, 2000, replace=False)
    psis = feature_psis(reference, data.x[sample], names)
    assert max(psis.values()) < PSI_MODERATE / 2, sorted(psis.items(), key=lambda kv: -kv[1])[:3]


def test_a_short_stretch_of_days_and_a_shifted_input_are_loud(data):
    names = data.transforms.input_names
    reference = feature_reference(data.x, data.train_unbalanced, names)
    train = np.sort(data.train_unbalanced)
    first = train[(train >= data.offsets[0]) & (train < data.offsets[1])][:90]  # 90 consecutive days of one ticker
    stretch = feature_psis(reference, data.x[first], names)
    assert max(stretch.values()) > PSI_SIGNIFICANT, stretch  # a regime, not a fault: see reference.py
    sample = np.random.default_rng(1).choice(data.train_unbalanced, 2000, replace=False)
    shifted = data.x[sample].copy()
    col = next(j for j, n in enumerate(names) if n in reference)
    shifted[:, col] += 1.0  # one standard deviation (inputs are scaled on the training rows)
    psis = feature_psis(reference, shifted, names)
    assert psis[names[col]] > PSI_SIGNIFICANT
    assert max(v for n, v in psis.items() if n != names[col]) < PSI_MODERATE / 2


def test_the_endpoint_sets_no_drift_gauge_on_a_handful_of_rows(data):
    """A replica that has served 8 copies of one window has no drift to report (PSI over ten deciles of 8 rows is
    ~1.6, which fired the live alert in CI); from MIN_DRIFT_ROWS rows on, or a full smaller window, it reports."""
    from stocktrend.serve.metrics import MIN_DRIFT_ROWS, ServeMetrics
    names = data.transforms.input_names
    reference = {"features": feature_reference(data.x, data.train_unbalanced, names)}

    class Recorder:
        def __init__(self):
            self.values = []

        def set(self, value, tags=None):
            self.values.append(value)
    sample = np.random.default_rng(2).choice(data.train_unbalanced, MIN_DRIFT_ROWS, replace=False)

    def flush(rows, min_rows=MIN_DRIFT_ROWS):
        metrics = ServeMetrics()
        metrics.model("m", 1, "torch", reference=reference, names=names)
        metrics.min_drift_rows = min_rows
        gauges = {k: Recorder() for k in ("window", "mean_conf", "ref_conf", "psi_max", "psi", "shift")}
        metrics._flush_drift(gauges, {"model": "m"}, (rows, ["up"] * len(rows), [0.6] * len(rows)))
        return gauges
    few = flush(np.repeat(data.x[sample[:1]], 8, axis=0))
    assert few["window"].values == [8] and few["psi_max"].values == [] and few["mean_conf"].values == []
    enough = flush(data.x[sample])
    assert enough["window"].values == [MIN_DRIFT_ROWS] and enough["psi_max"].values[0] < PSI_MODERATE
    small_window = flush(data.x[sample[:50]], min_rows=50)  # drift_window: 50 -> judged when full
    assert len(small_window["psi_max"].values) == 1
