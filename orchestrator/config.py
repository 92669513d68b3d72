"""Typed experiment config: pydantic models loaded from YAML, with dotted overrides.

`load_config(path, ["committee.members=8", "pretrain.max_steps=200"])` returns a validated
`ExperimentConfig`; any unknown key, wrong type or out-of-range value raises `ConfigError` naming the
dotted key. The same override code serves the CLI and Tune trials (`apply_overrides`).

Types are strict: an int field takes only a YAML integer (not `true`, not `2.5`), a float field takes an
integer or a float (not a boolean). Config files are read with `_ConfigLoader`, which refuses duplicate keys
and anchors/aliases (so loading and validation stay bounded) and reads `1e-3` as a float.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.errors import ConfigError


# The base seed leaves headroom under 2**31 - 1: member i uses seed + i, the deep model seed + 10_000.
MAX_BASE_SEED = 2**31 - 1 - 100_000
MAX_SEED = 2**32 - 1  # any other seed (numpy's generators take 32-bit seeds everywhere)
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    """Unknown keys are errors, values are immutable, and types are not coerced (`true` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Strict):
    root: str | None = Field(
        None, description="data root; default: $COMMITTEE_DATA, else ../shared/data when it exists"
    )


class TaskConfig(_Strict):
    name: Literal["ag_news", "dbpedia_14", "few_rel"] = Field("ag_news", description="classification task")
    train_per_class: int = Field(250, ge=1, description="fine-tuning examples per class")
    val_per_class: int = Field(50, ge=1, description="validation examples per class, carved from train")
    test_per_class: int | None = Field(
        None, ge=1, description="test examples per class from the test split; null = all"
    )
    max_length: int = Field(128, ge=8, le=512, description="tokens per example, [CLS] and [SEP] included")
    sample_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the per-class sampling (same for every member), in [0, 2^32 - 1]"
    )


class TokenizerConfig(_Strict):
    path: str | None = Field(None, description="an existing tokenizer directory; null = train one")
    vocab_size: int = Field(8000, ge=200, le=100_000, description="WordPiece vocabulary of a trained tokenizer")
    train_articles: int | None = Field(
        None, ge=1, description="articles the tokenizer is trained on; null = the pre-training corpus"
    )


class ModelConfig(_Strict):
    hidden_size: int = Field(128, ge=8, description="width (the paper: 64 x heads)")
    num_heads: int = Field(2, ge=1, description="attention heads; must divide hidden_size")
    num_layers: int = Field(1, ge=1, le=48, description="encoder layers of each member (BERT-1: 1)")
    intermediate_size: int | None = Field(None, ge=8, description="FFN width; null = 4 x hidden_size")
    max_position: int = Field(128, ge=8, le=4096, description="position embeddings (the paper: 128)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="hidden and attention dropout")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            )
        return self


class PretrainConfig(_Strict):
    articles: int = Field(500, ge=1, description="first N Wikipedia articles of the seeded order")
    order_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the article order; subsets nest for one seed; in [0, 2^32 - 1]"
    )
    mode: Literal["packed", "truncate"] = Field(
        "packed", description="packed: fixed-length blocks, articles joined by [SEP]; truncate: first seq_len tokens"
    )
    seq_len: int = Field(128, ge=8, le=4096, description="tokens per pre-training sequence")
    batch_size: int = Field(32, ge=1, description="sequences per pre-training step")
    max_steps: int = Field(200, ge=1, description="optimizer steps per member")
    lr: float = Field(5e-4, gt=0.0, le=1.0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (not on biases, LayerNorm)")
    warmup_steps: int = Field(20, ge=0, description="linear warm-up steps, then linear decay to 0")
    mask_prob: float = Field(0.15, gt=0.0, lt=1.0, description="share of non-special tokens chosen (80% [MASK], 10% random, 10% kept)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on CPU (AMX) or GPU")
    checkpoint_every: int = Field(100, ge=1, description="steps between member checkpoints")
    log_every: int = Field(10, ge=1, description="steps between progress reports")


class FinetuneConfig(_Strict):
    epochs: int = Field(3, ge=1, description="passes over the task's training examples")
    batch_size: int = Field(32, ge=1, description="examples per step (length-bucketed, padded per batch)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW peak learning rate (all weights trained)")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="share of steps in linear warm-up")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on CPU or GPU")


