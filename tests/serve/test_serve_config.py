import copy
from pathlib import Path

import pytest
import yaml

from stocktrend.serve.app import app_builder
from stocktrend.serve.config import validate_serve_config

ROOT = Path(__file__).resolve().parents[2]
CFG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def test_serve_config_validates():
    validate_serve_config(CFG)
    assert CFG["applications"][0]["import_path"] == "stocktrend.serve.app:app_builder"


@pytest.mark.parametrize("mutate,where", [
    (lambda c: c.update(aplications=[]), "top level"),
    (lambda c: c["http_options"].update(prot=8000), "http_options"),
    (lambda c: c["applications"][0].update(import_pth="x"), "application stocktrend"),
    (lambda c: c["applications"][0]["args"].update(max_replica=3), "unknown arg"),
])
def test_a_typo_fails(mutate, where):
    cfg = copy.deepcopy(CFG)
    mutate(cfg)
    with pytest.raises(ValueError, match=where):
        validate_serve_config(cfg)


def test_app_builder_reads_the_config_args():
    app = app_builder(CFG["applications"][0]["args"])
    dep = app._bound_deployment
    assert dep.user_config["model"] == "stocktrend@production"
    assert dep._deployment_config.autoscaling_config.max_replicas == 4
    assert dep._deployment_config.max_queued_requests == 64
    assert dep._deployment_config.autoscaling_config.look_back_period_s == 30  # Serve's default window
    quick = app_builder({**CFG["applications"][0]["args"], "look_back_period_s": 5})._bound_deployment
    assert quick._deployment_config.autoscaling_config.look_back_period_s == 5
    with pytest.raises(ValueError, match="unknown app_builder arg"):
        app_builder({"modle": "x"})


def test_serve_build_writes_a_valid_config(tmp_path):
    """`serve build stocktrend.serve.app:app` (Ray's CLI, offline) produces a config our validator and Ray accept."""
    import subprocess
    import sys
    out = tmp_path / "built.yaml"
    serve_cli = str(Path(sys.executable).parent / "serve")
    r = subprocess.run([serve_cli, "build", "stocktrend.serve.app:app", "-o", str(out)], capture_output=True,
                       text=True, timeout=120, env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled"})
    assert r.returncode == 0, r.stderr[-2000:]
    built = yaml.safe_load(out.read_text())
    validate_serve_config(built)
    dep = built["applications"][0]["deployments"][0]
    assert dep["user_config"]["model"] == "stocktrend@production"
    assert dep["max_queued_requests"] == 64 and dep["autoscaling_config"]["max_replicas"] == 2


def test_a_second_endpoint_on_the_host_gets_free_haproxy_side_ports(monkeypatch):
    """Ray's HAProxy binds its metrics (9101) and stats (8404) ports on 0.0.0.0: with them taken (another endpoint on
    this host), the platform picks free ones for the Ray instance it is about to start; a user's choice is kept."""
    import os
    import socket

    from stocktrend.platform.ports import free_port
    from stocktrend.serve import ingress
    # Two ports this test holds stand for the defaults (holding the real 9101 / 8404 would crash the HAProxy of an
    # endpoint another test process starts meanwhile).
    monkeypatch.setattr(ingress, "HAPROXY_SIDE_PORTS", {"RAY_SERVE_HAPROXY_METRICS_PORT": free_port("0.0.0.0"),
                                                        "RAY_SERVE_HAPROXY_STATS_PORT": free_port("0.0.0.0")})
    held = []
    for port in ingress.HAPROXY_SIDE_PORTS.values():
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", port))
            s.listen()
            held.append(s)
        except OSError:
            s.close()  # already taken by something else: just as good for this test
    try:
        monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_PORT", raising=False)
        monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
        ingress._free_haproxy_ports()
        metrics = int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"])
        assert metrics != ingress.HAPROXY_SIDE_PORTS["RAY_SERVE_HAPROXY_METRICS_PORT"] and metrics > 0
        assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"  # the user's choice stays
    finally:
        for s in held:
            s.close()
