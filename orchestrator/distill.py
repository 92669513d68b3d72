"""`committee distill`: a committee -> distilled training sets -> fresh students -> report.

The committee is trained here exactly as `committee run` trains it (the shared stages of
`orchestrator.driver`: open_run, train_members, write_run_report), or taken from a finished run
(`--from-run RUN_DIR`: its members, tokenizer and task split; no member is trained). Then, at every
IPC of `distill.ipc`:
1. random_hard      random real examples + hard labels;
2. random_single    the same examples + soft labels of the best member (by validation accuracy);
3. random_equal     the same examples + committee soft labels, equal weights (mean probability);
4. random_prior     the same examples + prior-weighted committee soft labels (CV-DD relabel, T = 10);
5. selected_prior   committee-selected real examples (herding or confidence) + prior-weighted labels;
6. recover          CV-DD recover from the examples of 1-4, guided by a pair of members drawn per IPC
                    index (weights softmax(alpha / 5)), relabelled as in 4; recover_single: one expert
                    (the best member) guides and labels;
7. full             the whole training split with hard labels (upper bound); chance is reported too.
Every soft label comes from the voting actor (`workers.actors.VoterActor.soft_labels`), the same actor
and rules that vote the committee's classification. Recover chunks and students run as Ray tasks.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator import cluster, distill_report, driver, rundir
from orchestrator.config import COMMITTEE_METHODS, DistillExperimentConfig
from orchestrator.plan import member_spec, member_specs, model_settings
from workers import checkpoint
from workers import distill as wd
from workers.committee import Committee, RunMembers, read_run
from workers.errors import CommitteeError
from workers.finetune import FinetuneSettings
from workers.member import MemberSpec, Role, load_result

log = logging.getLogger(__name__)

STUDENT_BASE = "student-base"  # the pre-trained non-member a "pretrained" student starts from
PROGRESS_EVERY_S = 10.0
# sections that define the committee: with --from-run they come from the run, not from the config
COMMITTEE_SECTIONS = ("seed", "task", "tokenizer", "model", "pretrain", "finetune", "committee", "deep")
RECOVER_METHODS = ("recover", "recover_single")


# ----------------------------------------------------------------------------------------------
# checks (before anything is created)


def check_request(cfg: DistillExperimentConfig) -> None:
    """Refuse what cannot be distilled: an IPC above the smallest class, one member for a committee method."""
    d = cfg.distill
    per_class = cfg.task.train_per_class  # every class of the training split has exactly this many
    too_big = [n for n in d.ipc if n > per_class]
    if too_big:
        raise CommitteeError(f"distill.ipc {too_big} is larger than the smallest class of the training split "
                             f"({per_class} examples per class, task.train_per_class); lower distill.ipc or raise "
                             f"task.train_per_class")
    needs_two = [m for m in d.methods if m in COMMITTEE_METHODS]
    if needs_two and cfg.committee.members < 2:
        raise CommitteeError(f"distill.methods {needs_two} need a committee of at least two members, but it has "
                             f"{cfg.committee.members} (committee.members); train a larger committee or leave "
                             f"them out of distill.methods")


def with_source_run(cfg: DistillExperimentConfig, from_run: Path,
                    echo=print) -> tuple[DistillExperimentConfig, RunMembers]:
    """The config of a distillation from a finished run: the committee's sections from the run, `distill`,
    name, data, resources and storage from `cfg`; refused when the run's task differs from the config's."""
    source = read_run(from_run)
    run_cfg = source.config.model_dump(mode="json")
    mine = cfg.model_dump(mode="json")
    task_diffs = [f"task.{k} (run: {run_cfg['task'][k]!r}, config: {v!r})" for k, v in mine["task"].items()
                  if run_cfg["task"][k] != v]
    if task_diffs:
        raise CommitteeError(f"--from-run {from_run} was trained on another task split: {'; '.join(task_diffs)}; "
                             f"set the config's task section to the run's (e.g. as overrides) or train a new "
                             f"committee without --from-run")
    ignored = sorted(f"{section}.{key}" for section in COMMITTEE_SECTIONS if isinstance(mine[section], dict)
                     for key in mine[section] if mine[section][key] != run_cfg[section][key])
    ignored += [s for s in COMMITTEE_SECTIONS if not isinstance(mine[s], dict) and mine[s] != run_cfg[s]]
    if ignored:
        echo(f"the committee's settings come from {from_run}; the config's {', '.join(ignored)} are not used")
    merged = {**run_cfg, **{k: mine[k] for k in mine if k not in COMMITTEE_SECTIONS}}
    return DistillExperimentConfig.model_validate(merged), source


def _phase_iterations(iterations: int) -> tuple[int, int]:
    """Iterations of recover's whole-vocabulary phase and of its top-k phase (workers.distill.recover)."""
    dense = iterations - iterations // 2
    return dense, iterations - dense


