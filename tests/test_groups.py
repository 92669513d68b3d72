"""Member groups (workers/train/groups.py, stacked.py): G members trained as one stacked model learn what each learns alone.

- equivalence: on CPU in fp32, a member trained in a group of 4 has its solo loss curve (to 1e-4) and
  weights, with dropout on (each member's dropout masks are drawn as its solo loop draws them) and off
  (attention through scaled_dot_product_attention), on padded and on packed blocks;
- isolation: changing one member's batch changes no other member's weights or optimizer state;
- checkpoints: a group member's checkpoint resumes alone, and a solo checkpoint resumes in a group
  (next to a member that starts from step 0);
- planning: which members share an actor, and `members_per_actor: auto`;
- a smoke run with `resources.members_per_actor=2` through a real local Ray gives the members of the
  solo loop, and `--resume` skips the finished ones.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SMOKE, run_cli

from orchestrator.config.experiment import load_config
from orchestrator.run.plan import auto_gpu_share, auto_members_per_actor, group_specs, member_specs
from orchestrator.run.rundir import RunLayout
from workers.model.bert import ModelSettings, bert_config, build_mlm, init_from_streams
from workers.model.stacked import StackedMLM
from workers.storage import checkpoint
from workers.train.groups import GroupMember, group_optimizer, group_train_step, member_training_bytes, pretrain_group
from workers.train.pretrain import RESUME_KEYS, PretrainSettings, SpecialIds, pretrain

FP32 = ("pretrain.precision=fp32", "finetune.precision=fp32")


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return small_corpus


def member_mlm(special: SpecialIds, seed: int, dropout: float = 0.1, layers: int = 1):
    model = build_mlm(bert_config(special.vocab_size, 32, 2, layers, max_position=64, dropout=dropout))
    init_from_streams(model, seed, "init/pretrained")
    return model


def settings(seed: int, max_steps: int = 8, **kw) -> PretrainSettings:
    base = dict(seed=seed, max_steps=max_steps, batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=2,
                mask_prob=0.15, precision="fp32", checkpoint_every=1000, log_every=1)
    return PretrainSettings(**{**base, **kw})


def solo_curve(special, blocks, seed: int, **model_kw) -> tuple[np.ndarray, torch.nn.Module]:
    model, losses = member_mlm(special, seed, **model_kw), []
    pretrain(model, blocks, special, settings(seed), on_log=lambda record: losses.append(record["loss"]))
    return np.array(losses), model


def assert_same_weights(a, b, atol: float = 1e-5) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol, msg=name)


@pytest.mark.parametrize("blocks_kind, dropout, layers", [("padded", 0.1, 1), ("packed", 0.0, 2)])
def test_a_member_in_a_group_of_four_learns_what_it_learns_alone(corpus, blocks_kind, dropout, layers):
    """Dropout 0.1 (masks drawn per member as alone) on padded blocks; dropout 0 (the sdpa path) on packed ones."""
    special, blocks = corpus["special"], corpus[blocks_kind]
    members = [GroupMember(f"member-{i}", settings(i), member_mlm(special, i, dropout, layers)) for i in range(4)]
    curves = {m.name: [] for m in members}
    stats = pretrain_group(members, blocks, special, on_log=lambda name, r: curves[name].append(r["loss"]))
    for i, member in enumerate(members):
        alone, alone_model = solo_curve(special, blocks, i, dropout=dropout, layers=layers)
        assert alone[-1] < alone[0]  # it learns
        np.testing.assert_allclose(curves[member.name], alone, rtol=1e-4)
        assert_same_weights(member.model, alone_model)
        assert stats[i]["final_loss"] == curves[member.name][-1] and stats[i]["group_size"] == 4
    assert len({c[-1] for c in curves.values()}) == 4  # four different members, not one


def test_a_group_in_bf16_stays_close_to_its_members_alone_in_bf16(corpus):
    """What `precision: auto` runs on a CPU with AMX or AVX-512 BF16: the stack's bf16 matmuls round
    differently from the solo loop's, so the curves agree to bf16 accuracy (2%), not to 1e-4."""
    special, blocks = corpus["special"], corpus["packed"]
    members = [GroupMember(f"member-{i}", settings(i, precision="bf16"), member_mlm(special, i)) for i in range(2)]
    curves = {m.name: [] for m in members}
    stats = pretrain_group(members, blocks, special, on_log=lambda name, r: curves[name].append(r["loss"]))
    assert {s["precision"] for s in stats} == {"bf16"}
    for i, member in enumerate(members):
        model, alone = member_mlm(special, i), []
        pretrain(model, blocks, special, settings(i, precision="bf16"), on_log=lambda r: alone.append(r["loss"]))
        np.testing.assert_allclose(curves[member.name], alone, rtol=0.02)


