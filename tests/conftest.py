import os

import pytest

from stocktrend.serve.ingress import FAST_INGRESS_ENV

# Keep every run artefact of the test session out of the working tree.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway test clusters (Ray 2.60's local default: token auth)
# Serve through the HAProxy ingress, as `stocktrend serve` does (RAY_SERVE_ENABLE_HA_PROXY=0 tests the Python proxy).
for _k, _v in FAST_INGRESS_ENV.items():
    os.environ.setdefault(_k, _v)


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


@pytest.fixture(scope="session")
def _ray_session():
    import ray
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """One local Ray instance shared by the in-process tests (2 CPUs, modest object store), started on first use in
    a module and again in the next module after a job-submit test (always last in its module) ran ``ray stop``."""
    import ray
    if not ray.is_initialized():
        # address="local": never join a cluster another test left behind (its address file in /tmp/ray).
        ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=True,
                 log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory):
    """A user data directory of 3 tickers that copy the market 5 days later (900 days): the tiny preset default
    learns it within 2 epochs, a learning rate of 1e-6 never does (tests/ray/test_no_hang.py, POOR)."""
    from stocktrend.platform.data.synthetic import planted_signal_universe, write_directory
    return write_directory(planted_signal_universe(900, seed=5, n_tickers=3), tmp_path_factory.mktemp("planted"))
