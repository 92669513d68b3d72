"""What teaches a distillation's students, and what they are measured against.

- **The members' prior** (CV-DD's alpha): with `distill.prior.source: student` (the default, CV-DD's
  definition), alpha_i is the validation accuracy of students taught by member i alone on the random real
  examples at `distill.prior.ipc` (as the set of `random_single` would be with member i as its expert); with
  `validation`, member i's own validation accuracy. Nothing is chosen on the test split. Alpha weights the
  relabel (softmax(alpha% / 10)) and recover (softmax(alpha% / 5)), and names the best member (the single
  expert of random_single and recover_single).
- **Teachers**: with `distill.student.relabel: per_view` every soft-label set's rule (SOFT_RULES) relabels each
  augmented view a student trains on (`workers.distill.students.ViewTeacher`); kd_full's is `distill.kd.rule`.
- **Students** as Ray tasks, one per (method, IPC, seed), each row saved as it arrives (`--resume`).
- **References** for kd_full: the soft committee's and the best member's test accuracy, and their latency next
  to one student's, timed side by side in this process (`workers.distill.latency`).
"""

from __future__ import annotations

import numpy as np

from orchestrator.run.plan import attention_settings, model_settings, student_specs
from workers.distill import attention as wa
from workers.distill import students as ws
from workers.distill.sets import DistilledSet
from workers.errors import CommitteeError

# the rule and members (None: all; "best": the best member by alpha) of each soft-label method's labels
SOFT_RULES = {"random_single": ("prior_weighted", "best"), "random_soft": ("mean_probability", None),
              "random_equal": ("equal_logit", None), "random_prior": ("prior_weighted", None),
              "selected_prior": ("prior_weighted", None), "recover": ("prior_weighted", None),
              "recover_single": ("prior_weighted", "best")}
PRIOR_METHOD = "prior"  # the prior's students are rows of method "prior.<member name>"


def student_model(cfg):
    """The students' shape (ModelSettings)."""
    return model_settings(cfg, cfg.distill.student.num_layers)


# ----------------------------------------------------------------------------------------------
# kd_full's unlabelled texts


def unlabelled_pool(cfg) -> list[str]:
    """Texts of the task's training file outside the run's train, validation and test splits (labels dropped),
    in a fixed order drawn from stream distill/unlabelled."""
    from orchestrator.run.prepare import load_cfg_task
    from workers.data import loading
    from workers.data.task_examples import dataset_task_source
    from workers.train.seeds import numpy_rng

    spec = loading.task_spec(cfg.task, cfg.data.root)
    if spec.few_rel_path is not None:
        raise CommitteeError(f"distill.kd.unlabelled_texts takes texts from the task's training file; {spec.name} "
                             f"has none beyond its splits: set distill.kd.unlabelled_texts=0")
    splits = load_cfg_task(cfg, spec)
    used = set(splits.train_texts) | set(splits.val_texts) | set(splits.test_texts)
    pool = sorted({t for t in dataset_task_source(spec).train_texts if t not in used})
    order = numpy_rng(cfg.distill.seed, "distill/unlabelled").permutation(len(pool))
    return [pool[i] for i in order]


def check_unlabelled(cfg) -> None:
    """Refuse more unlabelled texts than the task's training file has outside the splits."""
    wanted = cfg.distill.kd.unlabelled_texts
    if wanted and "kd_full" in cfg.distill.methods:
        available = len(unlabelled_pool(cfg))
        if wanted > available:
            raise CommitteeError(f"distill.kd.unlabelled_texts is {wanted}, but the task's training file has "
                                 f"{available} texts outside the run's splits; lower it")


def unlabelled_examples(cfg, tokenizer, count: int):
    """The first `count` texts of `unlabelled_pool`, encoded (Ragged); None for 0."""
    from workers.text.corpus import encode

    if not count:
        return None
    return encode(tokenizer, unlabelled_pool(cfg)[:count], max_length=cfg.task.max_length)


# ----------------------------------------------------------------------------------------------
# the stage


