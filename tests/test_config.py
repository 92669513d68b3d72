"""Config loading: every shipped config validates, and bad input fails naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import ExperimentConfig, apply_overrides, describe_fields, load_config, load_raw
from workers.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_names_its_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# committee ") and path.name in first, "a config opens with the command that runs it"


def test_required_presets_exist():
    names = {p.name for p in CONFIGS}
    assert {"smoke.yaml", "quickstart.yaml", "paper_agnews.yaml", "paper_dbpedia.yaml", "paper_fewrel.yaml"} <= names


def test_paper_presets_have_the_paper_shapes():
    for name, task in (("paper_agnews", "ag_news"), ("paper_dbpedia", "dbpedia_14"), ("paper_fewrel", "few_rel")):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.task.name == task
        assert (cfg.model.hidden_size, cfg.model.num_heads, cfg.model.num_layers) == (768, 12, 1)
        assert cfg.deep.enabled and cfg.deep.num_layers == 6
        assert cfg.pretrain.seq_len == 128 and cfg.pretrain.mode == "truncate"
        assert cfg.tokenizer.vocab_size == 30522


def test_overrides_are_parsed_as_yaml_values():
    cfg = load_config(REPO / "configs/smoke.yaml",
                      ["committee.members=8", "deep.enabled=false", "pretrain.lr=2e-3", "task.test_per_class=null"])
    assert cfg.committee.members == 8 and cfg.deep.enabled is False
    assert cfg.pretrain.lr == pytest.approx(2e-3) and cfg.task.test_per_class is None


def test_unknown_key_is_named_with_a_suggestion_and_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs/smoke.yaml", ["committee.membrs=3"])
    msg = str(err.value)
    assert "committee.membrs" in msg and "committee.members" in msg and "weight_temperature" in msg


def test_unknown_top_level_section(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ncomitee:\n  members: 2\n")
    with pytest.raises(ConfigError, match="unknown config key 'comitee'.*committee"):
        load_config(path)


@pytest.mark.parametrize("override, key", [
    ("committee.members=0", "committee.members"),
    ("pretrain.mask_prob=1.5", "pretrain.mask_prob"),
    ("pretrain.max_steps=many", "pretrain.max_steps"),
    ("task.name=imdb", "task.name"),
    ("model.num_heads=3", "hidden_size"),
    ("pretrain.seq_len=512", "pretrain.seq_len"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(REPO / "configs/smoke.yaml", [override])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["committee.members"])
    with pytest.raises(ConfigError, match="not found"):
        load_raw(tmp_path / "missing.yaml")


def test_config_round_trips_through_yaml(tmp_path):
    from orchestrator.config import to_yaml

    cfg = load_config(REPO / "configs/quickstart.yaml", ["seed=7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_every_leaf_is_described():
    rows = describe_fields()
    assert {"committee.members", "pretrain.articles", "resources.gpus_per_member"} <= {r[0] for r in rows}


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)


def test_cli_bad_config_exits_2_without_traceback():
    proc = _cli("show-config", "configs/smoke.yaml", "pretrain.max_stepz=5")
    assert proc.returncode == 2
    assert "pretrain.max_stepz" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_cli_show_config_applies_overrides():
    proc = _cli("show-config", "configs/smoke.yaml", "committee.members=5")
    assert proc.returncode == 0, proc.stderr
    assert "members: 5" in proc.stdout


def test_cli_missing_data_root_says_where_it_looked(tmp_path):
    import os

    env = {**os.environ, "COMMITTEE_DATA": str(tmp_path / "nowhere")}
    proc = _cli("validate", "configs/smoke.yaml", env=env)
    assert proc.returncode == 2
    assert str(tmp_path / "nowhere") in proc.stderr and "committee data pull" in proc.stderr
    assert "Traceback" not in proc.stderr