class CommitteeConfig(_Strict):
    members: int = Field(4, ge=1, le=1024, description="K pre-trained members")
    scratch: bool = Field(True, description="also fine-tune K non-pre-trained members (same seeds)")
    weight_temperature: float = Field(
        10.0, gt=0.0, description="T of the weighted vote: weights = softmax(val_accuracy% / T)"
    )


class DeepConfig(_Strict):
    enabled: bool = Field(True, description="also pre-train one deep model on the same corpus")
    num_layers: int = Field(6, ge=1, le=48, description="layers of the deep model (same width as members)")
    token_budget: Literal["member", "committee"] = Field(
        "member", description="pre-training tokens: as one member, or as the whole committee"
    )


class ResourcesConfig(_Strict):
    num_cpus_per_member: float = Field(1.0, gt=0.0, description="CPUs per member actor (torch threads)")
    gpus_per_member: float = Field(0.0, ge=0.0, description="fractional values let members share a GPU")
    placement: Literal["pack", "spread"] = Field(
        "pack", description="pack: as many members per node (and GPU) as fit; spread: members on distinct nodes "
        "where possible (both through one Ray placement group)"
    )
    placement_timeout_s: float = Field(
        60.0, gt=0.0, description="how long to wait for the members' resources (at the start, and after a node "
        "is lost) before failing with what was asked and what the cluster has"
    )
    max_parallel_members: int | None = Field(
        None, ge=1, description="members running at once (bundles of the placement group); null = as many as "
        "the cluster's alive nodes hold when the run starts (set it on an autoscaling cluster to grow it)"
    )


class StorageConfig(_Strict):
    uri: str | None = Field(
        None, pattern=r"^([a-z][a-z0-9+.-]*://|/)",
        description="where member checkpoints, weights and results go: null = <run dir>/members (on several "
        "nodes the run dir must be a path every node sees); an absolute shared path or a pyarrow.fs URI "
        "(s3://bucket/prefix, gs://..., file:///...) = <uri>/<run dir name>/members, and the report is copied "
        "to <uri>/<run dir name> at the end"
    )


class ExperimentConfig(_Strict):
    name: str = Field(
        "experiment", description="run name: letters, digits, '_', '.', '-', not starting with '.'; "
        "default run dir runs/<name>"
    )
    seed: int = Field(
        0, ge=0, le=MAX_BASE_SEED, description="base seed, in [0, 2^31 - 1 - 100000]: member i uses seed + i and "
        "the deep model seed + 10000, so the range leaves headroom for both"
    )
    data: DataConfig = DataConfig()
    task: TaskConfig = TaskConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    committee: CommitteeConfig = CommitteeConfig()
    deep: DeepConfig = DeepConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: StorageConfig = StorageConfig()

    @field_validator("name")
    @classmethod
    def _plain_run_name(cls, name: str) -> str:
        """The name becomes a directory (runs/<name>, <uri>/<name>), so it must not be a path or hidden."""
        problem = _run_name_problem(name)
        if problem:
            raise ValueError(f"run name {name!r} {problem}; use a plain name such as 'agnews-k8' "
                             "(letters, digits, '_', '.', '-', not starting with '.')")
        return name

    @model_validator(mode="after")
    def _lengths_fit_positions(self) -> "ExperimentConfig":
        for key, length in (("pretrain.seq_len", self.pretrain.seq_len), ("task.max_length", self.task.max_length)):
            if length > self.model.max_position:
                raise ValueError(f"{key} ({length}) exceeds model.max_position ({self.model.max_position})")
        return self


