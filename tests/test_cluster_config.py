"""cluster.yaml passes the Ray cluster launcher's own checks (what `ray up` runs before it starts anything)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(config))  # fills the provider's defaults, as `ray up` does
    validate_config(out)  # the launcher's JSON schema: unknown or misspelled keys fail
    return out


def test_cluster_yaml_passes_ray_validation(raw):
    cfg = prepared(raw)
    types = cfg["available_node_types"]
    head, workers = types[cfg["head_node_type"]], [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # members never run on the head
    assert any("--num-cpus=0" in cmd for cmd in cfg["head_start_ray_commands"])
    gpu = next(t for t in workers if t["node_config"]["InstanceType"].startswith(("g", "p")))
    assert 0 <= gpu["min_workers"] < gpu["max_workers"] <= cfg["max_workers"]
    # every node installs this project with its cluster extra from the mounted checkout
    assert "." in cfg["file_mounts"].values()
    assert any('install ".[cluster]"' in cmd for cmd in cfg["worker_setup_commands"])
    assert any('install ".[cluster]"' in cmd for cmd in cfg["head_setup_commands"])


def test_ray_validation_catches_a_misspelled_key(raw):
    import jsonschema

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        prepared(bad)


def test_cluster_extra_brings_job_submission():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'cluster = ["ray[default]' in pyproject