def check_target_is_not_source(run_dir: Path, from_run: Path) -> None:
    target, source = Path(run_dir).resolve(), Path(from_run).resolve()
    if target == source or source in target.parents or target in source.parents:
        raise CommitteeError(f"--run-dir {run_dir} overlaps --from-run {from_run}: a distillation writes a run "
                             f"directory of its own; choose another --run-dir (default: runs/<name>)")


# ----------------------------------------------------------------------------------------------
# plans: the non-member a student starts from, and the students


def student_base_spec(cfg: DistillExperimentConfig, layout: rundir.RunLayout) -> MemberSpec:
    """A member pre-trained like the committee's with seed + committee.members (an index outside the
    committee), of the students' shape; its fine-tuning is cut to one epoch (only its encoder is used)."""
    spec = member_spec(cfg, Role.PRETRAINED, cfg.committee.members, str(layout.member_dir(STUDENT_BASE)))
    return replace(spec, name=STUDENT_BASE, model=model_settings(cfg, cfg.distill.student.num_layers),
                   finetune=replace(spec.finetune, epochs=1))


def _finished_base(spec: MemberSpec, member_dir) -> bool:
    done = load_result(member_dir)
    return (done is not None and (done.seed, done.num_layers, done.pretrain_stats.get("steps"))
            == (spec.seed, spec.model.num_layers, spec.pretrain_steps))


def student_specs(cfg: DistillExperimentConfig, method: str, ipc: int | None, base_dir) -> list[wd.StudentSpec]:
    """The students of one distilled set: seeds distill.seed + 0..n-1, a fixed number of steps."""
    st = cfg.distill.student
    specs = []
    for i in range(st.seeds):
        seed = cfg.distill.seed + i
        settings = FinetuneSettings(seed=seed, epochs=1, batch_size=st.batch_size, lr=st.lr,
                                    weight_decay=st.weight_decay, warmup_ratio=st.warmup_ratio,
                                    precision=cfg.finetune.precision, max_steps=st.steps,
                                    soft_target_temperature=st.temperature)
        specs.append(wd.StudentSpec(method, ipc, seed, model_settings(cfg, st.num_layers), settings, st.init,
                                    None if base_dir is None else str(base_dir)))
    return specs


# ----------------------------------------------------------------------------------------------
# the command


