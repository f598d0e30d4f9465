"""cluster.yaml is checked offline with Ray's own config validation (no cloud call)."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_is_valid():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate(cfg)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("pip install -e" in c for c in cfg["setup_commands"])


def test_validation_catches_a_typo():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["cpu_worker"]["max_worker"] = 2  # typo of max_workers
    with pytest.raises(Exception, match="Additional properties are not allowed"):
        validate(cfg)
