import json
import subprocess
import sys

import numpy as np
import pytest

from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.evaluation.metrics import backtest, bootstrap_auc, classification_scores
from stocktrend.platform.data.synthetic import planted_signal_universe


def test_classification_scores_known_values():
    y = np.array([0, 0, 1, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    s = classification_scores(y, probs, ["Bajista", "Alcista"], bootstrap=200)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    assert s["confusion"] == [[1, 1], [1, 3]]
    assert s["per_class"]["Alcista"] == {"precision": 0.75, "recall": 0.75}
    assert s["auc"] == pytest.approx(0.875)
    lo, hi = s["auc_ci"]
    assert 0 <= lo <= s["auc"] <= hi <= 1
    rng = np.random.default_rng(0)
    yy = rng.integers(0, 2, 2000)
    lo, hi = bootstrap_auc(yy, rng.random(2000), 300)
    assert lo < 0.5 < hi and hi - lo < 0.1


@pytest.fixture(scope="module")
def planted():
    return build_dataset(DataConfig(tickers=(), top_k=16, sequence_length=20),
                         universe=planted_signal_universe(1200, seed=2), use_cache=False)


def test_backtest_arithmetic(planted):
    rows = planted.samples["test"]
    close = planted.panel.meta["close"].to_numpy()
    nxt = close[np.minimum(rows + 1, len(close) - 1)] / close[rows] - 1
    nxt[rows + 1 >= len(close)] = 0.0
    always = np.ones(len(rows))
    strat, hold = backtest(planted, always, threshold=0.5, cost_bps=5)
    # Always long = buy-and-hold: one entry cost, then the same daily returns.
    np.testing.assert_allclose(strat.equity, hold.equity)
    expected = np.cumprod(1 + nxt - np.r_[5e-4, np.zeros(len(rows) - 1)])
    np.testing.assert_allclose(hold.equity, expected)
    assert strat.turnover == pytest.approx(1 / (len(rows) / 252))
    # Alternating signal pays 5 bps on every switch.
    alt = np.tile([1.0, 0.0], len(rows))[: len(rows)]
    s_alt, _ = backtest(planted, alt, cost_bps=5)
    pos = (alt > 0.5).astype(float)
    manual = pos * nxt - np.abs(np.diff(np.r_[0.0, pos])) * 5e-4
    np.testing.assert_allclose(s_alt.equity, np.cumprod(1 + manual))
    assert s_alt.exposure == pytest.approx(pos.mean())
    s_short, _ = backtest(planted, alt, cost_bps=0, allow_short=True)
    np.testing.assert_allclose(s_short.equity, np.cumprod(1 + np.where(pos > 0, 1, -1) * nxt))


@pytest.mark.slow
def test_train_then_evaluate_cli_on_a_user_data_directory(tmp_path):
    """Real files -> stocktrend train -> stocktrend evaluate (report, plots, MLflow artefacts, plain verdict)."""
    u = planted_signal_universe(1500, noise=0.001, seed=3)
    data_dir = tmp_path / "data"
    (data_dir / "market").mkdir(parents=True)
    u.tickers["SIG0"].rename_axis("Date").reset_index().to_csv(data_dir / "SIG0.csv", index=False)
    u.market["MKT"].rename_axis("Date").reset_index().to_csv(data_dir / "market" / "MKT.csv", index=False)
    env = {**__import__("os").environ, "STOCKTREND_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "stocktrend", "-q", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=600)
    t = run("train", "--preset", "tiny", "--epochs", "8", "--data", str(data_dir), "--top-k", "16",
            "--sequence-length", "20", "--accumulate", "1", "--lr", "1e-3", "--max-lr", "1e-2", "--model-name", "p")
    assert t.returncode == 0, t.stderr[-2000:]
    assert "registered   : p version 1" in t.stdout
    e = run("evaluate", "p@1", "--out", str(tmp_path / "rep"))
    assert e.returncode == 0, e.stderr[-2000:]
    report = (tmp_path / "rep" / "report.md").read_text()
    for section in ("## Verdict", "## Classification (test segment)", "## Backtest", "auc 95% CI", "majority",
                    "momentum", "logistic_regression", "gradient_boosting", "buy_and_hold"):
        assert section in report
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    model, majority = metrics["scores"]["model"], metrics["scores"]["majority"]
    assert model["accuracy"] > majority["accuracy"] + 0.2  # the planted signal is found...
    assert "does NOT beat the majority baseline" not in report  # ...and the verdict says so honestly
    for png in ("learning_curves.png", "confusion_matrix.png", "roc.png", "equity.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    art = list((tmp_path / "home" / "mlartifacts").rglob("evaluation/report.md"))
    assert len(art) == 1
    bad = run("evaluate", "p@9")
    assert bad.returncode == 2 and "has no version 9" in bad.stderr and "Traceback" not in bad.stderr
