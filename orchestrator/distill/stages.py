"""The stages of a distillation after its committee: prior, distilled sets, recover, attention sets, students,
report.

`Distillation.run` takes the members' prior (CV-DD's alpha: `orchestrator.distill.teaching`), makes the
real-example sets (from the committee's logits), the recovered sets and the attention sets (Ray tasks), trains
the students (Ray tasks, `teaching`), times the committee against one student, then writes the report. Each
stage's output goes to disk as soon as it is complete (`orchestrator.distill.store`), and a stage whose output
is already there is read back instead of redone: that is what `committee distill --resume` continues from.
A stage read back gives exactly what it gave when it was made (the same arrays, the same rows), so a
resumed distillation reports what an uninterrupted one reports, all but timing.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from orchestrator.distill import report as distill_report
from orchestrator.distill import teaching
from orchestrator.distill.teaching import SOFT_RULES
from orchestrator.distill.store import REAL_METHODS, RECOVER_METHODS, DistillStore
from orchestrator.run import cluster, follow
from orchestrator.run.finished import load_committee
from orchestrator.run.plan import attention_settings, recover_settings
from orchestrator.run.rundir import FinishedRun
from workers.committee.committee import Committee
from workers.distill import attention as wa
from workers.distill import recover as wr
from workers.distill import sets as wd

def _phase_iterations(iterations: int) -> tuple[int, int]:
    """Iterations of recover's whole-vocabulary phase and of its top-k phase (workers.distill.recover.recover)."""
    dense = iterations - iterations // 2
    return dense, iterations - dense


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
    """Soft labels from the voting actor: every method's fixed labels pass through it."""

    ray: object
    voter: object
    committee: Committee
    alpha: np.ndarray  # [K] the members' prior, in [0, 1]
    temperature: float

    def teacher(self, logits: np.ndarray, rule: str, members: list[int] | None = None) -> np.ndarray:
        """Teacher logits [n, classes] of `members` (default all) for their logits [K, n, classes]."""
        members = list(range(len(self.committee))) if members is None else members
        scores = self.ray.get(self.voter.soft_labels.remote(
            logits[members], rule, self.alpha[members], self.temperature))
        return wd.teacher_logits(scores, rule)


