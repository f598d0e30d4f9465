"""Every cluster launcher file at the root is checked offline with Ray's own config validation (no cloud call)."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(ROOT.glob("cluster*.yaml"))


def validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_both_cluster_files_exist():
    assert {p.name for p in FILES} >= {"cluster.yaml", "cluster-onprem.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_cluster_file_is_valid(path):
    cfg = load(path)
    prepared = validate(cfg)
    commands = [*prepared.get("setup_commands", []),
                *(c for t in prepared.get("available_node_types", {}).values()
                  for c in t.get("worker_setup_commands", []))]
    assert any("pip install -e /home/ubuntu/stocktrend" in c for c in commands)
    assert any("torch==2.13.0" in c for c in commands)
    start = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    for var in ("STOCKTREND_STORAGE=", "MLFLOW_TRACKING_URI=", "mlflow server"):
        assert var in start
    # Ray token authentication on every node, the launcher's token file copied to each (issue 37)
    starts = [c for c in prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert prepared["file_mounts"].get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"


def test_aws_file_has_cpu_head_cpu_and_gpu_workers_and_s3():
    cfg = load(ROOT / "cluster.yaml")
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["cpu_worker"]["node_config"]["InstanceType"].startswith("m6i")
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g5", "g6", "p3", "p4"))
    for t in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[t]["min_workers"] <= types[t]["max_workers"]
    gpu_setup = " ".join(types["gpu_worker"]["worker_setup_commands"])
    assert "download.pytorch.org/whl/cpu" not in gpu_setup  # GPU nodes get the CUDA build
    assert "s3://" in " ".join(cfg["head_start_ray_commands"])


def test_onprem_file_uses_the_local_provider_without_node_types():
    cfg = load(ROOT / "cluster-onprem.yaml")
    assert cfg["provider"]["type"] == "local" and cfg["provider"]["worker_ips"]
    assert "available_node_types" not in cfg


TYPOS = [
    ("cluster.yaml", lambda c: c["available_node_types"]["cpu_worker"].update(max_worker=2)),
    ("cluster.yaml", lambda c: c.update(setup_comands=c.pop("setup_commands"))),
    ("cluster.yaml", lambda c: c["available_node_types"]["gpu_worker"].update(resources={"GPU": "one"})),
    ("cluster-onprem.yaml", lambda c: c.update(head_start_ray_command=c.pop("head_start_ray_commands"))),
    ("cluster-onprem.yaml", lambda c: c["auth"].update(ssh_usr="ubuntu")),
]


@pytest.mark.parametrize("name,mutate", TYPOS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TYPOS)])
def test_validation_fails_on_a_typo(name, mutate):
    cfg = load(ROOT / name)
    mutate(cfg)
    with pytest.raises(Exception, match="Additional properties are not allowed|is not of type|is not valid"):
        validate(cfg)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_ray_start_selects_the_haproxy_ingress_and_a_fixed_metrics_port(path):
    """The ingress is read from the environment when Ray starts on a node, so every `ray start` must carry it."""
    cfg = load(path)
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for c in starts:
        assert "RAY_SERVE_ENABLE_HA_PROXY=1" in c and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in c, c
        assert "--metrics-export-port=8080" in c, c
