"""The stages of a distillation after its committee: distilled sets, recover, students, report.

`Distillation.run` makes the real-example sets (methods 1-5, from the committee's logits), the recovered
sets (method 6, Ray tasks) and trains the students (Ray tasks), then writes the report. Each stage's
output goes to disk as soon as it is complete (`orchestrator.distill.store`), and a stage whose output is
already there is read back instead of redone: that is what `committee distill --resume` continues from.
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
from orchestrator.distill.store import REAL_METHODS, RECOVER_METHODS, DistillStore
from orchestrator.run import cluster, follow
from orchestrator.run.finished import load_committee
from orchestrator.run.plan import recover_settings, student_specs
from orchestrator.run.rundir import FinishedRun
from workers.committee.committee import Committee
from workers.distill import recover as wr
from workers.distill import sets as wd
from workers.distill import students as ws


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

    def __init__(self, run, cfg, committee_run: FinishedRun, base_dir, echo=print):
        self.cfg, self.d, self.echo = cfg, cfg.distill, echo
        self.ray, self.layout, self.arrays = run.ray, run.layout, run.prepared.arrays
        self.committee_run, self.base_dir = committee_run, base_dir  # the committee's run, read once
        self.store = DistillStore(self.layout.run_dir)
        self.num_classes = self.arrays.num_classes
        self.cpus = cfg.resources.num_cpus_per_member
        self.threads = max(1, int(self.cpus))
        self.texts, self.tokenizer = None, None  # set by run(): what saved sets are written with
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
            top = max(self.d.ipc)
            # random real examples per class, ordered by IPC index: methods 1-4 use them, recover starts from them
            random_rows = wd.index_major(wd.random_per_class(self.arrays.train_labels, self.num_classes, top,
                                                             self.d.seed), top)
            voter = VoterActor.options(**cluster.on_this_node()).remote()
            try:
                labels = _Labels(self.ray, voter, committee, self.d.relabel_temperature)
                t0 = time.perf_counter()
                sets = self.real_sets(committee, labels, random_rows)
                timing["real_sets_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                recovered, recover_info = self.recover_sets(committee, labels, random_rows)
                timing["recover_s"] = time.perf_counter() - t0
                members = self._members(committee, voter)
            finally:
                self.ray.kill(voter)
            sets.update(recovered)
            t0 = time.perf_counter()
            rows = self.post_eval(sets)
            timing["students_s"] = time.perf_counter() - t0
            timing["wall_s"] = time.perf_counter() - t_start
            selection = {"rule": self.d.selection if "selected_prior" in self.d.methods else None}
            out = distill_report.build(self.cfg, self.num_classes, len(self.arrays.train), members, rows,
                                       self.store.saved_paths(self.d.methods, self.d.ipc), selection, recover_info,
                                       self.committee_run.run_dir, timing)
            distill_report.write(self.layout.run_dir, out, command)
            self.echo(f"distill report: {self.layout.run_dir / distill_report.MARKDOWN}")
            return out
        finally:
            self.metrics.close()

    def _members(self, committee: Committee, voter) -> list[dict]:
        """Each member's name, accuracies and prior weights (relabel and recover temperatures), from the voter."""
        run = self.committee_run
        relabel = self.ray.get(voter.prior_weights.remote(committee.val_accuracy, self.d.relabel_temperature))
        recover = self.ray.get(voter.prior_weights.remote(committee.val_accuracy, self.d.recover.temperature))
        return [{"name": name, "val_accuracy": float(val), "test_accuracy": float(test),
                 "relabel_weight": float(w10), "recover_weight": float(w5), "best": i == committee.best}
                for i, (name, val, test, w10, w5) in enumerate(zip(run.names, run.val_accuracy, run.test_accuracy,
                                                                   relabel, recover))]

    # -- real examples (methods 1-5 and full) ------------------------------------------------

    def real_sets(self, committee: Committee, labels: _Labels, random_rows: np.ndarray) -> dict:
        """DistilledSets at the largest IPC for methods 1-5 (the smaller IPCs are their prefixes), plus the
        full training split; a set already on disk is read back, each new one is saved once made."""
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
        soft_rules = {"random_single": ("prior_weighted", [committee.best]), "random_equal": ("mean_probability", None),
                      "random_prior": ("prior_weighted", None), "selected_prior": ("prior_weighted", None)}
        for method in todo:
            rows = (wd.index_major(self._select(committee, labels, logits, top), top)
                    if method == "selected_prior" else random_rows)
            soft = None
            if method in soft_rules:
                rule, members = soft_rules[method]
                soft = labels.teacher(logits[:, rows], rule, members)
            sets[method] = wd.DistilledSet(method, top, wd.take(train, rows), train_labels[rows], soft, rows)
            self._save(sets[method])
        if "full" in self.d.methods:
            sets["full"] = wd.DistilledSet("full", None, train, train_labels, None, np.arange(len(train)))
        return sets

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

    # -- recover (method 6) --------------------------------------------------------------------

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
            members = [committee.best] if method == "recover_single" else None
            soft = labels.teacher(logits, "prior_weighted", members)
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
                                    single=committee.best if m == "recover_single" else None) for m in chunks}
        task = self.ray.remote(**self._task_options())(wr.recover_with_members)
        pending = {}
        for method, indices in todo:
            rows = np.arange(indices.start * classes, indices.stop * classes)
            ref = task.remote(run.classifier_dirs, committee.val_accuracy, stats,
                              wd.take(arrays.train, random_rows[rows]), init_labels[rows],
                              ipc_index[rows] - indices.start, guides[method][indices.start:indices.stop], settings,
                              arrays.special.pad, self.threads)
            pending[ref] = (method, indices)
        self.echo(f"recover: {len(pending)} task(s) of up to {r.indices_per_task} IPC index(es) x {classes} classes, "
                  f"{r.iterations} iterations each ({', '.join(chunks)})")
        results = self._collect(pending, "recover", self._recover_task_done)
        return {(method, indices.start): res for (method, indices), res in results.items()}

    def _recover_task_done(self, key: tuple[str, range], res: wr.RecoverResult) -> None:
        method, indices = key
        self.store.save_recover_task(method, indices, res)
        self.echo(f"recover {method} indices {indices.start}+: loss {res.loss_curve[0]:.3f} -> "
                  f"{res.loss_curve[-1]:.3f}, guides agree {100 * res.guide_accuracy_before:.0f}% -> {100 * res.guide_accuracy_after:.0f}% "
                  f"({res.seconds:.0f} s)")

    def _recover_info(self, method: str, parts: list, soft: np.ndarray, init_labels: np.ndarray) -> dict:
        """A recovered set's figures for the report: loss and guides' agreement before and after, cost."""
        seen = sum(len(p.labels) for p in parts)
        iterations = self.d.recover.iterations
        return {
            "guides": "best member" if method == "recover_single" else "pair drawn per IPC index",
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

    # -- post-eval ------------------------------------------------------------------------------

    def post_eval(self, sets: dict) -> list[dict]:
        """Students on every (method, IPC) set and seed, as Ray tasks; one row per student. A student that
        finished before (its row on disk) is not trained again; each new row is saved as it arrives."""
        arrays = self.arrays
        task = self.ray.remote(**self._task_options())(ws.train_student)
        test_ref, labels_ref = self.ray.put(arrays.test), self.ray.put(arrays.test_labels)
        pending, rows = {}, []
        for method in self.d.methods:
            dset = sets[method]
            for ipc in ([None] if method == "full" else self.d.ipc):
                part_ref = None
                for spec in student_specs(self.cfg, method, ipc, self.base_dir):
                    row = self.store.load_student(method, ipc, spec.seed)
                    if row is not None:
                        rows.append(row)
                        continue
                    if part_ref is None:
                        part_ref = self.ray.put(dset if ipc is None else dset.first(ipc, self.num_classes))
                    ref = task.remote(spec, part_ref, test_ref, labels_ref, arrays.special.pad,
                                      arrays.special.vocab_size, self.num_classes, self.threads)
                    pending[ref] = (method, ipc, spec.seed)
        finished = f"; {len(rows)} finished before" if rows else ""
        self.echo(f"post-eval: {len(pending)} students ({self.d.student.init} init, {self.d.student.steps} steps "
                  f"each){finished}")
        rows += self._collect(pending, "student", lambda key, row: self.store.save_student(row)).values()
        return sorted(rows, key=lambda row: (self.d.methods.index(row["method"]), row["ipc"] or 0, row["seed"]))

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
                else:
                    self._log({"phase": phase, "method": key[0], "first_index": key[1].start,
                               "loss_first": result.loss_curve[0], "loss_last": result.loss_curve[-1],
                               "guide_accuracy_after": result.guide_accuracy_after})
            if todo and progress.due():
                self.echo(f"{phase}s: {total - len(todo)}/{total} done")
        return results