def _non_special_shift(special: SpecialIds) -> torch.Tensor:
    """A permutation of the vocabulary that moves every id but [PAD]/[CLS]/[SEP] to another such id, so a
    shifted batch has the same maskable positions (the same masks) and different tokens."""
    fixed = set(special.never_masked().tolist())
    movable = [i for i in range(special.vocab_size) if i not in fixed]
    perm = torch.arange(special.vocab_size)
    perm[movable] = torch.tensor(movable[1:] + movable[:1])
    return perm


def _train_two_steps(special, blocks, change_member: int | None) -> tuple[StackedMLM, dict]:
    seeds = (0, 1, 2)
    model = StackedMLM([member_mlm(special, s) for s in seeds]).train()
    optimizer, scheduler = group_optimizer(model, settings(0))
    shift = _non_special_shift(special)
    for step in range(2):
        batches = torch.from_numpy(np.stack([blocks[8 * step:8 * step + 8]] * 3)).long()  # [3, 8, 64]
        if change_member is not None:
            batches[change_member] = shift[batches[change_member]]
        group_train_step(model, optimizer, scheduler, batches, special, [settings(s) for s in seeds], step, "fp32")
    return model, optimizer.state_dict()


def test_a_group_never_mixes_members_gradients(corpus):
    special, blocks = corpus["special"], corpus["packed"]
    base, base_state = _train_two_steps(special, blocks, None)
    changed, changed_state = _train_two_steps(special, blocks, 1)
    for name, a, b in zip(base.names, base.weights, changed.weights):
        for g in (0, 2):
            assert torch.equal(a[g], b[g]), f"member {g}'s {name} moved when member 1's batch changed"
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(base.weights, changed.weights))
    for index, entries in base_state["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            other = changed_state["state"][index][key]
            assert torch.equal(entries[key][0], other[0]) and torch.equal(entries[key][2], other[2])


class Stop(Exception):
    pass


def _stop_at(step: int):
    def on_log(*args):
        if args[-1]["step"] == step:
            raise Stop
    return on_log


def test_checkpoints_move_between_a_group_and_the_solo_loop(corpus, tmp_path):
    special, blocks = corpus["special"], corpus["packed"]
    s0, s1 = settings(0, max_steps=4, checkpoint_every=2), settings(1, max_steps=4, checkpoint_every=2)
    whole = {i: member_mlm(special, i) for i in (0, 1)}
    for i, s in ((0, s0), (1, s1)):
        pretrain(whole[i], blocks, special, s)

    # a group of two stops after its step-2 checkpoints; member 0 resumes alone
    group = [GroupMember("m0", s0, member_mlm(special, 0), tmp_path / "m0"),
             GroupMember("m1", s1, member_mlm(special, 1), tmp_path / "m1")]
    with pytest.raises(Stop):
        pretrain_group(group, blocks, special, on_log=_stop_at(3))
    resumed = member_mlm(special, 0)
    stats = pretrain(resumed, blocks, special, s0, checkpoint_dir=tmp_path / "m0")
    assert stats["steps"] == 4
    assert_same_weights(resumed, whole[0])

    # member 1 stops alone after its step-2 checkpoint; it resumes in a group next to a member at step 0
    with pytest.raises(Stop):
        pretrain(member_mlm(special, 1), blocks, special, s1, checkpoint_dir=tmp_path / "solo1", on_log=_stop_at(3))
    assert checkpoint.latest(tmp_path / "solo1", RESUME_KEYS).name == "step-0000002"
    again = [GroupMember("m0", s0, member_mlm(special, 0), tmp_path / "fresh0"),
             GroupMember("m1", s1, member_mlm(special, 1), tmp_path / "solo1")]
    pretrain_group(again, blocks, special)
    assert_same_weights(again[0].model, whole[0])
    assert_same_weights(again[1].model, whole[1])


def test_members_are_grouped_by_shape_and_settings(tmp_path):
    cfg = load_config(SMOKE, ["committee.members=4"])
    specs = member_specs(cfg, RunLayout.of(cfg, tmp_path / "run"))
    names = lambda groups: [[s.name for s in g] for g in groups]  # noqa: E731
    assert names(group_specs(specs, 1)) == [[s.name] for s in specs]
    scratch_alone = [["scratch-00"], ["scratch-01"], ["scratch-02"], ["scratch-03"]]  # they only fine-tune
    assert names(group_specs(specs, 2)) == [["member-00", "member-01"], ["member-02", "member-03"], ["deep"],
                                            *scratch_alone]
    assert names(group_specs(specs, 3)) == [["member-00", "member-01", "member-02"], ["member-03"], ["deep"],
                                            *scratch_alone]
    slower = [replace(s, pretrain=replace(s.pretrain, lr=s.pretrain.lr / 10)) if s.name == "member-01" else s
              for s in specs[:4]]
    assert names(group_specs(slower, 4)) == [["member-00", "member-02", "member-03"], ["member-01"]]


def test_auto_members_per_actor():
    paper = ModelSettings(hidden_size=768, num_heads=12, num_layers=1, intermediate_size=None, max_position=128,
                          dropout=0.1)
    member_bytes = member_training_bytes(paper, settings(0, batch_size=32), 30522)
    assert 0.8e9 < member_bytes < 1.6e9  # 64 members measured 58 GiB together on an H200
    h200 = 141 * 10**9
    assert auto_members_per_actor(0.0, member_bytes, None, 64) == 1  # CPU
    assert auto_members_per_actor(1 / 32, member_bytes, h200, 64) == 32  # the GPU share decides
    a100 = 40 * 10**9
    assert auto_members_per_actor(0.01, member_bytes, a100, 200) == int(0.8 * a100 / member_bytes) == 27  # the memory
    assert auto_members_per_actor(0.01, member_bytes, 8 * 10**9, 4) == 4  # never more than the members
    assert auto_members_per_actor(1.0, member_bytes, h200, 64) == 1  # a whole GPU per member: no stack


def test_auto_groups_cut_short_by_memory_ask_for_their_memory_share_of_the_gpu():
    paper = ModelSettings(hidden_size=768, num_heads=12, num_layers=1, intermediate_size=None, max_position=128,
                          dropout=0.1)
    member_bytes = member_training_bytes(paper, settings(0, batch_size=32), 30522)
    a100, h200 = 40 * 10**9, 141 * 10**9
    share = auto_gpu_share(0.01, member_bytes, a100)
    assert share == pytest.approx(member_bytes / (0.8 * a100)) and share > 0.01
    group = auto_members_per_actor(0.01, member_bytes, a100, 200)
    # the groups Ray can pack on one GPU by their shares hold at most 80% of its memory together
    groups_on_one_gpu = math.floor(1.0 / (group * share) + 1e-9)
    assert groups_on_one_gpu == 1 and groups_on_one_gpu * group * member_bytes <= 0.8 * a100
    assert auto_gpu_share(1 / 32, member_bytes, h200) == 1 / 32  # memory to spare: the configured share
    assert auto_gpu_share(0.25, member_bytes, None) == 0.25  # memory unknown: the configured share
    assert auto_gpu_share(0.0, member_bytes, a100) == 0.0  # CPU
    assert auto_gpu_share(0.5, 10**12, a100) == 1.0  # never more than one GPU


# ----------------------------------------------------------------------------------------------
# one real local Ray run of the smoke config with groups of two


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "grouped"
    proc = run_cli("run", SMOKE, *FP32, "resources.members_per_actor=2", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.slow  # end to end, over a minute here: make test-all
def test_a_grouped_smoke_run_reports_the_members_of_the_solo_loop(grouped_run, tmp_path):
    """members_per_actor=2: member-00 and member-01 pre-train as one stack; each then matches the member
    run alone (run_member, no Ray) in pre-training loss and accuracy."""
    from orchestrator.run.prepare import prepare
    from workers.train.member import Role, run_member

    run_dir, proc = grouped_run
    assert "slot(s) of 2 members' resources" in proc.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    grouped = {r["member"] for r in records if r.get("phase") == "pretrain" and r.get("group_size") == 2}
    assert grouped == {"member-00", "member-01"}  # the two members pre-trained as one stack
    report = json.loads((run_dir / "report.json").read_text())
    assert report["precision"]["pretrain"] == {"setting": "fp32", "chosen": [
        {"precision": "fp32", "reason": report["precision"]["pretrain"]["chosen"][0]["reason"], "members": 3}]}
    assert "- precision: pre-training and fine-tuning: fp32 (as set in the config; the CPU" in \
        (run_dir / "report.md").read_text()

    cfg = load_config(SMOKE, list(FP32))
    arrays = prepare(cfg, echo=lambda _: None).arrays  # the run's cached arrays
    n_val = len(arrays.val_labels)
    for spec in member_specs(cfg, RunLayout.of(cfg, tmp_path / "solo")):
        if spec.role is not Role.PRETRAINED:  # the others ran alone in the group run too (groups of one, or
            continue                          # scratch members, which only fine-tune, each as alone)
        alone = run_member(spec, arrays)
        member = next(m for m in report["members"] if m["name"] == spec.name)
        assert member["pretrain_final_loss"] == pytest.approx(alone.pretrain_stats["final_loss"], rel=1e-4)
        assert abs(member["val_accuracy"] - alone.val_accuracy) <= 1 / n_val + 1e-9
        assert member["test_accuracy"] == pytest.approx(alone.test_accuracy, abs=0.01)


@pytest.mark.slow  # end to end, over a minute here: make test-all
def test_resume_skips_the_finished_members_of_a_grouped_run(grouped_run):
    run_dir, _ = grouped_run
    before = json.loads((run_dir / "report.json").read_text())
    for name in ("member-01", "scratch-01"):
        (run_dir / "members" / name / "result.npz").unlink()
        shutil.rmtree(run_dir / "members" / name / "classifier")
    proc = run_cli("run", "--resume", run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 member(s) already finished; running 2" in proc.stdout
    after = json.loads((run_dir / "report.json").read_text())
    assert after["members"] == before["members"]


# ----------------------------------------------------------------------------------------------
# the benchmark's CUDA rows, run on the CPU (the code path; the numbers need a GPU)


def test_gpu_rows_run_on_the_cpu_and_skip_past_the_time_budget(ray_local, monkeypatch):
    """Every side of bench.sections.groups_gpu's CUDA rows, at a tiny shape on the CPU through a real local Ray
    (compiling through aot_eager: inductor's C++ build takes a minute here); with no time left every row is
    skipped, saying why, and none is left out."""
    from bench.options import QUICK, BenchOptions
    from bench.prepare import prepare as bench_prepare
    from bench.sections.groups_gpu import GpuPlan, bench_groups_gpu
    from workers.train import pretrain as member_loop

    monkeypatch.setattr(member_loop, "COMPILE_BACKEND", "aot_eager")

    opts = BenchOptions(model="tiny", quick=True, precision="fp32")
    prep = bench_prepare(opts, QUICK, lambda _: None)
    plan = GpuPlan(shapes={"tiny": (32, 2, 2000)}, members=(1, 2), compile_members=(), fractional_members=(2,))
    saved = []
    result = bench_groups_gpu(prep, opts, QUICK, lambda _: None, None, plan, device="cpu",
                              on_row=lambda partial: saved.append(len(partial["rows"])))
    sides = [(r["members"], r["side"]) for r in result["rows"]]
    assert sides == [(1, "alone"), (1, "stack"), (2, "stack"), (1, "alone, compiled"), (2, "fractional")]
    assert all(r["tokens_per_s"] > 0 and r["peak_gpu_mib"] is None for r in result["rows"])
    assert saved == [1, 2, 3, 4, 5]  # partial results after every row

    late = bench_groups_gpu(prep, opts, QUICK, lambda _: None, None, replace(plan, budget_s=0.0), device="cpu")
    assert [(r["members"], r["side"]) for r in late["rows"]] == sides
    assert all(r["skipped"] == "the section's time budget (0 s) was spent" for r in late["rows"])