def _run_name_problem(name: str) -> str | None:
    """Why `name` is not a plain run-directory name, or None when it is."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", ".."):
        return "is a relative directory, not a name"
    if name.startswith("."):
        return "starts with '.' (a hidden directory)"
    if not RUN_NAME_PATTERN.match(name):
        return "has characters other than letters, digits, '_', '.', '-'"
    return None


# ----------------------------------------------------------------------------------------------
# YAML reading: no duplicate keys, no anchors or aliases


class _RefusedYaml(yaml.YAMLError):
    """YAML that parses but that a config refuses (duplicate key, anchor, alias); the text says where."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader for configs: duplicate keys and anchors/aliases are errors, `1e-3` is a float.

    Anchors and aliases are refused as soon as the composer meets one, so a small file cannot expand into
    a huge tree (nested aliases grow exponentially) and a config reads the same top to bottom.
    `_key_paths` maps a mapping node to its dotted key so a duplicate is named in full.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._key_paths: dict[int, str] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise _RefusedYaml(f"line {line}: alias '*{event.anchor}' - anchors and aliases are not allowed in "
                               "configs; write the value out in full")
        if getattr(event, "anchor", None) is not None:
            raise _RefusedYaml(f"line {line}: anchor '&{event.anchor}' - anchors and aliases are not allowed in "
                               "configs; write the value out in full")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._check_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """Refuse a key seen twice in one mapping (naming both lines) and `<<` merge keys."""
        prefix = self._key_paths.get(id(node), "")
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _RefusedYaml(f"line {line}: merge key '<<' is not allowed in configs; write the keys out")
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it
                continue
            dotted = f"{prefix}{key}"
            if seen is not None:
                raise _RefusedYaml(f"duplicate key '{dotted}' on line {seen} and line {line}; keep one")
            first_line[key] = line
            self._key_paths[id(value_node)] = dotted + "."


# YAML 1.1 reads `1e-3` (no dot) as a string; a config means the number, as YAML 1.2 does.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _yaml_load(text: str) -> Any:
    """Parse `text` with `_ConfigLoader` (raises yaml.YAMLError, `_RefusedYaml` included)."""
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------------------------
# loading, overrides, errors


def _parse_value(item: str, text: str) -> Any:
    """A command-line value, parsed as YAML: `8` -> 8, `true` -> True, `null` -> None, `a` -> 'a'.

    Text that is not YAML stays a string (validation then names the key); refused YAML is an error.
    """
    try:
        return _yaml_load(text)
    except _RefusedYaml as exc:
        raise ConfigError(f"override '{item}': {exc}") from None
    except yaml.YAMLError:
        return text


def _model_for(path: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentConfig
    for key in path:
        field = model.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _unknown_key_message(dotted: str) -> str:
    parts = dotted.split(".")
    parent = _model_for(parts[:-1])
    valid = sorted(parent.model_fields) if parent else []
    hint = difflib.get_close_matches(parts[-1], valid, n=1)
    msg = f"unknown config key '{dotted}'"
    if hint:
        msg += f" (did you mean '{'.'.join(parts[:-1] + hint)}'?)"
    if valid:
        where = ".".join(parts[:-1]) or "the top level"
        msg += f"; valid keys in {where}: {', '.join(valid)}"
    return msg


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` applied (the value parsed as YAML)."""
    out = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. committee.members=8)")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        if not dotted:
            raise ConfigError(f"override '{item}' has an empty key")
        set_dotted(out, dotted, _parse_value(item, text))
    return out


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for key in parts[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{key}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def validate_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None


def _format_validation(exc: ValidationError, source: str) -> str:
    """One line per error, each naming the dotted key; our own validators' messages already quote the value."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {_unknown_key_message(dotted)}")
        elif err["type"] == "value_error":
            lines.append(f"  - {dotted or 'config'}: {err['ctx']['error']}")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            where = dotted or "config"
            lines.append(f"  - {where}: {err['msg']}{got_text}")
    return "\n".join(lines)


def load_raw(path: str | Path) -> dict[str, Any]:
    """The config file's mapping, as parsed: refused when not YAML, not a non-empty mapping, or when it
    repeats a key or uses anchors/aliases (an empty file would otherwise mean "all defaults")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = _yaml_load(path.read_text())
    except _RefusedYaml as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        got = "an empty mapping" if isinstance(raw, dict) else f"{raw!r}"
        raise ConfigError(f"{path} must be a non-empty mapping of config keys (got {got}); see configs/ "
                          "for examples")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate_dict(raw, source=str(path))


class _PlainDumper(yaml.SafeDumper):
    """Never writes anchors/aliases, which `load_raw` refuses."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML that `load_config` reads back to an equal config."""
    return yaml.dump(cfg.model_dump(mode="json"), Dumper=_PlainDumper, sort_keys=False)


def describe_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf: the README's config reference is made from it."""
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, dotted + "."))
        else:
            rows.append((dotted, repr(field.default), field.description or ""))
    return rows


def reference_table() -> str:
    """The README's config reference, as a markdown table (`python -m orchestrator.config`)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | `{default}` | {text} |" for key, default, text in describe_fields()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
