"""The experiment core's pieces: named seed streams, typed specs on one ray.put, progress, results, report."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SMOKE

from orchestrator.config.experiment import load_config
from orchestrator.run import report
from orchestrator.run.monitor import finished_results, progress_line
from orchestrator.run.plan import member_specs
from orchestrator.run.rundir import RunLayout
from workers.committee.voting import committee_report
from workers.errors import CommitteeError
from workers.model.bert import build_mlm, init_from_streams
from workers.text.corpus import Ragged
from workers.train.finetune import bucketed_batches
from workers.train.member import MemberResult, Role, SharedArrays, classifier_for, save_result
from workers.train.pretrain import SpecialIds
from workers.train.seeds import numpy_rng, stream_seed

SPECIAL = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=2000)


def no_arrays(num_classes: int = 4) -> SharedArrays:
    """Arrays with nothing in them: enough to build a member's models (they need only the vocabulary)."""
    empty = Ragged(ids=np.zeros(0, dtype=np.int32), offsets=np.zeros(1, dtype=np.int64))
    labels = np.zeros(0, dtype=np.int64)
    return SharedArrays(np.zeros((0, 8), dtype=np.int32), empty, labels, empty, labels, empty, labels,
                        num_classes, SPECIAL)


def initial_encoder(spec, arrays) -> dict[str, torch.Tensor]:
    """The encoder a member starts from: its masked LM's (pre-training roles) or its classifier's (scratch)."""
    if spec.pretrains:
        mlm = build_mlm(spec.model.bert_config(SPECIAL.vocab_size, arrays.num_classes))
        init_from_streams(mlm, spec.seed, f"init/{spec.role.value}")
        encoder = mlm.bert
    else:
        encoder = classifier_for(spec, arrays).bert
    return {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}


@pytest.fixture(scope="module")
def four_member_specs(tmp_path_factory):
    cfg = load_config(SMOKE, ["committee.members=4"])
    return member_specs(cfg, RunLayout.of(cfg, tmp_path_factory.mktemp("run")))


def test_no_two_members_start_from_the_same_encoder(four_member_specs):
    arrays = no_arrays()
    encoders = {s.name: initial_encoder(s, arrays) for s in four_member_specs}
    assert len(encoders) == 9  # 4 members, the deep model, 4 scratch twins
    for (a, ea), (b, eb) in itertools.combinations(encoders.items(), 2):
        shared = [k for k in ea if k in eb and ea[k].shape == eb[k].shape and "weight" in k and "LayerNorm" not in k]
        assert shared, (a, b)
        assert all(not torch.equal(ea[k], eb[k]) for k in shared), f"{a} and {b} share initial weights"


def test_twins_share_the_head_and_the_fine_tuning_order(four_member_specs):
    arrays = no_arrays()
    by_name = {s.name: s for s in four_member_specs}
    lengths = np.random.default_rng(0).integers(5, 60, size=200)
    for i in range(4):
        member, twin = by_name[f"member-{i:02d}"], by_name[f"scratch-{i:02d}"]
        assert (member.role, twin.role) == (Role.PRETRAINED, Role.SCRATCH)
        assert member.seed == twin.seed and member.finetune == twin.finetune
        head_m, head_t = classifier_for(member, arrays), classifier_for(twin, arrays)
        for part in ("bert.pooler.dense.weight", "classifier.weight", "classifier.bias"):
            assert torch.equal(head_m.state_dict()[part], head_t.state_dict()[part]), part
        for epoch in range(2):
            order_m = bucketed_batches(lengths, 16, numpy_rng(member.finetune.seed, "finetune/order", epoch))
            order_t = bucketed_batches(lengths, 16, numpy_rng(twin.finetune.seed, "finetune/order", epoch))
            assert all(np.array_equal(a, b) for a, b in zip(order_m, order_t))
    heads = [classifier_for(by_name[f"member-{i:02d}"], arrays).classifier.weight for i in range(4)]
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(heads, 2))


def test_streams_are_distinct_and_stable():
    names = [(0, "pretrain/mask", 0), (0, "pretrain/mask", 1), (1, "pretrain/mask", 0), (0, "pretrain/dropout", 0),
             (0, "finetune/dropout", 0), (0, "init/head", "classifier.weight")]
    seeds = [stream_seed(*n) for n in names]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [stream_seed(*n) for n in names]
    assert all(0 <= s < 2**63 for s in seeds)


