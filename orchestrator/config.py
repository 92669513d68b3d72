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
from typing import Annotated, Any, Literal

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


TASK_PRESETS = ("ag_news", "dbpedia_14", "few_rel")
# the task's dataset fields and their defaults: a preset (no dataset) brings its own
_TASK_DATASET_DEFAULTS = {"dataset_config": None, "text_column": "text", "label_column": "label", "label_names": None,
                          "train_split": "train", "test_split": "test", "validation_split": None}


class TaskConfig(_Strict):
    name: str = Field("ag_news", min_length=1, description="with no dataset: a preset read from the data root "
                      "(ag_news, dbpedia_14, few_rel); with your own dataset: its name in the report")
    dataset: str | None = Field(
        None, description="your own data: a Hugging Face hub id (read from the local cache when HF_HUB_OFFLINE=1), "
        "a save_to_disk folder, or a folder of split files (train.csv, test.jsonl, ...); null = the preset name"
    )
    dataset_config: str | None = Field(None, description="the hub dataset's configuration name")
    data_files: dict[str, str | list[str]] | None = Field(
        None, description="your own data as local files per split, e.g. {train: a.csv, test: b.csv} (csv, json, "
        "jsonl, parquet; paths from the working directory)"
    )
    text_column: str | list[str] = Field(
        "text", description="the text column, or a list of columns joined by a space (as DBpedia joins title and "
        "content)"
    )
    label_column: str = Field("label", description="integer class ids or string class names")
    label_names: list[str] | None = Field(
        None, description="class names in id order; null = from the data: a ClassLabel's names, integer ids as "
        "found, or string names sorted"
    )
    train_split: str = Field("train", description="split of the training examples (validation is carved from it)")
    test_split: str = Field("test", description="split of the test examples")
    validation_split: str | None = Field(
        None, description="validation examples from this split instead of carved from train"
    )
    train_per_class: int = Field(250, ge=1, description="fine-tuning examples per class")
    val_per_class: int = Field(50, ge=1, description="validation examples per class, carved from train (or drawn "
                               "from task.validation_split)")
    test_per_class: int | None = Field(
        None, ge=1, description="test examples per class from the test split; null = all"
    )
    max_length: int = Field(128, ge=8, le=512, description="tokens per example, [CLS] and [SEP] included")
    sample_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the per-class sampling (same for every member), in [0, 2^32 - 1]"
    )

    @model_validator(mode="after")
    def _preset_or_own_dataset(self) -> "TaskConfig":
        if self.dataset is not None and self.data_files is not None:
            raise ValueError("give task.dataset or task.data_files, not both")
        if self.dataset is None and self.data_files is None:
            if self.name not in TASK_PRESETS:
                raise ValueError(f"task.name {self.name!r} is not a preset ({', '.join(TASK_PRESETS)}); to use your "
                                 "own data set task.dataset or task.data_files (see docs/own_data.md)")
            changed = [k for k, default in _TASK_DATASET_DEFAULTS.items() if getattr(self, k) != default]
            if changed:
                raise ValueError(f"task.{changed[0]} describes your own dataset, but the preset {self.name} brings "
                                 "its own; set task.dataset or task.data_files, or leave it out")
            return self
        if self.name in TASK_PRESETS:
            raise ValueError(f"task.name {self.name!r} is a preset's name; give your own dataset a name of its own "
                             "(e.g. task.name=my_task)")
        columns = [self.text_column] if isinstance(self.text_column, str) else self.text_column
        if not columns or len(set(columns)) != len(columns):
            raise ValueError(f"task.text_column needs one column or a list of distinct columns (got {columns})")
        if self.label_names is not None and (len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names)):
            raise ValueError(f"task.label_names needs at least two distinct names (got {self.label_names})")
        return self


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


class CorpusConfig(_Strict):
    dataset: str | None = Field(
        None, description="null = the data root's Wikipedia shards; else a folder of .txt files (one document per "
        "file), a local parquet/jsonl/json/csv file, a folder of split files, a save_to_disk folder, or a hub id"
    )
    dataset_config: str | None = Field(None, description="the hub dataset's configuration name")
    split: str = Field("train", description="the split holding the documents")
    text_column: str = Field("text", description="the column holding each document's text")


