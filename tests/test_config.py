"""Config loading: every shipped config validates, and bad input fails naming the key."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from orchestrator.config.claims import load_claims_config
from orchestrator.config.commands import to_yaml
from orchestrator.config.distill import load_distill_config
from orchestrator.config.experiment import MAX_BASE_SEED, ExperimentConfig, load_config, validate_dict
from orchestrator.config.loader import PlainDumper, apply_overrides, load_raw
from orchestrator.config.reference import describe_fields
from orchestrator.config.sweep import load_sweep_config
from workers.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_names_its_command(path):
    distill = "distill" in load_raw(path)  # `committee distill` configs: an experiment plus a distill: section
    sweep = "sweep" in load_raw(path)  # `committee sweep` configs: an experiment plus a sweep: section
    claims = "claims" in load_raw(path)  # `committee claims` suites: an experiment plus a claims: section
    if claims:
        cfg = load_claims_config(path).experiment
    elif sweep:
        cfg = load_sweep_config(path).experiment
    else:
        cfg = load_distill_config(path) if distill else load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# committee ") and path.name in first, "a config opens with the command that runs it"
    if distill:
        assert first.startswith("# committee distill ")
        with pytest.raises(ConfigError, match="unknown config key 'distill'.*committee distill"):
            load_config(path)  # `committee run` refuses the distill: section
    if claims:
        assert first.startswith("# committee claims ")
        with pytest.raises(ConfigError, match="unknown config key 'claims'.*committee claims"):
            load_config(path)  # `committee run` refuses the claims: section
    if sweep:
        assert first.startswith("# committee sweep ")
        with pytest.raises(ConfigError, match="unknown config key 'sweep'.*committee sweep"):
            load_config(path)  # `committee run` refuses the sweep: section


def test_required_presets_hold_their_settings():
    """The presets the docs name exist and hold what the docs say of them; the paper configs the authors' shapes
    and recipe (BERT-1 hidden 768 / 12 heads against BERT-6, seq 128 truncated, batch 32, AdamW 5e-5 for 50 epochs,
    the per-class sizes of each task)."""
    smoke, quick = load_config(REPO / "configs/smoke.yaml"), load_config(REPO / "configs/quickstart.yaml")
    assert (smoke.committee.members, smoke.deep.enabled, smoke.deep.num_layers, smoke.task.name) == (2, True, 2, "ag_news")
    assert (quick.committee.members, quick.model.hidden_size, quick.pretrain.max_steps * quick.pretrain.batch_size
            * quick.pretrain.seq_len, quick.deep.enabled) == (2, 128, 10_240_000, False)
    assert (quick.task.train_per_class, quick.task.val_per_class, quick.task.test_per_class, quick.finetune.epochs) \
        == (30, 500, None, 60), "the quickstart: scarce labels, tested on the full AG News test split"
    sizes = {"paper_agnews": ("ag_news", 1000), "paper_dbpedia": ("dbpedia_14", 100), "paper_fewrel": ("few_rel", 560)}
    for name, (task, train_per_class) in sizes.items():
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert (cfg.task.name, cfg.task.train_per_class) == (task, train_per_class), name
        m, p, f = cfg.model, cfg.pretrain, cfg.finetune
        assert (m.hidden_size, m.num_heads, m.num_layers, m.max_position, cfg.deep.num_layers) == (768, 12, 1, 128, 6)
        assert (p.mode, p.seq_len, p.batch_size, p.lr, p.weight_decay, p.mask_prob) == ("truncate", 128, 32, 5e-5, 0.01, 0.15)
        assert (f.epochs, f.batch_size, f.lr) == (50, 32, 5e-5), name
        assert p.max_steps * p.batch_size == 50 * p.articles, "50 epochs over the articles"


def test_header_commands_of_committee_vs_deep_can_take_its_pre_training():
    """The other tasks' commands in the preset's header change nothing that shapes pre-training (else
    --pretrained-from would refuse them), and they do change the task."""
    import shlex

    from orchestrator.run.pretrained_from import pretraining_differences

    path = REPO / "configs" / "committee_vs_deep.yaml"
    header = " ".join(line.lstrip("# ").rstrip("\\ ") for line in path.read_text().splitlines() if line.startswith("#"))
    commands = [c for c in header.split("committee run configs/committee_vs_deep.yaml")[1:] if "--pretrained-from" in c]
    assert len(commands) == 2
    base = load_config(path)
    for command in commands:
        overrides = [a for a in shlex.split(command.split("--pretrained-from")[0]) if "=" in a]
        other = load_config(path, overrides)
        assert other.task.name != base.task.name and other.name != base.name
        assert pretraining_differences(other, base) == []
    assert pretraining_differences(load_config(path, ["pretrain.lr=0.002"]), base) == [("pretrain.lr", 0.002, 0.001)]


def test_paper_presets_have_the_paper_shapes():
    for name, task in (("paper_agnews", "ag_news"), ("paper_dbpedia", "dbpedia_14"), ("paper_fewrel", "few_rel")):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.task.name == task
        assert (cfg.model.hidden_size, cfg.model.num_heads, cfg.model.num_layers) == (768, 12, 1)
        assert cfg.deep.enabled and cfg.deep.num_layers == 6
        assert cfg.pretrain.seq_len == 128 and cfg.pretrain.mode == "truncate"
        assert cfg.tokenizer.vocab == "bert-base-uncased" and cfg.tokenizer.path is None  # the authors' vocabulary


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
    cfg = load_config(REPO / "configs/quickstart.yaml", ["seed=7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_every_leaf_is_described():
    rows = describe_fields()
    assert {"committee.members", "pretrain.articles", "resources.gpus_per_member"} <= {r[0] for r in rows}


def _cli(*args, env=None):
    return run_cli(*args, timeout=120, env=env)


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


# ----------------------------------------------------------------------------------------------
# what the loader refuses


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[]\n", "0\n", "false\n", '""\n', "{}\n", "- name: x\n"])
def test_a_config_that_is_not_a_non_empty_mapping_is_refused(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="must be a non-empty mapping of config keys.*see configs/"):
        load_config(path)


def test_duplicate_keys_are_refused_naming_the_dotted_key_and_both_lines(tmp_path):
    path = _write(tmp_path, "name: x\ncommittee:\n  members: 2\n  scratch: false\n  members: 3\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'committee\.members' on line 3 and line 5"):
        load_config(path)
    path = _write(tmp_path, "seed: 1\nname: x\nseed: 2\n", name="top.yaml")
    with pytest.raises(ConfigError, match=r"duplicate key 'seed' on line 1 and line 3"):
        load_raw(path)


def test_same_key_in_different_sections_is_not_a_duplicate(tmp_path):
    path = _write(tmp_path, "name: x\npretrain:\n  lr: 1.0e-3\nfinetune:\n  lr: 2.0e-3\n")
    cfg = load_config(path)
    assert (cfg.pretrain.lr, cfg.finetune.lr) == (pytest.approx(1e-3), pytest.approx(2e-3))


def _alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    """About 1 KB of nested aliases that expands to fanout**levels strings (387 million for 9 x 9)."""
    lines = ["name: bomb", "a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * fanout) + "]")
    lines.append(f"seed: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_its_first_anchor_within_two_seconds(tmp_path):
    text = _alias_bomb()
    assert len(text) < 1500
    path = _write(tmp_path, text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"line 2: anchor '&a0'.*not allowed"):
        load_config(path)
    assert time.perf_counter() - started < 2.0


def test_aliases_and_merge_keys_are_refused_naming_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line 3: alias '\*s'"):
        load_raw(_write(tmp_path, "name: x\n\nseed: *s\n", name="alias.yaml"))
    with pytest.raises(ConfigError, match=r"line 2: merge key '<<'"):
        load_raw(_write(tmp_path, "committee:\n  <<: {members: 2}\n", name="merge.yaml"))


def test_the_shared_safe_loader_is_left_as_it_was():
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}
    assert yaml.safe_load("1e-3") == "1e-3"
    assert yaml.safe_load("x: &a 1\ny: *a\n") == {"x": 1, "y": 1}


@pytest.mark.parametrize("override, key", [
    ("committee.members=true", "committee.members"),
    ("committee.members=2.5", "committee.members"),
    ("committee.members=2.0", "committee.members"),
    ("task.test_per_class=true", "task.test_per_class"),
    ("pretrain.lr=true", "pretrain.lr"),
    ("resources.gpus_per_member=false", "resources.gpus_per_member"),
    ("committee.scratch=1", "committee.scratch"),
])
def test_types_are_strict_no_bools_as_numbers_no_floats_as_ints(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": Input should be a valid"):
        load_config(REPO / "configs/smoke.yaml", [override])


def test_strict_types_still_take_yaml_ints_and_ints_for_floats(tmp_path):
    cfg = load_config(REPO / "configs/smoke.yaml",
                      ["committee.members=8", "resources.gpus_per_member=1", "pretrain.lr=1e-3", "model.dropout=0"])
    assert cfg.committee.members == 8 and isinstance(cfg.committee.members, int)
    assert cfg.resources.gpus_per_member == 1.0 and isinstance(cfg.resources.gpus_per_member, float)
    assert cfg.pretrain.lr == pytest.approx(1e-3) and cfg.model.dropout == 0.0
    path = _write(tmp_path, "name: x\ncommittee:\n  members: true\n")
    with pytest.raises(ConfigError, match=r"committee\.members.*got True"):
        load_config(path)


@pytest.mark.parametrize("override, key", [
    ("seed=-1", "seed"),
    (f"seed={MAX_BASE_SEED + 1}", "seed"),
    ("task.sample_seed=-1", "task.sample_seed"),
    (f"task.sample_seed={2**32}", "task.sample_seed"),
    ("pretrain.order_seed=-7", "pretrain.order_seed"),
    (f"pretrain.order_seed={2**32}", "pretrain.order_seed"),
])
def test_seeds_out_of_range_fail_at_load_time(override, key):
    with pytest.raises(ConfigError, match=rf"- {key.replace('.', r'[.]')}: Input should be"):
        load_config(REPO / "configs/smoke.yaml", [override])


def test_seed_bounds_are_accepted_and_leave_headroom_for_derived_seeds():
    cfg = load_config(REPO / "configs/smoke.yaml",
                      [f"seed={MAX_BASE_SEED}", f"task.sample_seed={2**32 - 1}", f"pretrain.order_seed={2**32 - 1}"])
    assert cfg.seed + 10_000 + 1024 < 2**31 - 1
    assert cfg.task.sample_seed == cfg.pretrain.order_seed == 2**32 - 1
    described = {key: text for key, _, text in describe_fields()}
    assert "seed + i" in described["seed"] and "10000" in described["seed"]


@pytest.mark.parametrize("name, why", [
    ("a/b", "path separator"), ("a\\b", "path separator"), ("/abs", "path separator"), (".", "relative directory"),
    ("..", "relative directory"), ("", "empty"), (".hidden", "starts with '.'"), ("a b", "characters other than"),
])
def test_run_name_must_be_a_plain_name(name, why):
    with pytest.raises(ConfigError, match=rf"- name: run name .*{re.escape(why)}"):
        validate_dict({"name": name})


def test_plain_run_names_are_accepted():
    for name in ("experiment", "agnews-k8", "run_1.v2", "_tmp", "2024-05-run"):
        assert validate_dict({"name": name}).name == name


def test_a_run_name_yaml_reads_as_an_integer_is_its_decimal_text(tmp_path):
    cfg = load_config(_write(tmp_path, "name: 2024\n"))
    assert cfg.name == "2024"
    assert load_config(_write(tmp_path, to_yaml(cfg), name="again.yaml")).name == "2024"  # written back quoted
    assert load_config(REPO / "configs/smoke.yaml", ["name=2024"]).name == "2024"
    assert load_distill_config(REPO / "configs/distill_smoke.yaml", ["name=7"]).name == "7"
    with pytest.raises(ConfigError, match=r"- name: run name '-5' has characters other than"):
        load_config(REPO / "configs/smoke.yaml", ["name=-5"])  # the decimal text still passes the name checks


def test_integers_read_as_yaml_1_2_reads_them_and_leading_zeros_stay_text(tmp_path):
    raw = load_raw(_write(tmp_path, "a: 012\nb: 0x1F\nc: 0o17\nd: 1:30\ne: -5\nf: 0\ng: 1_000\n"))
    assert raw == {"a": "012", "b": 31, "c": 15, "d": "1:30", "e": -5, "f": 0, "g": 1000}  # YAML 1.1: 10, 90
    cfg = load_config(_write(tmp_path, "name: 0012\n", name="zeros.yaml"))
    assert cfg.name == "0012"
    assert load_config(_write(tmp_path, to_yaml(cfg), name="again.yaml")).name == "0012"  # written back quoted
    assert load_config(REPO / "configs/smoke.yaml", ["name=0o17"]).name == "15"
    with pytest.raises(ConfigError, match=r"seed: Input should be a valid integer"):
        load_config(REPO / "configs/smoke.yaml", ["seed=012"])  # not silently octal 10


def test_text_the_config_loader_reads_as_a_number_is_written_back_in_quotes(tmp_path):
    values = {"a": "0o17", "b": "1e-3", "c": "0012", "d": "1:30", "e": "12", "f": 12, "g": 1e-3}
    path = tmp_path / "back.yaml"
    path.write_text(yaml.dump(values, Dumper=PlainDumper))
    assert load_raw(path) == values


@pytest.mark.parametrize("value, kind", [
    ("2.5", "a float"), ("true", "a boolean"), ("yes", "a boolean"), ("[a, b]", "a list"), ("null", "null"),
    ("{a: 1}", "a mapping"),
])
def test_a_run_name_that_is_neither_text_nor_an_integer_is_refused(tmp_path, value, kind):
    with pytest.raises(ConfigError, match=rf"- name: run name .* is {kind}, not text; give the name as text, in quotes"):
        load_config(_write(tmp_path, f"name: {value}\n"))
    with pytest.raises(ConfigError, match=rf"- name: run name .* is {kind}, not text"):
        load_config(REPO / "configs/smoke.yaml", [f"name={value}"])


def test_cli_duplicate_key_exits_2_without_traceback(tmp_path):
    path = _write(tmp_path, "name: x\ncommittee:\n  members: 2\n  members: 3\n")
    proc = _cli("show-config", str(path))
    assert proc.returncode == 2
    assert "duplicate key 'committee.members' on line 3 and line 4" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