def distill_experiment(cfg: DistillExperimentConfig, run_dir: str | Path, from_run: str | Path | None = None,
                       address: str | None = None, overwrite: bool = False, command: str = "", echo=print) -> dict:
    """Distill into `run_dir` (training the committee first unless `from_run`); returns distill.json's dict."""
    t_start = time.perf_counter()
    source = None
    if from_run is not None:
        check_target_is_not_source(Path(run_dir), Path(from_run))
        cfg, source = with_source_run(cfg, Path(from_run), echo)
    check_request(cfg)
    layout = rundir.RunLayout.of(cfg, run_dir)
    committee_specs = [] if source else member_specs(cfg, layout)
    specs, base_dir = list(committee_specs), None
    if cfg.distill.student.init == "pretrained":
        base = student_base_spec(cfg, layout)
        source_base = (None if source is None
                       else rundir.RunLayout.of(source.config, source.run_dir).member_dir(STUDENT_BASE))
        if source_base is not None and _finished_base(base, source_base):
            base_dir = checkpoint.join(source_base, "mlm")
        else:
            specs.append(base)
            base_dir = checkpoint.join(base.out_dir, "mlm")
    run = driver.open_run(cfg, run_dir, address, overwrite=overwrite, specs=specs,
                          tokenizer_path=None if source is None else source.tokenizer_dir, echo=echo)
    try:
        if source is not None:
            echo(f"committee from {source.run_dir}: {len(source.names)} members, no member is trained"
                 + ("; pre-training the students' base (a non-member)" if specs else ""))
        results = driver.train_members(run, cfg, specs, echo=echo)
        if source is None:
            driver.write_run_report(run, cfg, committee_specs, results, command=command, echo=echo)
        committee_dir = layout.run_dir if source is None else source.run_dir
        timing = {"committee_s": time.perf_counter() - t_start}
        return Distillation(run, cfg, committee_dir, base_dir, echo).run(command, timing, t_start)
    finally:
        run.events.close()  # a no-op when the committee's report closed it
        run.claim.release()


@contextmanager
def _torch_threads(count: int):
    """The driver's own forwards use the CPUs of one member (Ray's workers use the rest)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Labels:
    """Soft labels from the voting actor: every method's labels pass through it."""

    ray: object
    voter: object
    committee: Committee
    temperature: float

    def teacher(self, logits: np.ndarray, rule: str, members: list[int] | None = None) -> np.ndarray:
        """Teacher logits [n, classes] of `members` (default all) for their logits [K, n, classes]."""
        members = list(range(len(self.committee))) if members is None else members
        scores = self.ray.get(self.voter.soft_labels.remote(
            logits[members], rule, self.committee.val_accuracy[members], self.temperature))
        return wd.teacher_logits(scores, rule)