class PretrainConfig(_Strict):
    articles: int = Field(500, ge=1, description="first N documents (Wikipedia articles) of the seeded order")
    corpus: CorpusConfig = Field(CorpusConfig(), description="the pre-training corpus")
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
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast where the member's hardware runs bf16 natively (a GPU with bf16, "
        "a CPU with AMX or AVX-512 BF16), else fp32; resolved where the member runs, reported in report.md"
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between member checkpoints")
    log_every: int = Field(10, ge=1, description="steps between progress reports")


class FinetuneConfig(_Strict):
    epochs: int = Field(3, ge=1, description="passes over the task's training examples")
    batch_size: int = Field(32, ge=1, description="examples per step (length-bucketed, padded per batch)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW peak learning rate (all weights trained)")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="share of steps in linear warm-up")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="as pretrain.precision, for fine-tuning and prediction"
    )


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
    members_per_actor: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="members one actor trains as one stacked model (weights on a member axis, batched "
        "matmuls); the actor asks for the sum of its members' resources; auto: 1 on CPU, on GPU as many as "
        "fit one GPU's share and memory (docs/groups.md)"
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


# ----------------------------------------------------------------------------------------------
# `committee distill`: an experiment config plus a `distill:` section (`load_distill_config`)

DISTILL_METHODS = ("random_hard", "random_single", "random_equal", "random_prior", "selected_prior", "recover",
                   "recover_single", "full")
# the methods whose labels or guidance come from two or more members
COMMITTEE_METHODS = ("random_equal", "random_prior", "selected_prior", "recover")


class StudentConfig(_Strict):
    init: Literal["pretrained", "scratch"] = Field(
        "pretrained", description="pretrained: the encoder of a non-member, pre-trained like a member with seed "
        "seed + committee.members (outside the committee), head drawn per student seed; scratch: random weights"
    )
    num_layers: int | None = Field(None, ge=1, le=48, description="student layers; null = model.num_layers (the "
                                   "committee's shape)")
    seeds: int = Field(3, ge=3, le=100, description="students per distilled set (seeds distill.seed + 0..n-1): "
                       "the report gives mean and std over them")
    steps: int = Field(300, ge=1, description="optimizer steps of every student, whatever the size of its set; "
                       "test accuracy is measured once, after the last step")
    batch_size: int = Field(32, ge=1, description="examples per student step (the whole set when smaller)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW peak learning rate of the students")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay of the students")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="share of student steps in linear warm-up")
    temperature: float = Field(20.0, gt=0.0, description="T of the soft-label loss: KL divergence of the "
                               "student's log_softmax(logits / T) from the teacher's softmax(logits / T), batchmean "
                               "(hard labels: cross-entropy)")


class RecoverConfig(_Strict):
    iterations: int = Field(200, ge=1, description="Adam steps (betas 0.5, 0.9; cosine schedule) of CV-DD's recover")
    lr: float = Field(0.25, gt=0.0, le=10.0, description="recover learning rate on the per-position token logits")
    stats_weight: float = Field(0.01, ge=0.0, description="weight of the hidden-state mean/variance match "
                                "against the CE term (CV-DD's r_bn)")
    temperature: float = Field(5.0, gt=0.0, description="T of the guiding pair's weights softmax(val_accuracy% / T)")
    init_probability: float = Field(0.9, gt=0.0, lt=1.0, description="probability a position gives its real "
                                    "token at the start (the rest spread over the vocabulary)")
    keep_top: int = Field(32, ge=1, description="vocabulary entries kept per position when the set is saved "
                          "(renormalised); relabelling and students see exactly the saved set")
    indices_per_task: int = Field(10, ge=1, description="IPC indices recovered per Ray task (tasks run in parallel)")


