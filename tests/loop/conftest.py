import pytest


@pytest.fixture
def three_versions(tmp_path, monkeypatch):
    """A fresh home whose registry has model ``m`` with versions 1-3, version 1 in production; yields the client."""
    from stocktrend.platform.registry import mlflow_registry as registry
    monkeypatch.setenv("STOCKTREND_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    c = registry.client()
    c.create_registered_model("m")
    for _ in range(3):
        c.create_model_version("m", source=str(tmp_path), run_id=None)
    registry.promote("m", 1)
    return c
