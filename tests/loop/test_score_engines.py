"""`stocktrend score` on Ray Data (real Ray, an actor pool, a block per ticker, each task reading its own tickers' bars)
writes exactly what the in-process engine writes, champion and challenger in one pass; bad requests are one clear
error."""

import subprocess
import sys

import numpy as np
import pytest

from stocktrend.loop.score import ScoreOptions, read_scores, score
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.sources import DataValidationError
from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
from stocktrend.platform.training.local import TrainConfig, fit, model_config_for


@pytest.fixture(scope="module")
def models(planted_dir, tmp_path_factory):
    """Two tiny checkpoints of different kinds on the planted panel (a champion and a comparable challenger)."""
    d = tmp_path_factory.mktemp("score-models")
    data = build_dataset(DataConfig(data_dir=planted_dir, sequence_length=12, top_k=8), cache_dir=d / "cache")
    out = []
    for kind in ("lstm", "gbm"):
        res = fit(data, TrainConfig(preset="tiny", model=kind, epochs=1, accumulate=1, progress=False),
                  model_config_for(data, "tiny", kind), run_test=False)
        out.append(str(save_checkpoint(make_checkpoint(res.module.model, res.model_config, data, kind=kind),
                                       d / f"{kind}.pt")))
    return out


@pytest.mark.slow
def test_ray_data_scores_what_the_local_engine_scores(ray_local, models, planted_dir, tmp_path, monkeypatch):
    from stocktrend.loop import score_source
    asked: list[list[str]] = []
    load = score_source.BarSource.load
    monkeypatch.setattr(score_source.BarSource, "load", lambda self, t, a: asked.append(list(t)) or load(self, t, a))
    monkeypatch.setattr(score_source, "SURVEY_TICKERS", 1)
    runs = {}
    for engine in ("local", "ray"):
        asked.clear()
        res = score(ScoreOptions(model=models[0], challenger=models[1], start="2002-06-01", end="2003-06-30",
                                 engine=engine, actors=2, out_dir=str(tmp_path / engine)), say=lambda _: None)
        assert res["engine"] == engine and res["rows"] == 3 * len(res["models"][0]["frame"]["as_of"].unique())
        # the driver reads one ticker at a time: the survey (and the local engine); on Ray Data only the survey,
        # each task reading its own block
        assert all(len(t) == 1 for t in asked) and len(asked) == (6 if engine == "local" else 3), asked
        runs[engine] = res
    for name in ("lstm", "gbm"):
        a = read_scores(tmp_path / "local", name, name).sort_values(["as_of", "ticker"]).reset_index(drop=True)
        b = read_scores(tmp_path / "ray", name, name).sort_values(["as_of", "ticker"]).reset_index(drop=True)
        assert len(a) == len(b) > 600 and (a["ticker"] == b["ticker"]).all() and (a["as_of"] == b["as_of"]).all()
        np.testing.assert_allclose(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy(), atol=1e-5)
        assert (a["label"] == b["label"]).all()


def test_bad_requests_are_one_clear_error(models, planted_dir, tmp_path):
    def attempt(**kw):
        with pytest.raises(DataValidationError) as err:
            score(ScoreOptions(model=models[0], engine="local", out_dir=str(tmp_path), **kw), say=lambda _: None)
        return str(err.value)
    assert "outside the data (2000-01-03 .. " in attempt(as_of="2031-01-02")
    assert "no trading day" in attempt(start="2003-03-08", end="2003-03-09")  # a weekend
    assert "is after --end" in attempt(start="2003-03-08", end="2003-01-09")
    assert "not both" in attempt(as_of="2003-03-03", start="2003-03-01", end="2003-03-05")
    assert "not a date" in attempt(as_of="someday")
    assert "was not trained for universe tech" in attempt(as_of="2003-03-03", universe="tech")


def test_python_m_stocktrend_loop_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "stocktrend.loop"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage: python -m stocktrend.loop {retrain,score}" in r.stderr
    import os
    r = subprocess.run([sys.executable, "-m", "stocktrend.loop", "retrain", "--help"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--gate-days" in text and "Exit codes: 0 promoted, 3 champion kept" in text