class DistillConfig(_Strict):
    ipc: list[int] = Field([1, 10, 50], min_length=1, description="examples per class of each distilled set "
                           "(sets are nested: the first n of a larger set)")
    methods: list[Literal[DISTILL_METHODS]] = Field(  # type: ignore[valid-type]
        list(DISTILL_METHODS), min_length=1, description="report rows: " + ", ".join(DISTILL_METHODS)
        + " (chance is always reported)")
    selection: Literal["herding", "confidence"] = Field(
        "herding", description="selected_prior's choice of real examples: herding in the members' pooled [CLS] "
        "space, or the highest committee probability of the true class")
    relabel_temperature: float = Field(10.0, gt=0.0, description="T of the relabel weights softmax(val_accuracy% / T)")
    seed: int = Field(0, ge=0, le=MAX_SEED - 1000, description="seed of the random examples, guiding pairs and "
                      "student seeds")
    student: StudentConfig = StudentConfig()
    recover: RecoverConfig = RecoverConfig()

    @model_validator(mode="after")
    def _distinct(self) -> "DistillConfig":
        for key, values in (("ipc", self.ipc), ("methods", self.methods)):
            if len(set(values)) != len(values):
                raise ValueError(f"distill.{key} lists a value twice: {values}")
        if any(n < 1 for n in self.ipc):
            raise ValueError(f"distill.ipc values must be at least 1 (got {self.ipc})")
        return self


class DistillExperimentConfig(ExperimentConfig):
    """A `committee distill` file: the experiment that trains (or trained) the committee, plus `distill:`."""

    distill: DistillConfig = DistillConfig()


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


def _model_for(path: list[str], root: type[BaseModel] = ExperimentConfig) -> type[BaseModel] | None:
    model: type[BaseModel] = root
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


def _unknown_key_message(dotted: str, root: type[BaseModel] = ExperimentConfig) -> str:
    parts = dotted.split(".")
    parent = _model_for(parts[:-1], root)
    valid = sorted(parent.model_fields) if parent else []
    hint = difflib.get_close_matches(parts[-1], valid, n=1)
    msg = f"unknown config key '{dotted}'"
    if hint:
        msg += f" (did you mean '{'.'.join(parts[:-1] + hint)}'?)"
    if valid:
        where = ".".join(parts[:-1]) or "the top level"
        msg += f"; valid keys in {where}: {', '.join(valid)}"
    if parts[0] == "distill" and "distill" not in root.model_fields:
        msg += "; a distill: section is read by `committee distill CONFIG`, not by this command"
    if parts[0] == "sweep" and "sweep" not in root.model_fields:
        msg += "; a sweep: section is read by `committee sweep CONFIG`, not by this command"
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


def validate_dict(raw: dict[str, Any], source: str = "config",
                  model: type[ExperimentConfig] = ExperimentConfig) -> ExperimentConfig:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, model)) from None


