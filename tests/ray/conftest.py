import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway local clusters (see ../shared/RAY_NOTES.md)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def _ray_session():
    import ray
    yield
    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """One local Ray instance shared by the in-process tests (2 CPUs, modest object store), started on first use
    and again after a test that had to stop it (``ray stop`` in the job-submit test)."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=True, log_to_driver=False)
    return ray
