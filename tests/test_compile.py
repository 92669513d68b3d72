"""`compile: true` (PretrainSettings) trains what the eager loops train.

- the member loop compiled (torch.compile, dropout on) has the eager loop's loss curve and weights;
- a group compiled (dropout masks drawn ahead, passed in as tensors) has the eager group's loss curves;
- drawing a group's dropout masks ahead gives exactly the masks drawn during the pass.
The fast tests compile through the `aot_eager` backend (graph capture and autograd tracing, no code
generation); the `slow` ones through inductor, which needs a C++ compiler on a CPU and takes about a
minute per graph on a shared 2-core machine.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from workers.model.bert import bert_config, build_mlm, init_from_streams
from workers.model.stacked import DropoutStreams, StackedMLM, _stack_losses_drawn, masked_rows, stack_losses
from workers.text.masking import mask_tokens
from workers.train import pretrain as member_loop
from workers.train.groups import group_optimizer, group_train_step
from workers.train.pretrain import PretrainSettings, batch_at, train_step
from workers.train.schedule import make_optimizer
from workers.train.seeds import torch_generator

STEPS = 4


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return small_corpus


def settings(seed: int = 3, **kw) -> PretrainSettings:
    base = dict(seed=seed, max_steps=STEPS, batch_size=8, lr=5e-3, weight_decay=0.01, warmup_steps=0,
                mask_prob=0.15, precision="fp32", checkpoint_every=1000, log_every=1000)
    return PretrainSettings(**{**base, **kw})


def member(special, seed: int):
    """A tiny member (dropout 0.1 on hidden states and attention) with its seed's initial weights."""
    model = build_mlm(bert_config(special.vocab_size, 32, 2, 1, max_position=64))
    init_from_streams(model, seed, "init/pretrained")
    return model.train()


def solo_curve(corpus, compile_: bool) -> tuple[np.ndarray, dict]:
    special, blocks = corpus["special"], corpus["packed"]
    s = settings(compile=compile_)
    model = member(special, s.seed)
    optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
    losses = [train_step(model, optimizer, scheduler, torch.from_numpy(batch_at(blocks, step, 8, s.seed)).long(),
                         special, s, step)[0] for step in range(STEPS)]
    return np.array(losses), model.state_dict()


def group_curves(corpus, compile_: bool, seeds=(3, 4, 5)) -> np.ndarray:
    special, blocks = corpus["special"], corpus["padded"]  # padded: the key-padding path too
    group = [settings(seed, compile=compile_) for seed in seeds]
    model = StackedMLM([member(special, seed) for seed in seeds]).train()
    optimizer, scheduler = group_optimizer(model, group[0])
    curves = []
    for step in range(STEPS):
        rows = np.stack([batch_at(blocks, step, 8, s.seed) for s in group])
        losses, _ = group_train_step(model, optimizer, scheduler, torch.from_numpy(rows).long(), special, group,
                                     step, "fp32")
        curves.append(losses)
    return np.array(curves)  # [steps, members]


def check_solo(corpus, backend: str, monkeypatch, rtol: float) -> None:
    monkeypatch.setattr(member_loop, "COMPILE_BACKEND", backend)
    eager, eager_weights = solo_curve(corpus, False)
    compiled, compiled_weights = solo_curve(corpus, True)
    assert eager[-1] < eager[0]  # it learns
    np.testing.assert_allclose(compiled, eager, rtol=rtol)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], weight, rtol=rtol, atol=1e-6, msg=name)


def check_group(corpus, backend: str, monkeypatch, rtol: float) -> None:
    monkeypatch.setattr(member_loop, "COMPILE_BACKEND", backend)
    eager = group_curves(corpus, False)
    compiled = group_curves(corpus, True)
    assert (eager[-1] < eager[0]).all()
    np.testing.assert_allclose(compiled, eager, rtol=rtol)


def test_compiled_member_loop_has_the_eager_curve(corpus, monkeypatch):
    check_solo(corpus, "aot_eager", monkeypatch, rtol=1e-5)


def test_compiled_group_has_the_eager_curves(corpus, monkeypatch):
    check_group(corpus, "aot_eager", monkeypatch, rtol=1e-5)


def test_masks_drawn_ahead_are_the_masks_drawn_during_the_pass(corpus):
    special, blocks = corpus["special"], corpus["packed"]
    seeds = (3, 4)
    model = StackedMLM([member(special, seed) for seed in seeds]).train()
    rows = torch.from_numpy(np.stack([batch_at(blocks, 0, 8, seed) for seed in seeds])).long()
    masked = [mask_tokens(rows[g], special.never_masked(), special.mask, special.vocab_size, 0.15,
                          torch_generator(seed, "pretrain/mask", 0)) for g, seed in enumerate(seeds)]
    inputs = torch.stack([m[0] for m in masked])
    order, targets, counts = masked_rows(torch.stack([m[1] for m in masked]).flatten(1))

    def streams() -> DropoutStreams:
        return DropoutStreams([torch_generator(seed, "pretrain/dropout", 0) for seed in seeds])

    during = stack_losses(model, inputs, None, order, targets, counts, streams())
    masks = streams().draw(model.dropout_shapes(8, 64), "cpu")
    assert len(masks) == 4 and masks[1].shape == (2, 8, 2, 64, 64)  # embeddings, attention, two hidden
    ahead = _stack_losses_drawn(model, inputs, None, order, targets, counts, masks)
    torch.testing.assert_close(ahead, during, rtol=0, atol=0)
    without = stack_losses(model, inputs, None, order, targets, counts, DropoutStreams(None))
    assert not torch.allclose(without, during)  # the masks matter


@pytest.mark.slow
def test_inductor_member_loop_has_the_eager_curve(corpus, monkeypatch):
    """Inductor generates C++ on a CPU (a compiler must be installed); dropout stays on torch's generator."""
    check_solo(corpus, "inductor", monkeypatch, rtol=1e-4)


@pytest.mark.slow
def test_inductor_group_has_the_eager_curves(corpus, monkeypatch):
    check_group(corpus, "inductor", monkeypatch, rtol=1e-4)


def test_compile_is_off_by_default_and_the_config_key_reaches_every_pretraining_member():
    from conftest import SMOKE

    from orchestrator.config.experiment import load_config
    from orchestrator.run.plan import member_spec
    from workers.train.member import Role

    assert replace(settings(), seed=9).compile is False
    assert member_spec(load_config(SMOKE), Role.PRETRAINED, 0, "/tmp/x").pretrain.compile is False
    cfg = load_config(SMOKE, ["pretrain.compile=true", "deep.enabled=true"])
    for role in (Role.PRETRAINED, Role.DEEP):
        assert member_spec(cfg, role, 0, "/tmp/x").pretrain.compile is True
