import os

import pytest

# Keep every run artefact of the test session out of the working tree.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session", autouse=True)
def _stocktrend_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("stocktrend-home")
    old = os.environ.get("STOCKTREND_HOME")
    os.environ["STOCKTREND_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("STOCKTREND_HOME", None)
    else:
        os.environ["STOCKTREND_HOME"] = old
