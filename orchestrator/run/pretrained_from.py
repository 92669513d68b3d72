"""`committee run CONFIG --pretrained-from RUN_DIR`: fine-tune another run's pre-trained members on this task.

Pre-training depends on the corpus, the tokenizer, the model, the pre-training settings and the seed, never
on the task. So members pre-trained once can be fine-tuned on every task, which is how the paper
pre-trains once and then fine-tunes on AG News, DBpedia and FewRel. Before members start, each member
(and the deep model) whose pre-training here would be the same as there gets that run's finished masked LM
copied into this run. It then fine-tunes only. Members the other run lacks or did not finish pre-train here
as usual. The tokenizer is the other run's. On CPU the members come out as they would from pre-training
again (pre-training is deterministic; tests/test_run.py checks it on the same task). What was taken is
recorded in the run directory (`pretrained_from.json`) and in the report, a resumed run's included.

The configs must agree on everything that shapes pre-training (`seed`, `model.*`, `tokenizer.*`,
`pretrain.*` but how often to checkpoint and log and whether to compile); the task, fine-tuning, committee
size, deep model, resources and storage may differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config.experiment import ExperimentConfig, validate_dict
from orchestrator.config.loader import flatten, load_raw
from orchestrator.run.plan import member_specs
from orchestrator.run.rundir import RunLayout, check_apart
from workers.errors import CommitteeError
from workers.storage import checkpoint
from workers.train.member import MemberSpec

# config keys that shape a pre-trained member (and prefixes), and those of them that do not change its weights
PRETRAINING_KEYS = ("seed", "model.", "tokenizer.", "pretrain.")
HOW_NOT_WHAT = ("pretrain.checkpoint_every", "pretrain.log_every", "pretrain.compile")
STATS_FILE = "pretrain_stats.json"  # written last with a member's pre-trained masked LM: its marker
RECORD_FILE = "pretrained_from.json"  # in the run directory: what was taken, for the report of a resumed run


@dataclass(frozen=True)
class PretrainedSource:
    """What this run takes from RUN_DIR: its tokenizer and, per member name, the finished masked LM to copy."""

    run_dir: Path
    tokenizer: Path
    mlm_dirs: dict  # member name -> (source mlm dir, this run's mlm dir); paths or storage URIs

    def summary(self) -> dict:
        """The report's record: {"run": RUN_DIR, "members": names whose pre-training was taken from it}."""
        return {"run": str(self.run_dir), "members": sorted(self.mlm_dirs)}


def _settings_key(spec: MemberSpec) -> tuple:
    """What makes two members' pre-trained weights equal (the data aside): seed, shape, pre-training settings."""
    pretrain = replace(spec.pretrain, checkpoint_every=0, log_every=0, compile=False)
    return spec.seed, spec.model, pretrain


def _mlm_dir(spec: MemberSpec):
    return checkpoint.join(spec.out_dir, "mlm")


def finished(mlm_dir) -> bool:
    return checkpoint.exists(checkpoint.join(mlm_dir, STATS_FILE))


def _source_config(source: Path) -> ExperimentConfig:
    hint = "--pretrained-from takes the directory of a `committee run` whose members finished pre-training"
    if not source.is_dir():
        raise CommitteeError(f"--pretrained-from {source} is not a directory; {hint}")
    if not (source / "config.yaml").is_file():
        raise CommitteeError(f"--pretrained-from {source} holds no config.yaml, so it is not a run directory; {hint}")
    raw = load_raw(source / "config.yaml")
    raw.pop("distill", None)  # a distillation that trained its committee is a run too
    if "sweep" in raw:
        raise CommitteeError(f"--pretrained-from {source} is a sweep; {hint} (each sweep trial pre-trains "
                             f"with its own settings)")
    if not (source / "tokenizer").is_dir():
        raise CommitteeError(f"--pretrained-from {source} holds no tokenizer (the run stopped before its members "
                             f"started); {hint}")
    return validate_dict(raw, source=str(source / "config.yaml"))


def pretraining_differences(cfg: ExperimentConfig, source_cfg: ExperimentConfig) -> list[tuple]:
    """The keys that shape pre-training on which the two configs differ: [(key, cfg's value, source_cfg's)]."""
    mine, theirs = flatten(cfg.model_dump(mode="json")), flatten(source_cfg.model_dump(mode="json"))
    return [(k, mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
            if k.startswith(PRETRAINING_KEYS) and k not in HOW_NOT_WHAT and mine.get(k) != theirs.get(k)]


def pretrained_source(cfg: ExperimentConfig, source: Path, run_dir: Path, specs: list[MemberSpec]) -> PretrainedSource:
    """Check RUN_DIR against this run's config and pick the members to take from it (nothing is written).

    Refused, naming the keys, when the configs differ in what shapes pre-training; refused when RUN_DIR has no
    member this run can use."""
    source = Path(source)
    check_apart(run_dir, source, "--pretrained-from")
    source_cfg = _source_config(source)
    differ = pretraining_differences(cfg, source_cfg)
    if differ:
        diffs = "; ".join(f"{k} (there: {theirs!r}, here: {mine!r})" for k, mine, theirs in differ)
        raise CommitteeError(f"--pretrained-from {source} pre-trained with other settings: {diffs}. Its members "
                             f"would not be the ones this config pre-trains; set these keys to the run's values "
                             f"(e.g. as overrides) or leave out --pretrained-from")
    theirs_by_name = {s.name: s for s in member_specs(source_cfg, RunLayout.of(source_cfg, source))}
    mlm_dirs = {}
    for spec in specs:
        other = theirs_by_name.get(spec.name)
        if (spec.pretrains and other is not None and other.pretrains
                and _settings_key(spec) == _settings_key(other) and finished(_mlm_dir(other))):
            mlm_dirs[spec.name] = (_mlm_dir(other), _mlm_dir(spec))
    if not mlm_dirs:
        raise CommitteeError(f"--pretrained-from {source} has no member whose pre-training finished (none holds "
                             f"mlm/{STATS_FILE}); let that run finish pre-training, or leave out --pretrained-from")
    return PretrainedSource(source, source / "tokenizer", mlm_dirs)


def recorded(run_dir: Path) -> dict | None:
    """What `copy_pretrained` recorded in `run_dir` ({"run", "members"}), or None: a resumed run's report says it too."""
    path = Path(run_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def copy_pretrained(source: PretrainedSource, run_dir: Path, echo=print) -> None:
    """Copy each chosen member's finished masked LM, with its pre-training stats, into this run (over whatever
    is there: with `storage.uri` a reused run name may find an older run's members); the stats file is
    written last, as after pre-training. Records what was taken in `run_dir`."""
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line for the whole copy, below
    for name in sorted(source.mlm_dirs):
        src, dst = source.mlm_dirs[name]
        model = checkpoint.load_pretrained(BertForMaskedLM, src)
        stats = checkpoint.read_bytes(checkpoint.join(src, STATS_FILE)).decode()
        checkpoint.save_final(dst, model, {STATS_FILE: stats})
        checkpoint.clear_local_cache()
    (Path(run_dir) / RECORD_FILE).write_text(json.dumps(source.summary()) + "\n")
    echo(f"pre-training taken from {source.run_dir}: {', '.join(sorted(source.mlm_dirs))} (fine-tuned only)")
