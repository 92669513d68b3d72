"""Typed experiment config: pydantic models loaded from YAML, with dotted overrides.

`load_config(path, ["committee.members=8", "pretrain.max_steps=200"])` returns a validated
`ExperimentConfig`; any unknown key, wrong type or out-of-range value raises `ConfigError` naming the
dotted key. The same override code serves the CLI and Tune trials (`orchestrator.config.loader.apply_overrides`).

Types are strict: an int field takes only a YAML integer (not `true`, not `2.5`), a float field takes an
integer or a float (not a boolean). Config files are read by `orchestrator.config.loader`, which refuses duplicate
keys and anchors/aliases (so loading and validation stay bounded) and reads `1e-3` as a float.
Commands with a section of their own: `orchestrator.config.distill` (`distill:`), `orchestrator.config.sweep`
(`sweep:`); `orchestrator.config.reference` writes the config reference (`python -m orchestrator.config.reference`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.config.errors import format_validation
from orchestrator.config.loader import apply_overrides, load_raw
from workers.errors import ConfigError

# The base seed leaves headroom under 2**31 - 1: member i uses seed + i, the deep model seed + 10_000.
MAX_BASE_SEED = 2**31 - 1 - 100_000
MAX_SEED = 2**32 - 1  # any other seed (numpy's generators take 32-bit seeds everywhere)
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# The run name becomes a directory name (runs/<name>, <storage.uri>/<name>), at most 255 bytes on the common file
# systems, and committee sets an overwritten run aside as `.<name>.replaced-XXXXXXXX`: the limit leaves room for
# that (a sweep's name leaves room for `-best` as well: orchestrator.config.sweep).
FILE_NAME_MAX_BYTES = 255
MAX_RUN_NAME_LENGTH = FILE_NAME_MAX_BYTES - len("..replaced-") - 8  # 236 (names are ASCII)


class _Strict(BaseModel):
    """Unknown keys are errors, values are immutable, and types are not coerced (`true` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Strict):
    root: str | None = Field(
        None, description="data root; default: $COMMITTEE_DATA, else ../shared/data when it exists"
    )


TASK_PRESETS = ("ag_news", "dbpedia_14", "few_rel", "few_rel_64")
# the task's dataset fields and their defaults: a preset (no dataset) brings its own
_TASK_DATASET_DEFAULTS = {"dataset_config": None, "column_names": None, "text_column": "text", "label_column": "label",
                          "label_names": None, "classes_file": None, "first_label_id": 0, "train_split": "train",
                          "test_split": "test", "validation_split": None, "test_from_train": None}


