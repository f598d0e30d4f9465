"""A universe's own data settings (window length, top-K, split) reach every command that builds its data set, and
the first trial of a search on it, unless the user sets them."""

from __future__ import annotations

from stocktrend.cli.data import data_config
from stocktrend.platform.data.universes import data_defaults


def _cfg(universe, top_k=None, sequence_length=None, data=None):
    return data_config(None, data, None, None, sequence_length, 5, "binary", top_k, None, None, universe=universe)


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