class Distillation:
    """The distillation stages on a claimed run directory; `run()` returns the report dict."""

    def __init__(self, run: driver.OpenRun, cfg: DistillExperimentConfig, committee_dir: Path, base_dir, echo=print):
        self.cfg, self.d, self.echo = cfg, cfg.distill, echo
        self.ray, self.layout, self.arrays = run.ray, run.layout, run.prepared.arrays
        self.committee_dir, self.base_dir = Path(committee_dir), base_dir
        self.num_classes = self.arrays.num_classes
        self.cpus = cfg.resources.num_cpus_per_member
        self.threads = max(1, int(self.cpus))
        self.metrics = open(self.layout.metrics, "a")
        self.t0 = time.perf_counter()

    def _log(self, record: dict) -> None:
        self.metrics.write(json.dumps({"time_s": round(time.perf_counter() - self.t0, 3), **record}) + "\n")
        self.metrics.flush()

    def _task_options(self) -> dict:
        gpus = self.cfg.resources.gpus_per_member
        return {"num_cpus": self.cpus, **({"num_gpus": gpus} if gpus > 0 else {})}

    def run(self, command: str, timing: dict, t_start: float) -> dict:
        from orchestrator.prepare import load_cfg_task
        from workers.actors import VoterActor

        try:
            with _torch_threads(self.threads):
                committee = Committee.from_run(self.committee_dir)
            self.echo("committee: " + ", ".join(f"{n} (val {100 * a:.1f}%)" for n, a in
                                                zip(committee.names, committee.val_accuracy)))
            texts = load_cfg_task(self.cfg).train_texts  # the texts behind arrays.train, row for row
            top = max(self.d.ipc)
            # random real examples per class, ordered by IPC index: methods 1-4 use them, recover starts from them
            random_rows = wd.index_major(wd.random_per_class(self.arrays.train_labels, self.num_classes, top,
                                                             self.d.seed), top)
            voter = VoterActor.options(**cluster.on_this_node()).remote()
            try:
                labels = _Labels(self.ray, voter, committee, self.d.relabel_temperature)
                t0 = time.perf_counter()
                sets, selection = self.real_sets(committee, labels, random_rows)
                timing["real_sets_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                recovered, recover_info = self.recover_sets(committee, labels, random_rows)
                timing["recover_s"] = time.perf_counter() - t0
                members = self._members(committee, voter)
            finally:
                self.ray.kill(voter)
            sets.update(recovered)
            saved = self.save_sets(sets, texts, committee.tokenizer)
            t0 = time.perf_counter()
            rows = self.post_eval(sets)
            timing["students_s"] = time.perf_counter() - t0
            timing["wall_s"] = time.perf_counter() - t_start
            out = distill_report.build(self.cfg, self.num_classes, len(self.arrays.train), members, rows, saved,
                                       selection, recover_info, self.committee_dir, timing)
            distill_report.write(self.layout.run_dir, out, command)
            self.echo(f"distill report: {self.layout.run_dir / distill_report.MARKDOWN}")
            return out
        finally:
            self.metrics.close()

    def _members(self, committee: Committee, voter) -> list[dict]:
        """Each member's name, accuracies and prior weights (relabel and recover temperatures), from the voter."""
        run = read_run(self.committee_dir)
        relabel = self.ray.get(voter.prior_weights.remote(committee.val_accuracy, self.d.relabel_temperature))
        recover = self.ray.get(voter.prior_weights.remote(committee.val_accuracy, self.d.recover.temperature))
        return [{"name": name, "val_accuracy": float(val), "test_accuracy": float(test),
                 "relabel_weight": float(w10), "recover_weight": float(w5), "best": i == committee.best}
                for i, (name, val, test, w10, w5) in enumerate(zip(run.names, run.val_accuracy, run.test_accuracy,
                                                                   relabel, recover))]

    # -- real examples (methods 1-5 and full) ------------------------------------------------

    def real_sets(self, committee: Committee, labels: _Labels, random_rows: np.ndarray) -> tuple[dict, dict]:
        """DistilledSets at the largest IPC for methods 1-5 (the smaller IPCs are their prefixes), plus
        the full training split."""
        arrays, methods, top = self.arrays, set(self.d.methods), max(self.d.ipc)
        train, train_labels = arrays.train, arrays.train_labels
        sets: dict = {}
        needs_logits = methods & {"random_single", "random_equal", "random_prior", "selected_prior"}
        logits = None
        if needs_logits:
            with _torch_threads(self.threads):
                logits = committee.logits(train)  # [K, n_train, classes]: one packed forward over the split
            self.echo(f"committee logits on the {len(train)} training examples (packed: {committee.packs})")

        def real(method: str, rows: np.ndarray, soft: np.ndarray | None) -> wd.DistilledSet:
            return wd.DistilledSet(method, top, wd.take(train, rows), train_labels[rows], soft, rows)

        if "random_hard" in methods:
            sets["random_hard"] = real("random_hard", random_rows, None)
        if "random_single" in methods:
            sets["random_single"] = real("random_single", random_rows,
                                         labels.teacher(logits[:, random_rows], "prior_weighted", [committee.best]))
        if "random_equal" in methods:
            sets["random_equal"] = real("random_equal", random_rows,
                                        labels.teacher(logits[:, random_rows], "mean_probability"))
        if "random_prior" in methods:
            sets["random_prior"] = real("random_prior", random_rows,
                                        labels.teacher(logits[:, random_rows], "prior_weighted"))
        selection = None
        if "selected_prior" in methods:
            rows = wd.index_major(self._select(committee, labels, logits, top), top)
            sets["selected_prior"] = real("selected_prior", rows, labels.teacher(logits[:, rows], "prior_weighted"))
            selection = self.d.selection
        if "full" in methods:
            sets["full"] = wd.DistilledSet("full", None, train, train_labels, None, np.arange(len(train)))
        return sets, {"rule": selection}

    def _select(self, committee: Committee, labels: _Labels, logits: np.ndarray, top: int) -> np.ndarray:
        arrays = self.arrays
        if self.d.selection == "herding":
            with _torch_threads(self.threads):
                features = committee.features(arrays.train)  # [K, n, h]
            flat = features.transpose(1, 0, 2).reshape(len(arrays.train), -1)  # [n, K * h]
            return wd.herding_per_class(flat, arrays.train_labels, self.num_classes, top)
        from workers.voting import softmax

        probs = softmax(labels.teacher(logits, "prior_weighted").astype(np.float64))
        return wd.confident_per_class(probs, arrays.train_labels, self.num_classes, top)

    # -- recover (method 6) --------------------------------------------------------------------

    def recover_sets(self, committee: Committee, labels: _Labels, random_rows) -> tuple[dict, dict]:
        """Recovered synthetic sets at the largest IPC (committee-guided and single-expert), relabelled."""
        methods = [m for m in RECOVER_METHODS if m in self.d.methods]
        if not methods:
            return {}, {}
        top, classes = max(self.d.ipc), self.num_classes
        arrays = self.arrays
        with _torch_threads(self.threads):
            stats = committee.hidden_stats(arrays.train)
        run = read_run(self.committee_dir)
        r = self.d.recover
        settings = wd.RecoverSettings(iterations=r.iterations, lr=r.lr, stats_weight=r.stats_weight,
                                      temperature=r.temperature, init_probability=r.init_probability,
                                      keep_top=r.keep_top)
        init_labels, ipc_index = arrays.train_labels[random_rows], np.repeat(np.arange(top), classes)
        task = self.ray.remote(**self._task_options())(wd.recover_with_members)
        pending, chunks = {}, {}
        for method in methods:
            single = committee.best if method == "recover_single" else None
            guides = wd.draw_guides(len(committee), range(top), self.d.seed, single=single)
            chunks[method] = []
            for start in range(0, top, r.indices_per_task):
                indices = range(start, min(top, start + r.indices_per_task))
                rows = np.arange(indices.start * classes, indices.stop * classes)
                ref = task.remote(run.classifier_dirs, committee.val_accuracy, stats,
                                  wd.take(arrays.train, random_rows[rows]), init_labels[rows],
                                  ipc_index[rows] - indices.start, guides[indices.start:indices.stop], settings,
                                  arrays.special.pad, self.threads)
                pending[ref] = (method, indices.start)
                chunks[method].append(ref)
        self.echo(f"recover: {len(pending)} task(s) of up to {r.indices_per_task} IPC index(es) x {classes} classes, "
                  f"{r.iterations} iterations each ({', '.join(methods)})")
        results = self._collect(pending, lambda key, res: (
            f"recover {key[0]} indices {key[1]}+: loss {res.loss_curve[0]:.3f} -> {res.loss_curve[-1]:.3f}, "
            f"guides agree {100 * res.guide_accuracy_before:.0f}% -> {100 * res.guide_accuracy_after:.0f}% "
            f"({res.seconds:.0f} s)"), "recover")
        sets, info = {}, {}
        for method in methods:
            parts = [results[ref] for ref in chunks[method]]
            tokens = wd.concat_soft_tokens([p.tokens for p in parts], arrays.special.pad)
            with _torch_threads(self.threads):
                logits = committee.logits(tokens)  # [K, n, classes]: every member reads the soft tokens
            members = [committee.best] if method == "recover_single" else None
            soft = labels.teacher(logits, "prior_weighted", members)
            sets[method] = wd.DistilledSet(method, top, tokens, init_labels, soft, None)
            seen = sum(len(p.labels) for p in parts)
            info[method] = {
                "guides": "best member" if method == "recover_single" else "pair drawn per IPC index",
                "loss_first": float(np.mean([p.loss_curve[0] for p in parts])),
                "loss_last": float(np.mean([p.loss_curve[-1] for p in parts])),
                "guide_accuracy_before": sum(p.guide_accuracy_before * len(p.labels) for p in parts) / seen,
                "guide_accuracy_after": sum(p.guide_accuracy_after * len(p.labels) for p in parts) / seen,
                "committee_agrees_with_class": float((soft.argmax(axis=1) == init_labels).mean()),
                "task_seconds": float(sum(p.seconds for p in parts)),
                # per iteration and task, for estimates: the whole-vocabulary half and the top-k half
                "seconds_per_iteration": [float(np.mean([p.phase_seconds[i] for p in parts]))
                                          / max(1, n) for i, n in enumerate(_phase_iterations(r.iterations))],
            }
        return sets, info

    # -- saving and post-eval ------------------------------------------------------------------

    def save_sets(self, sets: dict, texts, tokenizer) -> dict:
        """Every distilled set under distilled/<method>/ipc-<n>/ (the full split is not copied)."""
        saved = {}
        for method, dset in sets.items():
            if method == "full":
                continue
            for ipc in self.d.ipc:
                part = dset.first(ipc, self.num_classes)
                directory = self.layout.run_dir / "distilled" / method / f"ipc-{ipc}"
                if isinstance(part.examples, wd.SoftTokens):
                    path = wd.save_synthetic_set(part, tokenizer, directory)
                else:
                    path = wd.save_real_set(part, texts, directory)
                saved[f"{method}/ipc-{ipc}"] = str(path.relative_to(self.layout.run_dir))
        return saved

    def post_eval(self, sets: dict) -> list[dict]:
        """Students on every (method, IPC) set and seed, as Ray tasks; one row per student."""
        arrays = self.arrays
        task = self.ray.remote(**self._task_options())(wd.train_student)
        test_ref, labels_ref = self.ray.put(arrays.test), self.ray.put(arrays.test_labels)
        pending = {}
        for method in self.d.methods:
            dset = sets[method]
            for ipc in ([None] if method == "full" else self.d.ipc):
                part = dset if ipc is None else dset.first(ipc, self.num_classes)
                part_ref = self.ray.put(part)
                for spec in student_specs(self.cfg, method, ipc, self.base_dir):
                    ref = task.remote(spec, part_ref, test_ref, labels_ref, arrays.special.pad,
                                      arrays.special.vocab_size, self.num_classes, self.threads)
                    pending[ref] = (method, ipc, spec.seed)
        self.echo(f"post-eval: {len(pending)} students ({self.d.student.init} init, {self.d.student.steps} steps each)")
        results = self._collect(pending, None, "student")
        return sorted(results.values(), key=lambda row: (self.d.methods.index(row["method"]), row["ipc"] or 0,
                                                         row["seed"]))

    def _collect(self, pending: dict, describe, phase: str) -> dict:
        """Wait for Ray tasks as they finish (ray.wait), logging each and a progress line every few seconds."""
        results, todo, total = {}, dict(pending), len(pending)
        last = time.perf_counter()
        while todo:
            ready, _ = self.ray.wait(list(todo), num_returns=1, timeout=1.0)
            for ref in ready:
                key = todo.pop(ref)
                try:
                    result = self.ray.get(ref)
                except Exception as exc:
                    raise CommitteeError(f"{phase} {key} failed: {exc}") from exc
                results[ref] = result
                if phase == "student":
                    self._log({"phase": "student", **result})
                else:
                    self._log({"phase": phase, "method": key[0], "first_index": key[1],
                               "loss_first": result.loss_curve[0], "loss_last": result.loss_curve[-1],
                               "guide_accuracy_after": result.guide_accuracy_after})
                if describe is not None:
                    self.echo(describe(key, result))
            if todo and time.perf_counter() - last >= PROGRESS_EVERY_S:
                last = time.perf_counter()
                self.echo(f"{phase}s: {total - len(todo)}/{total} done")
        return results