class TaskConfig(_Strict):
    name: str = Field("ag_news", min_length=1, description="with no dataset: a preset read from the data root "
                      "(ag_news, dbpedia_14, few_rel: FewRel's 16 val_wiki relations, few_rel_64: its 64 train_wiki relations, "
                      "the authors'); with your own dataset: its name in the report")
    dataset: str | None = Field(
        None, description="your own data: a Hugging Face hub id (read from the local cache when HF_HUB_OFFLINE=1), "
        "a save_to_disk folder, or a folder of split files (train.csv, test.jsonl, ...); null = the preset name"
    )
    dataset_config: str | None = Field(None, description="the hub dataset's configuration name")
    data_files: dict[str, str | list[str]] | None = Field(
        None, description="your own data as local files per split, e.g. {train: a.csv, test: b.csv} (csv, tsv, "
        "json, jsonl, parquet; paths from the working directory)"
    )
    column_names: list[str] | None = Field(
        None, description="the columns of csv/tsv files that have no header row, in file order (e.g. [label, title, "
        "description] for AG News as distributed); their first row is then data; null = the first row names them"
    )
    text_column: str | list[str] = Field(
        "text", description="the text column, or a list of columns joined by a space (as DBpedia joins title and "
        "content)"
    )
    label_column: str = Field("label", description="integer class ids or string class names")
    label_names: list[str] | dict[int | str, str] | None = Field(
        None, description="class names in id order (integer labels start at task.first_label_id), or a mapping from "
        "each label as the data has it to its name ({1: World, 2: Sports, ...}; ids follow the order listed); "
        "null = from the data: a ClassLabel's names, integer ids as found, or string names sorted"
    )
    classes_file: str | None = Field(
        None, description="a text file of class names, one a line, in id order (the classes.txt beside AG News, "
        "DBpedia, Yahoo CSVs); its first line is label task.first_label_id; instead of task.label_names"
    )
    first_label_id: int = Field(
        0, ge=0, le=1, description="the integer label of the first class (of task.label_names or task.classes_file, "
        "or of the data's own ids): 1 for 1-based labels as AG News, DBpedia and Yelp are distributed"
    )
    train_split: str = Field("train", description="split of the training examples (validation is carved from it)")
    test_split: str = Field("test", description="split of the test examples")
    validation_split: str | None = Field(
        None, description="validation examples from this split instead of carved from train"
    )
    test_from_train: int | float | None = Field(
        None, description="for data with a train file only: test examples carved from the train split, an integer "
        "per class or a share of each class (0.1); stratified, drawn with task.sample_seed, disjoint from train and "
        "validation, recorded in the report; null = the test split"
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
        self._check_class_names()
        if self.column_names is not None and (not self.column_names or len(set(self.column_names)) != len(self.column_names)):
            raise ValueError(f"task.column_names needs one or more distinct column names (got {self.column_names})")
        if self.test_from_train is not None and self.test_split != _TASK_DATASET_DEFAULTS["test_split"]:
            raise ValueError("give task.test_split (a test split of the data) or task.test_from_train (test examples "
                             "carved from train), not both")
        return self

    def _check_class_names(self) -> None:
        """Names listed, mapped or in a file, each at least two and distinct; `first_label_id` goes with a list."""
        names = self.label_names
        if names is not None and self.classes_file is not None:
            raise ValueError("give task.label_names or task.classes_file, not both")
        values = list(names.values()) if isinstance(names, dict) else names
        if values is not None and (len(values) < 2 or len(set(values)) != len(values)):
            raise ValueError(f"task.label_names needs at least two distinct names (got {values})")
        if isinstance(names, dict):
            keys = [str(key) for key in names]
            if len(set(keys)) != len(keys):
                raise ValueError(f"task.label_names maps the same label twice ({', '.join(keys)})")
            if self.first_label_id != 0:
                raise ValueError("task.first_label_id goes with a list of names; a mapping of task.label_names "
                                 "already says which label each name is")

    @field_validator("label_names", mode="before")
    @classmethod
    def _integer_label_keys(cls, names: Any) -> Any:
        """A mapping's integer keys come back from the resolved config.yaml as text ('1': World); read them as the
        integers they were, so a saved config validates to the same config (labels are matched as text anyway)."""
        if isinstance(names, dict):
            read = {int(k) if isinstance(k, str) and re.fullmatch(r"-?(0|[1-9][0-9]*)", k) else k: v
                    for k, v in names.items()}
            return read if len(read) == len(names) else names  # {1: a, '1': b}: refused below, as written
        return names

    @field_validator("test_from_train")
    @classmethod
    def _count_or_share(cls, value: int | float | None) -> int | float | None:
        if value is None or (isinstance(value, int) and value >= 1) or (isinstance(value, float) and 0 < value < 1):
            return value
        raise ValueError(f"got {value!r}; give a number of test examples per class (an integer, "
                         f"at least 1) or a share of each class between 0 and 1 (e.g. 0.1)")


class TokenizerConfig(_Strict):
    path: str | None = Field(None, description="an existing tokenizer directory; null = train one")
    vocab: str | None = Field(
        None, min_length=1, description="a fixed WordPiece vocabulary, read with bert-base-uncased's normalisation: "
        "a vocab.txt, a folder holding vocab.txt or tokenizer.json, or a name resolved under the data root's "
        "tokenizers/ folder (bert-base-uncased: the paper's 30,522 entries); null = learn one (vocab_size)"
    )
    vocab_size: int = Field(8000, ge=200, le=100_000, description="WordPiece vocabulary of a trained tokenizer "
                            "(not used with tokenizer.path or tokenizer.vocab)")
    train_articles: int | None = Field(
        None, ge=1, description="articles the tokenizer is trained on; null = the pre-training corpus"
    )

    @model_validator(mode="after")
    def _one_source(self):
        if self.path is not None and self.vocab is not None:
            raise ValueError("tokenizer.path and tokenizer.vocab both name a tokenizer; keep one (path: a saved "
                             "tokenizer directory; vocab: a fixed vocabulary)")
        return self


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
        "file), a WikiExtractor output folder (wiki_00 files, .bz2 too), a text file, a local parquet/jsonl/json/csv "
        "file, a folder of split files, a save_to_disk folder, or a hub id"
    )
    dataset_config: str | None = Field(None, description="the hub dataset's configuration name")
    split: str = Field("train", description="the split holding the documents")
    text_column: str = Field("text", description="the column holding each document's text")
    documents: Literal["per_file", "per_line", "per_block"] = Field(
        "per_file", description="how a plain text file divides into documents: per_file (the whole file), per_line "
        "(each non-empty line), per_block (blocks between blank lines); WikiExtractor files always divide into "
        "their articles (doc blocks, or JSON lines)"
    )


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
    compile: bool = Field(
        False, description="the pre-training forward pass and loss through torch.compile (inductor), members and "
        "stacked groups alike; pays on a GPU, where a 1-layer member is launch-bound; on a CPU it needs a C++ "
        "compiler and about a minute per graph"
    )


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

    @model_validator(mode="after")
    def _groups_fit_one_gpu(self) -> "ResourcesConfig":
        """A member, and a stacked group of members, runs on one device: it can use at most one GPU."""
        gpus, group = self.gpus_per_member, self.members_per_actor
        if gpus > 1:
            raise ValueError(f"resources.gpus_per_member={gpus:g}: a member runs on one GPU, so it would reserve "
                             f"GPUs it never uses; give at most 1 (fractions let members share a GPU)")
        if group != "auto" and gpus > 0 and group * gpus > 1 + 1e-9:
            largest = math.floor(1 / gpus + 1e-9)
            raise ValueError(f"resources.members_per_actor={group} x resources.gpus_per_member={gpus:g} = "
                             f"{group * gpus:g} GPUs for one actor, but a group trains as one stacked model on one "
                             f"GPU; the largest group that fits is members_per_actor={largest} (or set "
                             f"members_per_actor: auto)")
        return self