class Teaching:
    """The prior, the students and the references of one `orchestrator.distill.stages.Distillation`."""

    def __init__(self, distillation):
        self.dist = distillation
        self.cfg, self.d, self.echo = distillation.cfg, distillation.d, distillation.echo
        self.ray, self.arrays, self.store = distillation.ray, distillation.arrays, distillation.store
        self.num_classes = distillation.num_classes

    # -- the prior -------------------------------------------------------------------------------

    def prior(self, committee, random_rows: np.ndarray) -> tuple[np.ndarray, dict]:
        """(alpha [K] in [0, 1], what the report says about it)."""
        p = self.d.prior
        run = self.dist.committee_run
        if p.source == "validation":
            return np.asarray(committee.val_accuracy, dtype=np.float64), {"source": "validation"}
        rows = random_rows[:p.ipc * self.num_classes]
        examples, labels = self._take(rows)
        logits = committee.logits(examples)  # [K, n, classes]: each member's fixed labels (relabel: fixed)
        jobs = []
        for k, name in enumerate(run.names):
            teacher = ws.ViewTeacher((str(run.classifier_dirs[k]),), "prior_weighted", (1.0,),
                                     self.d.relabel_temperature)
            dset = DistilledSet(f"{PRIOR_METHOD}.{name}", p.ipc, examples, labels, logits[k].astype(np.float32), rows)
            per_view = teacher if self.d.student.relabel == "per_view" else None
            for spec in student_specs(self.cfg, dset.method, p.ipc, self.dist.base_dir, per_view, seeds=p.seeds):
                jobs.append((spec, dset))
        self.echo(f"prior: {len(jobs)} student(s), each taught by one member on {p.ipc} random example(s) per "
                  f"class, scored on the validation split")
        found = self._train(jobs, evaluate_on="val")
        alpha = np.array([np.mean([r["test_accuracy"] for r in found if r["method"] == f"{PRIOR_METHOD}.{name}"])
                          for name in run.names])
        self.echo("prior alpha: " + ", ".join(f"{n} {100 * a:.1f}%" for n, a in zip(run.names, alpha)))
        info = {"source": "student", "ipc": p.ipc, "seeds": p.seeds, "alpha": alpha.tolist(),
                "students": [{k: r[k] for k in ("method", "seed", "test_accuracy")}  # in member order, not finish order
                             for r in sorted(found, key=lambda r: (r["method"], r["seed"]))]}
        return alpha, info

    def _take(self, rows: np.ndarray):
        from workers.distill.sets import take

        return take(self.arrays.train, rows), self.arrays.train_labels[rows]

    # -- teachers -----------------------------------------------------------------------------------

    def teacher(self, method: str) -> ws.ViewTeacher | None:
        """Who relabels the views of `method`'s students (None: hard labels, fixed labels, or no teacher)."""
        if self.d.student.relabel != "per_view":
            return None
        if method == "kd_full":
            rule, which = self.d.kd.rule, None
        elif method in SOFT_RULES:
            rule, which = SOFT_RULES[method]
        else:
            return None
        members = self.dist.members_of(which) or list(range(len(self.dist.alpha)))
        run = self.dist.committee_run
        return ws.ViewTeacher(tuple(str(run.classifier_dirs[k]) for k in members), rule,
                              tuple(float(self.dist.alpha[k]) for k in members), self.d.relabel_temperature)

    # -- students -------------------------------------------------------------------------------

    def post_eval(self, sets: dict, attention_sets: dict) -> list[dict]:
        """Students on every (method, IPC) set and seed, as Ray tasks; one row per student (its test accuracy)."""
        jobs = []
        for method in self.d.methods:
            if method == "attention":
                for ipc in self.d.ipc:
                    jobs += [(spec, attention_sets[ipc]) for spec in
                             student_specs(self.cfg, method, ipc, self.dist.base_dir)]
                continue
            dset, teacher = sets[method], self.teacher(method)
            for ipc in ([None] if method in ("full", "kd_full") else self.d.ipc):
                part = dset if ipc is None else dset.first(ipc, self.num_classes)
                jobs += [(spec, part) for spec in student_specs(self.cfg, method, ipc, self.dist.base_dir, teacher)]
        rows = self._train(jobs, evaluate_on="test")
        return sorted(rows, key=lambda row: (self.d.methods.index(row["method"]), row["ipc"] or 0, row["seed"]))

    def _train(self, jobs: list[tuple], evaluate_on: str) -> list[dict]:
        """Train the students of `jobs` ((spec, set) pairs) not finished before, scored on `evaluate_on`."""
        arrays, dist = self.arrays, self.dist
        split, split_labels = (arrays.test, arrays.test_labels) if evaluate_on == "test" else (arrays.val,
                                                                                              arrays.val_labels)
        options = dist._task_options()
        task = self.ray.remote(**options)(ws.train_student)
        attention_task = self.ray.remote(**options)(wa.train_attention_student)
        split_ref, labels_ref = self.ray.put(split), self.ray.put(split_labels)
        refs, pending, rows = {}, {}, []
        for spec, payload in jobs:
            row = self.store.load_student(spec.method, spec.ipc, spec.seed)
            if row is not None:
                rows.append(row)
                continue
            key = id(payload)
            if key not in refs:
                refs[key] = self.ray.put(payload)
            common = (split_ref, labels_ref, arrays.special.pad, arrays.special.vocab_size, self.num_classes,
                      dist.threads)
            if isinstance(payload, wa.AttentionSet):
                ref = attention_task.remote(spec, refs[key], attention_settings(self.cfg), *common)
            else:
                ref = task.remote(spec, refs[key], *common)
            pending[ref] = (spec.method, spec.ipc, spec.seed)
        finished = f"; {len(rows)} finished before" if rows else ""
        self.echo(f"students: {len(pending)} to train ({self.d.student.init} init, relabel {self.d.student.relabel}, "
                  f"augmentation {self.d.student.augment}){finished}")
        rows += dist._collect(pending, "student", lambda key, row: self.store.save_student(row)).values()
        return rows

    # -- kd_full's references ------------------------------------------------------------------------

    def references(self, committee) -> dict:
        """The soft committee's and the best member's test accuracy, and the latency of the committee, the best
        member and one student (the kd_full student's shape), timed side by side."""
        import torch

        from workers.committee.voting import accuracy, aggregate
        from workers.distill.latency import latency_side_by_side, soft_vote
        from workers.model.packed import PackedCommittee

        arrays, best = self.arrays, self.dist.best
        logits = committee.logits(arrays.test)  # [K, n_test, classes]
        spec = student_specs(self.cfg, "kd_full", None, self.dist.base_dir)[0]
        student = ws.build_student(spec, arrays.special.vocab_size, self.num_classes).eval()
        models = {"committee": soft_vote(committee.packed()),
                  "best member": PackedCommittee.from_members([committee.members[best]]),
                  "student": PackedCommittee.from_members([student])}
        self.echo(f"latency: committee of {len(committee)}, best member and a student, "
                  f"{self.d.kd.latency_examples} test examples one at a time, side by side")
        with torch.no_grad():
            latency = latency_side_by_side(models, arrays.test, arrays.special.pad, count=self.d.kd.latency_examples)
        for key, prefix in (("ms_per_example", ""), ("throughput_ms_per_example", "throughput_")):
            ms = latency[key]
            latency[f"{prefix}student_over_committee"] = ms["student"] / ms["committee"]
            latency[f"{prefix}best_member_over_committee"] = ms["best member"] / ms["committee"]
        return {"soft_committee_test_accuracy": accuracy(aggregate(logits, "soft"), arrays.test_labels),
                "prior_committee_test_accuracy": accuracy(aggregate(logits, "weighted", _weights(self.dist)),
                                                          arrays.test_labels),
                "best_member": {"name": committee.names[best], "test_accuracy": accuracy(logits[best],
                                                                                         arrays.test_labels)},
                "members": len(committee), "latency": latency}


def _weights(dist) -> np.ndarray:
    from workers.committee.voting import prior_weights

    return prior_weights(dist.alpha, dist.d.relabel_temperature)

