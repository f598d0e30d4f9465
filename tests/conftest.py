import os

import pytest

from stocktrend.serve.ingress import FAST_INGRESS_ENV

# Keep every run artefact of the test session out of the working tree.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway test clusters (Ray 2.60's local default: token auth)
# Serve through the HAProxy ingress, as `stocktrend serve` does (RAY_SERVE_ENABLE_HA_PROXY=0 tests the Python proxy).
for _k, _v in FAST_INGRESS_ENV.items():
    os.environ.setdefault(_k, _v)
# Ray Train's controller polls its workers every 2 s by default: each run (about 30 in the suite, most of them a few
# seconds of training) waits up to that long to see its workers finish or fail. The preemption watcher (an extra actor
# per worker group, for graceful node drains, which no test performs) competes with the workers for the 2 cores.
# Both travel from this process to every Ray Train run it or its CLI subprocesses start.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def _own_ports() -> None:
    """Test processes running side by side (``pytest -n 2``) must not pick the same ports: each takes its own slice of
    stocktrend.platform.ports' range, and its own HAProxy side ports (Ray's fixed 9101 and 8404, on every interface),
    which every endpoint it or its CLI subprocesses start inherits. tests/serve/test_leftovers.py and
    test_serve_config.py check the platform's handling of the fixed defaults themselves."""
    from stocktrend.platform import ports
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        n, i = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), int(worker[2:])
        span = (ports.HIGH - ports.LOW + 1) // max(n, 1)
        ports.LOW, ports.HIGH = ports.LOW + i * span, ports.LOW + (i + 1) * span - 1
    for var in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):
        os.environ.setdefault(var, str(ports.free_port("0.0.0.0")))


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the controller of `pytest -n N` runs no test: its workers, which inherit its environment, choose
    _own_ports()


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
    a module and again in the next module after a job-submit test (always last in its module) shut it down."""
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


@pytest.fixture(scope="session")
def planted_panel(tmp_path_factory):
    """A user data directory of 1,100 days whose tickers copy the market 5 days later from the first day (the loop's
    planted panel, tests/loop/test_loop_cli.py)."""
    from stocktrend.platform.data.synthetic import switching_signal_universe, write_directory
    from tests.cli import LOOP_DAYS
    return write_directory(switching_signal_universe(LOOP_DAYS, switch_day=0, seed=1),
                           tmp_path_factory.mktemp("loop-data") / "planted")


@pytest.fixture(scope="session")
def planted_home(planted_panel, tmp_path_factory):
    """A home whose registry holds the champion, version 1 in production, trained once per test run by `stocktrend
    train` (the lstm, tiny, 4 epochs) on the planted panel. Tests never change it: each works on its own copy
    (tests.cli.clone_home), since retrain, promote, score and serve write to a home."""
    from tests.cli import LOOP_TRAIN, cli_env, cli_ok
    home = tmp_path_factory.mktemp("planted-home") / "home"
    cli_ok(cli_env(home), *LOOP_TRAIN, "--data", str(planted_panel), timeout=600)
    return home
