"""A universe's own data settings (window length, top-K, split, label) reach every command that builds its data set,
and the first trial of a search on it, unless the user sets them."""

from __future__ import annotations

from stocktrend.cli.data import data_config
from stocktrend.platform.data.universes import data_defaults


def _cfg(universe, top_k=None, sequence_length=None, data=None, label="binary", ticker=None):
    return data_config(ticker, data, None, None, sequence_length, 5, label, top_k, None, None, universe=universe)


def test_each_universe_has_its_windows_and_top_k_and_flags_override_them():
    assert (data_defaults("us29")["sequence_length"], data_defaults("us29")["top_k"]) == (5, 8)
    assert (data_defaults("msft")["sequence_length"], data_defaults("msft")["top_k"]) == (30, 50)
    assert data_defaults("sp500_2010")["sequence_length"] == 10 and data_defaults("sp500_2010")["top_k"] == 50
    assert data_defaults(None)["top_k"] == 50  # a data directory: the platform's defaults
    us29 = _cfg("us29")
    assert (us29.sequence_length, us29.top_k) == (5, 8)
    mine = _cfg("us29", top_k=20, sequence_length=30)
    assert (mine.sequence_length, mine.top_k) == (30, 20)
    assert _cfg("us29", top_k=0).top_k == 0  # 0 = every feature, not "unset"
    assert (_cfg("msft").sequence_length, _cfg("msft").top_k) == (30, 50)


def test_a_search_starts_from_the_universes_settings_where_its_space_holds_them():
    from stocktrend.models import zoo
    from stocktrend.platform.data.universes import UNIVERSES
    from stocktrend.tune.space import search_defaults
    us29 = UNIVERSES["us29"].defaults
    for preset, expect in (("small", (5, 8)), ("tiny", (5, 8)), ("seed", (30, 50))):  # seed's space: 20-60 days
        point = search_defaults([zoo.get("hybrid")], preset, us29)[0]
        assert (point["sequence_length"], point["top_k"]) == expect, (preset, point)
    assert search_defaults([zoo.get("lstm")], "small")[0]["sequence_length"] == 30  # no universe: the preset's
    both = search_defaults([zoo.get("lstm"), zoo.get("gbm")], "small", us29)
    assert all((p["sequence_length"], p["top_k"]) == (5, 8) for p in both)


def test_label_auto_is_excess_on_a_panel_of_three_or_more_and_the_raw_direction_otherwise(tmp_path):
    """--label auto (the default of data build, train, tune, replay): a panel is judged by its daily rank IC, which the
    market's move does not change, so its label is the direction against the day's universe mean."""
    from stocktrend.platform.data.synthetic import random_walk_universe, write_directory
    from stocktrend.platform.data.universes import default_label
    from stocktrend.tune.options import SearchOptions
    assert _cfg("us29", label="auto").label_kind == "excess"
    assert _cfg("tech", label="auto").label_kind == "excess"  # 4 names
    assert _cfg("msft", label="auto").label_kind == "binary"  # one name: no cross-section
    assert _cfg("tech", label="auto", ticker="AAPL,IBM").label_kind == "binary"  # the tickers asked for count
    assert _cfg("us29", label="binary").label_kind == "binary"  # what the user says wins
    assert _cfg("us29", label="ternary").label_kind == "ternary"
    three = write_directory(random_walk_universe(60, n_tickers=3, seed=1), tmp_path / "three")
    two = write_directory(random_walk_universe(60, n_tickers=2, seed=1), tmp_path / "two")
    assert _cfg(None, data=three, label="auto").label_kind == "excess"  # files counted, no price read
    assert _cfg(None, data=two, label="auto").label_kind == "binary"
    assert default_label(None, tmp_path / "missing") == "binary"  # the load names the missing directory
    assert SearchOptions().label_kind == "auto"
    import pytest
    import typer
    with pytest.raises(typer.BadParameter, match="unknown label kind 'up'.*auto, binary"):
        _cfg("us29", label="up")


def test_a_search_resolves_label_auto_before_anything_reads_it(tmp_path):
    """`tune` / `python -m stocktrend.tune.search` with the default --label auto: the options run_search goes on with
    hold the concrete label (its trial table, checkpoints and tags name it), by the same rule as the other commands."""
    from stocktrend.platform.data.dataset import DataConfig
    from stocktrend.platform.data.synthetic import random_walk_universe, write_directory
    from stocktrend.tune.options import SearchOptions
    assert SearchOptions(universe="us29").with_label().label_kind == "excess"
    assert SearchOptions(universe="msft").with_label().label_kind == "binary"
    assert SearchOptions(universe="tech", tickers=("AAPL", "IBM")).with_label().label_kind == "binary"
    panel = write_directory(random_walk_universe(60, n_tickers=4, seed=1), tmp_path / "panel")
    assert SearchOptions(data_dir=str(panel), universe="msft").with_label().label_kind == "excess"  # the files count
    assert SearchOptions(universe="us29", label_kind="binary").with_label().label_kind == "binary"  # the user's wins
    # the loop's retrain passes the champion's data config: its label, not the rule's
    assert SearchOptions(universe="us29").with_label(DataConfig(label_kind="binary")).label_kind == "binary"
