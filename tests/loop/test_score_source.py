"""`stocktrend score` reads its bars a block of tickers at a time (issue 41): the driver's survey keeps dates, never
bars, and hashes exactly what a whole load hashed; the local engine reads a block at a time; a ticker the model does
not know is one line, as before."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stocktrend.loop import score_source
from stocktrend.loop.score import last_common_day, scoring_days
from stocktrend.loop.score_source import BarSource, scoring_source, survey
from stocktrend.platform.data.dataset import DataConfig
from stocktrend.platform.data.sources import DataValidationError, load_directory


def _model(data_dir, tickers):
    """The two things the source reads of a checkpoint: its data config and the tickers it was trained on."""
    return SimpleNamespace(data_config=DataConfig(data_dir=str(data_dir)), ckpt={"tickers": list(tickers)})


@pytest.fixture
def ragged_dir(planted_dir, tmp_path):
    """The planted directory with its market context ending 60 rows early: every ticker runs past the last common
    day (the last day the tickers and the context all reach)."""
    d = Path(shutil.copytree(planted_dir, tmp_path / "ragged"))
    first = sorted((d / "market").glob("*.csv"))[0]
    rows = first.read_text().splitlines()
    first.write_text("\n".join(rows[:-60]) + "\n")
    return d


@pytest.fixture
def reads(monkeypatch):
    """Every block the driver reads: the tickers each BarSource.load call asked for."""
    asked: list[list[str]] = []
    original = BarSource.load

    def load(self, tickers, as_of):
        asked.append(list(tickers))
        return original(self, tickers, as_of)
    monkeypatch.setattr(BarSource, "load", load)
    monkeypatch.setattr(score_source, "SURVEY_TICKERS", 1)
    return asked


@pytest.mark.parametrize("which", ["planted", "ragged"])
@pytest.mark.parametrize("latest", [True, False])
def test_the_survey_keeps_dates_and_hashes_what_a_whole_load_hashed(which, latest, planted_dir, ragged_dir, reads):
    d = planted_dir if which == "planted" else ragged_dir
    whole = load_directory(d)
    model = _model(d, whole.tickers)
    end = None if latest else "2002-10-15"
    peek = pd.Timestamp(end) + pd.Timedelta(days=10) if end else None
    s = survey(model, scoring_source(model, None, None), peek, pd.Timestamp(end) if end else None)
    assert all(len(r) == 1 for r in reads) and len(reads) == 3  # one ticker a read, each read once
    assert all(isinstance(v, np.ndarray) and v.dtype == "datetime64[ns]" for v in s.dates.values())
    before = load_directory(d, as_of=peek)  # what score read before: every ticker at once
    hi = last_common_day(before) if latest else pd.Timestamp(end)
    assert last_common_day(s) == last_common_day(before) and s.date_range() == before.date_range()
    lo, hi2 = scoring_days(s, str(hi.date()) if latest else end, None, None)
    assert hi2 == hi
    cut = before.cut(hi)
    assert s.data_hash(hi) == cut.content_hash()
    assert s.ticker_days(lo - pd.Timedelta(days=40), hi) == sum(
        int(((f.index >= lo - pd.Timedelta(days=40)) & (f.index <= hi)).sum()) for f in cut.tickers.values())
    # a second pass over the blocks only where the survey's hash held bars after the last scored day
    assert len(reads) == (6 if which == "ragged" and latest else 3)


def test_the_local_engine_reads_a_block_at_a_time_and_scores_what_a_whole_load_scores(planted_dir, reads, tmp_path):
    from stocktrend.loop.score import ScoreOptions, read_scores, score
    from stocktrend.platform.data.dataset import build_dataset
    from stocktrend.platform.registry.checkpoint import make_checkpoint, save_checkpoint
    from stocktrend.platform.training.local import TrainConfig, fit, model_config_for
    data = build_dataset(DataConfig(data_dir=planted_dir, sequence_length=12, top_k=8), cache_dir=tmp_path / "cache")
    res = fit(data, TrainConfig(preset="tiny", model="lstm", epochs=1, accumulate=1, progress=False),
              model_config_for(data, "tiny", "lstm"), run_test=False)
    path = save_checkpoint(make_checkpoint(res.module.model, res.model_config, data, kind="lstm"), tmp_path / "m.pt")
    out = score(ScoreOptions(model=str(path), start="2002-06-01", end="2002-09-30", engine="local",
                             out_dir=str(tmp_path / "scores")), say=lambda _: None)
    assert reads and all(len(r) == 1 for r in reads)  # the survey and the engine: one ticker a read, never all
    frame = read_scores(tmp_path / "scores", "m", "m")
    assert frame["ticker"].nunique() == 3 and len(frame) == out["rows"]
    # the same windows through the whole-load path give the same scores
    from stocktrend.loop.score import Scorer, _model_specs, resolve, ticker_windows
    from stocktrend.loop.score_source import ticker_frames
    m = resolve(str(path))
    u = load_directory(planted_dir, as_of=pd.Timestamp("2002-09-30"))
    scorer, specs = Scorer([m.pinned], "onnx"), _model_specs([m])
    lo, hi = pd.Timestamp("2002-06-01"), pd.Timestamp("2002-09-30")
    expect = np.concatenate([scorer(b)["out_0"] for b in (ticker_windows(f, u.market, u.indicators,
                             m.pred.ckpt["feature_config"], specs, lo, hi) for f in ticker_frames(u))
                             if len(b["ticker"])])
    got = frame.sort_values(["ticker", "as_of"])
    assert np.allclose(got[[c for c in got.columns if c.startswith("p_")]].to_numpy(), expect, atol=1e-6)
    assert out["models"][0]["frame"]["data_hash"].iloc[0] == u.content_hash()

    # A ticker listed after the last common day (its first bar after the context's last): the survey reads it, the
    # engine reads it as the survey did and cuts it empty; it is skipped, and hashed as the whole read hashes it
    late = Path(shutil.copytree(planted_dir, tmp_path / "late"))
    market = sorted((late / "market").glob("*.csv"))[0]
    rows = market.read_text().splitlines()
    market.write_text("\n".join(rows[:-60]) + "\n")
    last = sorted(late.glob("*.csv"))[-1]
    rows = last.read_text().splitlines()
    last.write_text("\n".join([rows[0], *rows[-30:]]) + "\n")
    reads.clear()
    out = score(ScoreOptions(model=str(path), data_dir=str(late), as_of="latest", engine="local",
                             out_dir=str(tmp_path / "late-scores")), say=lambda _: None)
    whole = load_directory(late)
    hi = last_common_day(whole)
    frame = out["models"][0]["frame"]
    assert sorted(frame["ticker"]) == sorted(whole.tickers)[:2] and (frame["as_of"] == hi).all()
    assert frame["data_hash"].iloc[0] == whole.cut(hi).content_hash()
    assert all(len(r) == 1 for r in reads) and len(reads) == 9  # survey, the hash's second pass, the engine


def test_a_source_of_one_block_is_read_once(ragged_dir, reads, monkeypatch):
    monkeypatch.setattr(score_source, "SURVEY_TICKERS", 256)
    whole = load_directory(ragged_dir)
    model = _model(ragged_dir, whole.tickers)
    s = survey(model, scoring_source(model, None, None), None, None)
    hi = last_common_day(s)
    assert s.data_hash(hi) == whole.cut(hi).content_hash()  # the cut hash from the kept block, no second read
    assert sorted(next(s.read(hi)).tickers) == sorted(whole.tickers) and reads == [sorted(whole.tickers)]


def test_a_ticker_the_model_does_not_know_is_one_line_before_any_bar_is_scored(planted_dir, reads):
    whole = load_directory(planted_dir)
    model = _model(planted_dir, sorted(whole.tickers)[:2])
    with pytest.raises(DataValidationError, match="does not know"):
        survey(model, scoring_source(model, None, None), None, None)
    with pytest.raises(DataValidationError, match="data directory does not exist"):
        scoring_source(_model(Path(planted_dir) / "nope", []), None, None)


def test_outcomes_read_a_block_at_a_time_equal_the_whole_reads(planted_dir, reads):
    """The monitor's outcomes (`truth_of`, one ticker a read here): the day's mean that the excess return subtracts
    is summed over every block, so each scored pair's outcome equals the whole read's."""
    from stocktrend.loop.replay_report import truth, truth_of
    cfg = DataConfig(data_dir=str(planted_dir))
    whole, _ = truth(cfg)
    keys = whole.sample(200, random_state=0)[["ticker", "date"]]
    got = truth_of(cfg, keys).sort_values(["ticker", "date"]).reset_index(drop=True)
    want = whole.merge(keys, on=["ticker", "date"]).sort_values(["ticker", "date"]).reset_index(drop=True)
    assert len(got) == 200 and all(len(r) == 1 for r in reads) and len(reads) == 3
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    assert want["excess"].notna().sum() > 150  # the excess return is really compared