def _format_validation(exc: ValidationError, source: str, root: type[BaseModel] = ExperimentConfig) -> str:
    """One line per error, each naming the dotted key; our own validators' messages already quote the value."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {_unknown_key_message(dotted, root)}")
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


# ----------------------------------------------------------------------------------------------
# sweeps (`committee sweep`): an experiment config plus a `sweep:` section

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
# keys a sweep point cannot change: the committee of a point is its seeds, a sweep trains no deep model,
# and every trial gets the same resources and storage
SWEEP_FIXED_KEYS = ("name", "committee.members", "committee.scratch", "deep.", "resources.", "storage.")
SWEEP_CORPUS_PREFIX = "sweep.corpus."


class SpaceDomain(_Strict):
    """One dimension of a sweep's space: exactly one of the keys below."""

    grid: list[Any] | None = Field(None, min_length=1, description="every value, in order (search grid or random)")
    choice: list[Any] | None = Field(None, min_length=1, description="one value drawn per point (random, optuna)")
    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[lo, hi]")
    loguniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[lo, hi], lo > 0")
    randint: list[int] | None = Field(None, min_length=2, max_length=2, description="[lo, hi): hi excluded")

    @model_validator(mode="after")
    def _one_kind_with_ordered_bounds(self) -> "SpaceDomain":
        given = [kind for kind in SPACE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)} (got {', '.join(given) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [lo, hi] with lo < hi (got {bounds})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs lo > 0 (got {self.loguniform})")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SPACE_KINDS if getattr(self, kind) is not None)

    @property
    def bounds(self) -> list:
        return getattr(self, self.kind)


class SweepCorpusConfig(_Strict):
    source: Literal["seeded", "ranked", "task_mix"] = Field(
        "seeded", description="seeded: the first pretrain.articles articles of the seeded order; ranked: a window "
        "of articles ranked by task-word density; task_mix: task training text mixed into seeded articles")
    tokens: int | None = Field(None, ge=1000, description="ranked / task_mix: the corpus size in tokens of the "
                                                          "sweep's tokenizer (the same at every overlap level)")
    rank_quantile: float = Field(0.0, ge=0.0, le=1.0, description="ranked: where the window starts in the ranking "
                                                                  "(0: articles richest in task words, 1: poorest)")
    task_share: float = Field(0.0, ge=0.0, le=1.0, description="task_mix: share of the tokens from the task's "
                                                               "training text (never validation or test text)")
    pool_articles: int | None = Field(None, ge=1, description="ranked / task_mix: articles to draw from (the first "
                                                              "N of the seeded order); null = all")

    @model_validator(mode="after")
    def _size_for_controlled_corpora(self) -> "SweepCorpusConfig":
        if self.source != "seeded" and self.tokens is None:
            raise ValueError(f"source {self.source} needs tokens (the corpus size every overlap level shares)")
        return self


class SweepSection(_Strict):
    space: dict[str, SpaceDomain] = Field(
        {}, description="dotted config keys (or sweep.corpus.*) -> grid/choice/uniform/"
        "loguniform/randint")
    seeds: int = Field(3, ge=1, le=1024, description="paired members per point: member i (seed = base seed + i) "
                                                      "and its scratch twin, i < seeds")
    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: every combination of grid values; random: num_samples draws; optuna: Tune's "
        "OptunaSearch (pip install optuna)")
    num_samples: int = Field(1, ge=1, description="random / optuna: points drawn (random: per grid combination)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="trials at once; null = as many as fit")
    scheduler: Literal["none", "asha"] = Field("none", description="asha: stop poor trials at fine-tuning epochs")
    metric: Literal["val_gap", "val_accuracy", "scratch_val_accuracy"] = Field(
        "val_gap", description="what ASHA and the search optimise (validation only): pre-trained minus scratch "
        "accuracy, or either arm's accuracy")
    mode: Literal["max", "min"] = Field("max", description="maximise or minimise the metric")
    grace_epochs: int = Field(1, ge=1, description="asha: fine-tuning epochs every trial gets")
    reduction_factor: int = Field(2, ge=2, description="asha: 1 in reduction_factor trials goes on at a rung")
    budget: Literal["steps", "tokens", "epochs"] = Field(
        "steps", description="pre-training per member: steps: pretrain.max_steps of the point; tokens: "
        "pretrain_tokens at every point whatever its batch, sequence length or corpus (same compute, more data "
        "repeats less); epochs: pretrain_epochs passes over its own corpus (more data, more tokens)")
    pretrain_tokens: int | None = Field(
        None, ge=1, description="budget tokens: token positions per member (steps = tokens / (batch_size x "
        "seq_len)); null = the base config's max_steps x batch_size x seq_len")
    pretrain_epochs: float = Field(1.0, gt=0.0, description="budget epochs: passes over the pre-training blocks")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (it resumes from its checkpoints)")
    corpus: SweepCorpusConfig = SweepCorpusConfig()


class SweepConfig(_Strict):
    """A sweep file: the experiment every point starts from, and how points are made."""

    experiment: ExperimentConfig
    sweep: SweepSection


def _sweep_space_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `sweep.space.<dotted key>.<kind>=VALUE` (the key has dots of its own); return the other overrides."""
    rest = []
    for item in overrides:
        dotted, _, text = item.partition("=")
        if not dotted.strip().startswith("sweep.space.") or "=" not in item:
            rest.append(item)
            continue
        key, _, kind = dotted.strip()[len("sweep.space."):].rpartition(".")
        if not key or kind not in SPACE_KINDS:
            raise ConfigError(f"override '{item}': write sweep.space.<config key>.<{'|'.join(SPACE_KINDS)}>=VALUE, "
                              "e.g. sweep.space.pretrain.articles.grid=[100,400]")
        space = raw.setdefault("sweep", {}).setdefault("space", {})
        if not isinstance(space, dict):
            raise ConfigError("sweep.space must be a mapping of config keys to domains")
        space[key] = {kind: _parse_value(item, text)}
    return rest


def check_space_key(dotted: str) -> None:
    """A space key must be a leaf of the experiment config (or of sweep.corpus) that a point may change."""
    if dotted.startswith(SWEEP_CORPUS_PREFIX):
        leaf = dotted[len(SWEEP_CORPUS_PREFIX):]
        if leaf not in SweepCorpusConfig.model_fields:
            hint = difflib.get_close_matches(leaf, list(SweepCorpusConfig.model_fields), n=1)
            raise ConfigError(f"sweep.space: unknown key '{dotted}'" + (f" (did you mean '{SWEEP_CORPUS_PREFIX}"
                              f"{hint[0]}'?)" if hint else "") + f"; sweep.corpus keys: "
                              f"{', '.join(SweepCorpusConfig.model_fields)}")
        return
    parts = dotted.split(".")
    parent = _model_for(parts[:-1])
    if parent is None or parts[-1] not in parent.model_fields:
        raise ConfigError(f"sweep.space: {_unknown_key_message(dotted)}")
    section = _model_for(parts)
    if section is not None:
        raise ConfigError(f"sweep.space: '{dotted}' is a section, not a value; vary one of its keys: "
                          f"{', '.join(f'{dotted}.{k}' for k in section.model_fields)}")
    if dotted.startswith(SWEEP_FIXED_KEYS):
        raise ConfigError(f"sweep.space: '{dotted}' cannot vary in a sweep (a point's committee is its seeds, a "
                          "sweep trains no deep model, and every trial gets the same resources and storage); "
                          "set it outside sweep.space")


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """A sweep file: the experiment part validated as `committee run` validates it, the `sweep:` section
    with `SweepSection`, every space key checked against the experiment config."""
    raw = load_raw(path)
    rest = _sweep_space_overrides(raw, list(overrides or []))
    raw = apply_overrides(raw, rest)
    sweep_raw = raw.pop("sweep", None)
    if not isinstance(sweep_raw, dict):
        raise ConfigError(f"{path} has no 'sweep:' section (a mapping with at least 'space'); see "
                          "configs/sweep_smoke.yaml, or run an experiment with `committee run`")
    experiment = validate_dict(raw, source=str(path))
    try:
        section = SweepSection.model_validate(sweep_raw)
    except ValidationError as exc:
        lines = _format_validation(exc, f"{path}").splitlines()
        raise ConfigError("\n".join(lines[:1] + [line.replace("  - ", "  - sweep.", 1) for line in lines[1:]])) from None
    if not section.space:
        raise ConfigError(f"{path}: sweep.space is empty; give at least one key to vary, e.g. "
                          "sweep.space.pretrain.articles.grid=[100,400]")
    for key in section.space:
        check_space_key(key)
    return SweepConfig(experiment=experiment, sweep=section)


def sweep_to_yaml(cfg: SweepConfig) -> str:
    """The resolved sweep file (experiment keys at the top level, then `sweep:`), as `load_sweep_config` reads it."""
    raw = cfg.experiment.model_dump(mode="json")
    raw["sweep"] = cfg.sweep.model_dump(mode="json", exclude_none=False)
    raw["sweep"]["space"] = {key: {domain.kind: domain.bounds} for key, domain in cfg.sweep.space.items()}
    return yaml.dump(raw, Dumper=_PlainDumper, sort_keys=False)


def load_distill_config(path: str | Path, overrides: list[str] | None = None) -> DistillExperimentConfig:
    """A `committee distill` config: the experiment sections plus `distill:` (`committee run` refuses that key)."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate_dict(raw, source=str(path), model=DistillExperimentConfig)


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
    rows += [f"| `{key}` | `{default}` | (`committee distill`) {text} |"
             for key, default, text in describe_fields(DistillConfig, "distill.")]
    rows += [f"| `{key}` | `{default}` | (`committee sweep`) {text} |"
             for key, default, text in describe_fields(SweepSection, "sweep.")]
    return "\n".join(rows)


if __name__ == "__main__":
    print(reference_table())