def test_members_with_other_settings_share_one_put_of_the_arrays(ray_local, tmp_path):
    """A Tune-style caller: one ray.put of the arrays, members differing only in their learning rate."""
    from orchestrator.run.plan import member_spec
    from orchestrator.run.prepare import prepare
    from workers.train.actors import MemberActor, ProgressBoard

    cfg = load_config(SMOKE, ["pretrain.max_steps=8", "finetune.epochs=1"])
    arrays_ref = ray_local.put(prepare(cfg, echo=lambda _: None).arrays)
    base = member_spec(cfg, Role.PRETRAINED, 0, str(tmp_path / "a"))
    specs = [base, replace(base, pretrain=replace(base.pretrain, lr=base.pretrain.lr / 10), out_dir=str(tmp_path / "b")),
             replace(base, out_dir=str(tmp_path / "c"))]
    board = ProgressBoard.remote()
    actors = [MemberActor.remote(1) for _ in specs]
    results = [r[s.name] for r, s in zip(ray_local.get([a.run_group.remote([s], arrays_ref, board)
                                                         for a, s in zip(actors, specs)]), specs)]
    first, slower, again = (r.pretrain_stats["final_loss"] for r in results)
    assert first != slower, "a different learning rate trains differently"
    assert first == again, "the same settings on the same arrays train identically"
    assert [r.name for r in results] == ["member-00"] * 3


# ----------------------------------------------------------------------------------------------
# monitor and report pieces


def _result(name: str, role: Role, index: int, val: float, test: float, logits: np.ndarray, steps: int = 30,
            layers: int = 1):
    return MemberResult(name, role.value, index, index, layers, 1000, val, test, logits, logits,
                        pretrain_stats={"steps": steps, "tokens": 100, "train_s": 2.0, "tokens_per_s": 50.0,
                                        "final_loss": 3.0}
                        if role is not Role.SCRATCH else {})


def test_progress_line_shows_each_phase_and_who_waits(four_member_specs):
    running = four_member_specs[:4]
    latest = {
        "member-00": {"phase": "start", "node_ip": "10.0.0.1"},
        "member-01": {"phase": "pretrain", "step": 10, "max_steps": 30, "loss": 7.123, "tokens_per_s": 12345.0},
        "member-02": {"phase": "finetune", "epoch": 1, "epochs": 2},
    }
    assert progress_line(latest, running) == (
        "member-00 starting on 10.0.0.1 | member-01 pretrain 10/30 loss 7.12 12.3k tok/s | "
        "member-02 finetune epoch 1/2 | 1 waiting for resources")


def test_finished_results_are_kept_and_a_different_member_is_refused(four_member_specs):
    specs = four_member_specs
    logits = np.eye(4, dtype=np.float32)
    save_result(_result("member-00", Role.PRETRAINED, 0, 0.5, 0.5, logits), specs[0].out_dir)
    assert list(finished_results(specs)) == ["member-00"]
    save_result(_result("member-01", Role.PRETRAINED, 1, 0.5, 0.5, logits, steps=99), specs[1].out_dir)
    with pytest.raises(CommitteeError, match="holds a different member-01"):
        finished_results(specs)


def test_report_is_built_from_results_and_votes(four_member_specs):
    cfg = load_config(SMOKE, ["committee.members=4"])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=20)
    results = {}
    for spec in four_member_specs:
        logits = rng.normal(size=(20, 4)).astype(np.float32)
        acc = float((logits.argmax(1) == labels).mean())
        results[spec.name] = _result(spec.name, spec.role, spec.index, acc, acc, logits, layers=spec.model.num_layers)
    groups = {"pretrained": [s for s in four_member_specs if s.role is Role.PRETRAINED],
              "scratch": [s for s in four_member_specs if s.role is Role.SCRATCH]}
    votes = {}
    for label, specs in groups.items():
        stack = np.stack([results[s.name].test_logits for s in specs])
        votes[label] = committee_report(stack, stack, labels, labels, 10.0)
    corpus = {"articles": 60, "corpus_tokens": 1000, "blocks": 10, "vocab_size": 2000, "token_overlap": 0.9,
              "train_examples": 160, "val_examples": 40, "test_examples": 20}
    out = report.build(cfg, corpus, results, four_member_specs, votes, {"wall_s": 1.0, "prepare_s": 0.5})
    assert [m["name"] for m in out["members"]] == [s.name for s in four_member_specs if s.role is not Role.DEEP]
    assert out["deep"]["layers"] == cfg.deep.num_layers
    assert out["committee"]["soft"] == votes["pretrained"]["rules"]["soft"]
    assert [p["pretrained_accuracy"] for p in out["committee_curve"]] == votes["pretrained"]["curve"]
    assert out["timing"]["pretrain_tokens_per_s"] == pytest.approx(50.0)  # 4 x 100 tokens in 4 x 2 s
    md = report.markdown(out, RunLayout.of(cfg, "runs/x").run_dir, "committee run x.yaml")
    pct = lambda arm, rule: f"{100 * votes[arm]['rules'][rule]['test_accuracy']:.1f}"  # noqa: E731
    committee_rows = md.split("## Committee (test accuracy", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    for rule in ("soft", "logit", "hard", "weighted"):  # each vote's row holds both committees' accuracies
        row = next(line for line in committee_rows if line.startswith(f"| {rule} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].split()[0] == pct("pretrained", rule) and cells[2].split()[0] == pct("scratch", rule), row
    reproduce = md.split("## Reproduce", 1)[1].split("```")[1].strip().splitlines()
    assert reproduce[0] == "committee run x.yaml"
    assert reproduce[1].startswith("committee run runs/x/config.yaml --run-dir runs/x-again")