class Distillation:
    """The distillation stages on a claimed run directory; `run()` returns the report dict."""

    def __init__(self, run, cfg, committee_run: FinishedRun, base_dir, echo=print):
        self.cfg, self.d, self.echo = cfg, cfg.distill, echo
        self.ray, self.layout, self.arrays = run.ray, run.layout, run.prepared.arrays
        self.committee_run, self.base_dir = committee_run, base_dir  # the committee's run, read once
        self.store = DistillStore(self.layout.run_dir)
        self.num_classes = self.arrays.num_classes
        self.cpus = cfg.resources.num_cpus_per_member
        self.threads = max(1, int(self.cpus))
        self.texts, self.tokenizer = None, None  # set by run(): what saved sets are written with
        self.alpha, self.best = None, None  # set by run(): the members' prior and the best member by it
        self.metrics = open(self.layout.metrics, "a")
        self.t0 = time.perf_counter()

    def _log(self, record: dict) -> None:
        self.metrics.write(json.dumps({"time_s": round(time.perf_counter() - self.t0, 3), **record}) + "\n")
        self.metrics.flush()

    def _task_options(self) -> dict:
        gpus = self.cfg.resources.gpus_per_member
        return {"num_cpus": self.cpus, **({"num_gpus": gpus} if gpus > 0 else {})}

    def _save(self, dset: wd.DistilledSet, info: dict | None = None) -> None:
        self.store.save_set(dset, self.d.ipc, self.num_classes, self.texts, self.tokenizer, info)

    def members_of(self, which) -> list[int] | None:
        """Member indices of a SOFT_RULES entry: None (all), or [the best member by alpha]."""
        return [self.best] if which == "best" else which

    def run(self, command: str, timing: dict, t_start: float) -> dict:
        from orchestrator.run.prepare import load_cfg_task
        from workers.train.actors import VoterActor

        try:
            with _torch_threads(self.threads):
                committee = load_committee(self.committee_run)
            self.echo("committee: " + ", ".join(f"{n} (val {100 * a:.1f}%)" for n, a in
                                                zip(committee.names, committee.val_accuracy)))
            self.texts = load_cfg_task(self.cfg).train_texts  # the texts behind arrays.train, row for row
            self.tokenizer = committee.tokenizer
            # random real examples per class, ordered by IPC index: the random methods use them, recover and the
            # attention sets start from them, the prior's students learn from them (prefixes of one draw)
            drawn = max(self.d.ipc + [self.d.prior.ipc])
            random_rows = wd.index_major(wd.random_per_class(self.arrays.train_labels, self.num_classes, drawn,
                                                             self.d.seed), drawn)
            teach = teaching.Teaching(self)
            t0 = time.perf_counter()
            self.alpha, prior_info = teach.prior(committee, random_rows)
            self.best = int(np.argmax(self.alpha))
            timing["prior_s"] = time.perf_counter() - t0
            voter = VoterActor.options(**cluster.on_this_node()).remote()
            try:
                labels = _Labels(self.ray, voter, committee, self.alpha, self.d.relabel_temperature)
                t0 = time.perf_counter()
                sets = self.real_sets(committee, labels, random_rows[:max(self.d.ipc) * self.num_classes])
                timing["real_sets_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                recovered, recover_info = self.recover_sets(committee, labels,
                                                            random_rows[:max(self.d.ipc) * self.num_classes])
                timing["recover_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                attention_sets = self.attention_sets(committee, labels, random_rows)
                timing["attention_s"] = time.perf_counter() - t0
                members = self._members(committee, voter)
            finally:
                self.ray.kill(voter)
            sets.update(recovered)
            t0 = time.perf_counter()
            rows = teach.post_eval(sets, attention_sets)
            timing["students_s"] = time.perf_counter() - t0
            references = teach.references(committee) if "kd_full" in self.d.methods else None
            timing["wall_s"] = time.perf_counter() - t_start
            selection = {"rule": self.d.selection if "selected_prior" in self.d.methods else None}
            out = distill_report.build(self.cfg, self.num_classes, len(self.arrays.train), members, rows,
                                       self.store.saved_paths(self.d.methods, self.d.ipc), selection, recover_info,
                                       self.committee_run.run_dir, timing, prior=prior_info,
                                       attention=self._attention_info(attention_sets), references=references)
            distill_report.write(self.layout.run_dir, out, command)
            self.echo(f"distill report: {self.layout.run_dir / distill_report.MARKDOWN}")
            return out
        finally:
            self.metrics.close()

    def _members(self, committee: Committee, voter) -> list[dict]:
        """Each member's name, accuracies, alpha and prior weights (relabel and recover temperatures), from the
        voter."""
        run = self.committee_run
        relabel = self.ray.get(voter.prior_weights.remote(self.alpha, self.d.relabel_temperature))
        recover = self.ray.get(voter.prior_weights.remote(self.alpha, self.d.recover.temperature))
        return [{"name": name, "val_accuracy": float(val), "test_accuracy": float(test), "alpha": float(alpha),
                 "relabel_weight": float(w10), "recover_weight": float(w5), "best": i == self.best}
                for i, (name, val, test, alpha, w10, w5) in enumerate(zip(
                    run.names, run.val_accuracy, run.test_accuracy, self.alpha, relabel, recover))]

    # -- real examples -------------------------------------------------------------------------

    def real_sets(self, committee: Committee, labels: _Labels, random_rows: np.ndarray) -> dict:
        """DistilledSets at the largest IPC for the real-example methods (the smaller IPCs are their prefixes),
        plus the full training split and kd_full's transfer set; a set already on disk is read back, each new
        one is saved once made."""
        arrays, top = self.arrays, max(self.d.ipc)
        train, train_labels = arrays.train, arrays.train_labels
        wanted = [m for m in REAL_METHODS if m in self.d.methods]
        sets = {m: self.store.load_real_set(m, top, train, train_labels, self.num_classes)
                for m in wanted if self.store.has_set(m)}
        if sets:
            self.echo(f"distilled sets already made: {', '.join(sets)}")
        todo = [m for m in wanted if m not in sets]
        logits = None
        if set(todo) - {"random_hard"}:
            with _torch_threads(self.threads):
                logits = committee.logits(train)  # [K, n_train, classes]: one packed forward over the split
            self.echo(f"committee logits on the {len(train)} training examples (packed: {committee.packs})")
        for method in todo:
            rows = (wd.index_major(self._select(committee, labels, logits, top), top)
                    if method == "selected_prior" else random_rows)
            soft = None
            if method in SOFT_RULES:
                rule, which = SOFT_RULES[method]
                soft = labels.teacher(logits[:, rows], rule, self.members_of(which))
            sets[method] = wd.DistilledSet(method, top, wd.take(train, rows), train_labels[rows], soft, rows)
            self._save(sets[method])
        if "full" in self.d.methods:
            sets["full"] = wd.DistilledSet("full", None, train, train_labels, None, np.arange(len(train)))
        if "kd_full" in self.d.methods:
            sets["kd_full"] = self.kd_transfer_set(committee, labels)
        return sets

    def kd_transfer_set(self, committee: Committee, labels: _Labels) -> wd.DistilledSet:
        """kd_full's examples: the training split and `distill.kd.unlabelled_texts` more texts of the task's
        training file (labels dropped), all labelled by the committee (`distill.kd.rule`); `labels` holds the
        committee's decision (the true class is not used)."""
        examples = self.arrays.train
        extra = teaching.unlabelled_examples(self.cfg, self.tokenizer, self.d.kd.unlabelled_texts)
        if extra is not None:
            examples = wd.concat_ragged([examples, extra])
            self.echo(f"kd_full: {len(extra)} unlabelled texts of the task's training file added to the "
                      f"{len(self.arrays.train)} training examples")
        with _torch_threads(self.threads):
            logits = committee.logits(examples)  # [K, n, classes]
        soft = labels.teacher(logits, self.d.kd.rule)
        return wd.DistilledSet("kd_full", None, examples, soft.argmax(axis=1).astype(np.int64), soft, None)

    def _select(self, committee: Committee, labels: _Labels, logits: np.ndarray, top: int) -> np.ndarray:
        arrays = self.arrays
        if self.d.selection == "herding":
            with _torch_threads(self.threads):
                features = committee.features(arrays.train)  # [K, n, h]
            flat = features.transpose(1, 0, 2).reshape(len(arrays.train), -1)  # [n, K * h]
            return wd.herding_per_class(flat, arrays.train_labels, self.num_classes, top)
        from workers.committee.voting import softmax

        probs = softmax(labels.teacher(logits, "prior_weighted").astype(np.float64))
        return wd.confident_per_class(probs, arrays.train_labels, self.num_classes, top)

    # -- recover -------------------------------------------------------------------------------

    def recover_sets(self, committee: Committee, labels: _Labels, random_rows) -> tuple[dict, dict]:
        """Recovered synthetic sets at the largest IPC (committee-guided and single-expert), relabelled; a set
        on disk is read back, and of the others only the recover tasks not finished before run."""
        methods = [m for m in RECOVER_METHODS if m in self.d.methods]
        sets, info = {}, {}
        for method in [m for m in methods if self.store.has_set(m)]:
            sets[method], info[method] = self.store.load_recovered_set(method, max(self.d.ipc))
        todo = [m for m in methods if m not in sets]
        if sets:
            self.echo(f"recovered sets already made: {', '.join(sets)}")
        if not todo:
            return sets, info
        top, per_task = max(self.d.ipc), self.d.recover.indices_per_task
        init_labels = self.arrays.train_labels[random_rows]
        chunks = {m: [range(start, min(top, start + per_task)) for start in range(0, top, per_task)] for m in todo}
        results = {(m, c.start): self.store.load_recover_task(m, c) for m in todo for c in chunks[m]}
        results = {key: res for key, res in results.items() if res is not None}
        results.update(self._run_recover_tasks(committee, random_rows, chunks, results))
        for method in todo:
            parts = [results[(method, c.start)] for c in chunks[method]]
            tokens = wd.concat_soft_tokens([p.tokens for p in parts], self.arrays.special.pad)
            with _torch_threads(self.threads):
                logits = committee.logits(tokens)  # [K, n, classes]: every member reads the soft tokens
            rule, which = SOFT_RULES[method]
            soft = labels.teacher(logits, rule, self.members_of(which))
            sets[method] = wd.DistilledSet(method, top, tokens, init_labels, soft, None)
            info[method] = self._recover_info(method, parts, soft, init_labels)
            self._save(sets[method], info[method])
        return {m: sets[m] for m in methods}, {m: info[m] for m in methods}

    def _run_recover_tasks(self, committee: Committee, random_rows, chunks: dict, done: dict) -> dict:
        """The recover tasks of `chunks` not in `done`, as Ray tasks; each result is saved as it arrives."""
        arrays, classes, r, top = self.arrays, self.num_classes, self.d.recover, max(self.d.ipc)
        todo = [(m, c) for m in chunks for c in chunks[m] if (m, c.start) not in done]
        if len(todo) < sum(len(c) for c in chunks.values()):
            self.echo(f"recover: {len(done)} task(s) already finished; running {len(todo)}")
        if not todo:
            return {}
        with _torch_threads(self.threads):
            stats = committee.hidden_stats(arrays.train)
        run, settings = self.committee_run, recover_settings(self.cfg)
        init_labels, ipc_index = arrays.train_labels[random_rows], np.repeat(np.arange(top), classes)
        guides = {m: wr.draw_guides(len(committee), range(top), self.d.seed,
                                    single=self.best if m == "recover_single" else None) for m in chunks}
        task = self.ray.remote(**self._task_options())(wr.recover_with_members)
        pending = {}
        for method, indices in todo:
            rows = np.arange(indices.start * classes, indices.stop * classes)
            ref = task.remote(run.classifier_dirs, self.alpha, stats,
                              wd.take(arrays.train, random_rows[rows]), init_labels[rows],
                              ipc_index[rows] - indices.start, guides[method][indices.start:indices.stop], settings,
                              arrays.special.pad, self.threads, rows)
            pending[ref] = (method, indices)
        self.echo(f"recover: {len(pending)} task(s) of up to {r.indices_per_task} IPC index(es) x {classes} classes, "
                  f"{r.iterations} iterations each, augmentation {r.augment} ({', '.join(chunks)})")
        results = self._collect(pending, "recover", self._recover_task_done)
        return {(method, indices.start): res for (method, indices), res in results.items()}

    def _recover_task_done(self, key: tuple[str, range], res: wr.RecoverResult) -> None:
        method, indices = key
        self.store.save_recover_task(method, indices, res)
        self.echo(f"recover {method} indices {indices.start}+: loss {res.loss_curve[0]:.3f} -> "
                  f"{res.loss_curve[-1]:.3f}, guides agree {100 * res.guide_accuracy_before:.0f}% -> "
                  f"{100 * res.guide_accuracy_after:.0f}% ({res.seconds:.0f} s)")

    def _recover_info(self, method: str, parts: list, soft: np.ndarray, init_labels: np.ndarray) -> dict:
        """A recovered set's figures for the report: loss and guides' agreement before and after, cost."""
        seen = sum(len(p.labels) for p in parts)
        iterations = self.d.recover.iterations
        return {
            "guides": "best member" if method == "recover_single" else "pair drawn per IPC index",
            "iterations": iterations,
            "augment": self.d.recover.augment,
            "loss_first": float(np.mean([p.loss_curve[0] for p in parts])),
            "loss_last": float(np.mean([p.loss_curve[-1] for p in parts])),
            "guide_accuracy_before": sum(p.guide_accuracy_before * len(p.labels) for p in parts) / seen,
            "guide_accuracy_after": sum(p.guide_accuracy_after * len(p.labels) for p in parts) / seen,
            "committee_agrees_with_class": float((soft.argmax(axis=1) == init_labels).mean()),
            "task_seconds": float(sum(p.seconds for p in parts)),
            # per iteration and task, for estimates: the whole-vocabulary half and the top-k half
            "seconds_per_iteration": [float(np.mean([p.phase_seconds[i] for p in parts])) / max(1, n)
                                      for i, n in enumerate(_phase_iterations(iterations))],
        }

    # -- attention sets (Maekawa et al. 2023) ----------------------------------------------------

    def attention_sets(self, committee: Committee, labels: _Labels, random_rows) -> dict:
        """An attention set per IPC ({ipc: AttentionSet}), learned in Ray tasks from the first examples of the
        random draw, the committee's prior-weighted labels and [CLS] attention; a set on disk is read back."""
        if "attention" not in self.d.methods:
            return {}
        sets = {ipc: self.store.load_attention_set(ipc) for ipc in self.d.ipc}
        sets = {ipc: aset for ipc, aset in sets.items() if aset is not None}
        todo = [ipc for ipc in self.d.ipc if ipc not in sets]
        if sets:
            self.echo(f"attention sets already learned: IPC {', '.join(map(str, sets))}")
        if not todo:
            return sets
        arrays, classes = self.arrays, self.num_classes
        with _torch_threads(self.threads):
            train_logits = committee.logits(arrays.train)  # [K, n_train, classes]
        train_soft = labels.teacher(train_logits, "prior_weighted")
        task = self.ray.remote(**self._task_options())(wa.attention_with_base)
        settings, model = attention_settings(self.cfg), teaching.student_model(self.cfg)
        train_ref, soft_ref = self.ray.put(arrays.train), self.ray.put(train_soft)
        pending = {}
        for ipc in todo:
            rows = random_rows[:ipc * classes]
            ref = task.remote(str(self.base_dir), model, arrays.special.vocab_size, classes,
                              wd.take(arrays.train, rows), arrays.train_labels[rows], train_soft[rows],
                              self.committee_run.classifier_dirs, train_ref, soft_ref, settings, arrays.special.pad,
                              self.threads)
            pending[ref] = ("attention", ipc)
        self.echo(f"attention: {len(pending)} set(s) (IPC {', '.join(map(str, todo))}), {settings.steps} steps each")
        sets.update({ipc: aset for (_, ipc), aset in self._collect(pending, "attention", self._attention_done).items()})
        return {ipc: sets[ipc] for ipc in self.d.ipc}

    def _attention_done(self, key: tuple[str, int], aset: wa.AttentionSet) -> None:
        self.store.save_attention_set(key[1], aset)
        self.echo(f"attention IPC {key[1]}: loss {aset.loss_curve[0]:.3f} -> {aset.loss_curve[-1]:.3f}, step size "
                  f"{aset.inner_lr:.4f} ({aset.seconds:.0f} s)")

    def _attention_info(self, sets: dict) -> dict:
        """Each attention set's figures for the report: outer loss first and last, learned step size, cost."""
        return {str(ipc): {"loss_first": float(a.loss_curve[0]), "loss_last": float(a.loss_curve[-1]),
                           "inner_lr": a.inner_lr, "seconds": a.seconds,
                           "soft_label_agrees_with_class": float((a.soft_labels.argmax(1) == a.labels).mean())}
                for ipc, a in sets.items()}

    # -- Ray tasks -----------------------------------------------------------------------------------

    def _collect(self, pending: dict, phase: str, on_result) -> dict:
        """Wait for Ray tasks as they finish (`follow.batches`): `on_result(key, result)` for each (it saves the
        result), a record in metrics.jsonl, and a progress line every few seconds; returns {key: result}."""
        results, todo, total = {}, dict(pending), len(pending)
        progress = follow.Every()
        for ready in follow.batches(self.ray, todo):
            for ref in ready:
                key = todo.pop(ref)
                result = follow.result_of(self.ray, ref, f"{phase} {key}")
                results[key] = result
                on_result(key, result)
                if phase == "student":
                    self._log({"phase": "student", **result})
                elif phase == "attention":
                    self._log({"phase": phase, "ipc": key[1], "loss_first": float(result.loss_curve[0]),
                               "loss_last": float(result.loss_curve[-1]), "inner_lr": result.inner_lr})
                else:
                    self._log({"phase": phase, "method": key[0], "first_index": key[1].start,
                               "loss_first": result.loss_curve[0], "loss_last": result.loss_curve[-1],
                               "guide_accuracy_after": result.guide_accuracy_after})
            if todo and progress.due():
                self.echo(f"{phase}s: {total - len(todo)}/{total} done")
        return results