class StorageConfig(_Strict):
    uri: str | None = Field(
        None, pattern=r"^([a-z][a-z0-9+.-]*://|/)",
        description="where member checkpoints, weights and results go: null = <run dir>/members (on several "
        "nodes the run dir must be a path every node sees); an absolute shared path or a pyarrow.fs URI "
        "(s3://bucket/prefix, gs://..., file:///...) = <uri>/<run dir name>/members, and the report, metrics "
        "and TensorBoard files (a distillation's report and sets too) are copied to <uri>/<run dir name> at the end"
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

    @field_validator("name", mode="before")
    @classmethod
    def _integer_name_as_text(cls, name: Any) -> Any:
        """YAML reads `name: 2024` (and the override `name=2024`) as an integer; the run is meant to be named
        "2024", so a YAML integer becomes its decimal text. Any other value that is not text is refused."""
        if isinstance(name, int) and not isinstance(name, bool):
            return str(name)
        if not isinstance(name, str):
            raise ValueError(f"run name {name!r} is {_yaml_kind(name)}, not text; give the name as text, in quotes "
                             "where YAML would read it otherwise (e.g. name: '1.5', name: 'yes')")
        return name

    @field_validator("name")
    @classmethod
    def _plain_run_name(cls, name: str) -> str:
        """The name becomes a directory (runs/<name>, <uri>/<name>), so it must not be a path or hidden."""
        problem = _run_name_problem(name)
        if problem:
            shown = repr(name) if len(name) <= 60 else repr(name[:40]) + "..."
            raise ValueError(f"run name {shown} {problem}; use a plain name such as 'agnews-k8' "
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
    if len(name.encode()) > MAX_RUN_NAME_LENGTH:
        return (f"is {len(name.encode()):,} characters long; a run name has at most {MAX_RUN_NAME_LENGTH} (it becomes a "
                f"directory name, at most {FILE_NAME_MAX_BYTES} bytes, and an overwritten run is set aside as "
                f".<name>.replaced-XXXXXXXX)")
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", ".."):
        return "is a relative directory, not a name"
    if name.startswith("."):
        return "starts with '.' (a hidden directory)"
    if not RUN_NAME_PATTERN.match(name):
        return "has characters other than letters, digits, '_', '.', '-'"
    return None


def _yaml_kind(value: Any) -> str:
    """What YAML made of a value, in words, for an error message ("a boolean", "a list", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def validate_dict(raw: dict[str, Any], source: str = "config",
                  model: type[ExperimentConfig] = ExperimentConfig) -> ExperimentConfig:
    """`raw` validated as `model` (an `ExperimentConfig`, or a subclass with a command's own section); every
    error is reported in one `ConfigError` naming its dotted key and `source`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, source, model)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment config in the YAML file at `path`, with `KEY=VALUE` overrides applied, validated."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate_dict(raw, source=str(path))

