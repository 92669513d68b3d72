"""The member pre-training loop computes what the authors' loop computes, only faster.

- `mlm_loss` (decoder at masked positions only) equals `BertForMaskedLM(..., labels=)` on the same batch;
- trained side by side on the same data and seed, the two loops' loss curves match;
- packing loses no token and separates articles with [SEP];
- with the fused AdamW, an interrupted run resumes to exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bench.loops import AuthorsAmp, reference_pretrain_step
from workers.model.bert import bert_config, build_mlm
from workers.text.corpus import encode, pack_blocks, truncate_articles
from workers.text.masking import mask_tokens
from workers.train.pretrain import PretrainSettings, SpecialIds, batch_at, mlm_loss, pretrain, train_step
from workers.train.schedule import make_optimizer
from workers.train.seeds import seed_global_torch, torch_generator


@pytest.fixture(scope="module")
def corpus(small_corpus):
    return small_corpus


def tiny_mlm(special: SpecialIds, seed: int = 0):
    torch.manual_seed(seed)
    return build_mlm(bert_config(special.vocab_size, 32, 2, 1, max_position=64))


def settings(precision: str = "fp32", max_steps: int = 6, **kw) -> PretrainSettings:
    base = dict(seed=3, max_steps=max_steps, batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=0,
                mask_prob=0.15, precision=precision, checkpoint_every=1000, log_every=1000)
    return PretrainSettings(**{**base, **kw})


def test_mlm_loss_equals_reference_loss(corpus):
    special, tokenizer = corpus["special"], corpus["tokenizer"]
    model = tiny_mlm(special).eval()
    texts = [a[:80 + 60 * i] for i, a in enumerate(corpus["articles"][:8])]  # articles of many lengths
    batch = torch.from_numpy(truncate_articles(encode(tokenizer, texts, max_length=64), 64, special.pad)).long()
    assert (batch == special.pad).any() and (batch != special.pad).all(dim=1).any()  # padded, like the authors' batches
    inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size, 0.15,
                                 torch_generator(0, "pretrain/mask", 0))
    attention_mask = (batch != special.pad).long()
    with torch.no_grad():
        reference = model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss
        fast = mlm_loss(model, inputs, labels, attention_mask)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)


def test_loss_curves_match_on_same_data_and_seed(corpus):
    """Both loops train on the same padded batches with the same masks, dropout and optimizer (the reference
    step given the member loop's gradient clip, which the authors' loop does not have)."""
    special, blocks = corpus["special"], corpus["padded"]
    curves = {}
    for name in ("member", "reference"):
        s = settings()
        model = tiny_mlm(special).train()
        optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
        losses = []
        for step in range(s.max_steps):
            batch = torch.from_numpy(batch_at(blocks, step, s.batch_size, s.seed)).long()
            if name == "member":
                loss, _ = train_step(model, optimizer, scheduler, batch, special, s, step)
            else:
                loss, _ = reference_pretrain_step(model, optimizer, AuthorsAmp("cpu"), batch, special, s.mask_prob,
                                                  s.seed, step, clip=1.0)
                scheduler.step()
            losses.append(loss)
        curves[name] = np.array(losses)
    assert curves["member"][-1] < curves["member"][0]  # it learns
    np.testing.assert_allclose(curves["member"], curves["reference"], rtol=1e-4)


def test_bf16_loss_curve_stays_close_to_fp32(corpus):
    special, blocks = corpus["special"], pack_blocks(corpus["raw"], 64, corpus["special"].cls,
                                                     corpus["special"].sep, corpus["special"].pad)
    curves = {}
    for precision in ("fp32", "bf16"):
        s = settings(precision)
        model = tiny_mlm(special).train()
        optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
        curves[precision] = np.array([
            train_step(model, optimizer, scheduler, torch.from_numpy(batch_at(blocks, step, 8, s.seed)).long(),
                       special, s, step)[0]
            for step in range(s.max_steps)])
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=0.02)


def test_packing_loses_no_token_and_separates_articles(corpus):
    special, raw = corpus["special"], corpus["raw"]
    seq_len = 64
    blocks = pack_blocks(raw, seq_len, special.cls, special.sep, special.pad)
    assert blocks.shape[1] == seq_len and (blocks[:, 0] == special.cls).all()
    assert (blocks[:-1] != special.pad).all(), "only the last block may be padded"
    body = blocks[:, 1:].ravel()
    stream = body[:len(raw.ids) + len(raw)]
    assert (body[len(stream):] == special.pad).all()
    expected = np.concatenate([np.append(raw.row(i), special.sep) for i in range(len(raw))])
    np.testing.assert_array_equal(stream, expected)  # every token once, in order, [SEP] after each article
    assert int((blocks == special.sep).sum()) == len(raw)


def test_fused_optimizer_resume_is_exact(corpus, tmp_path):
    special = corpus["special"]
    blocks = pack_blocks(corpus["raw"], 64, special.cls, special.sep, special.pad)
    s = settings(max_steps=4, checkpoint_every=2, log_every=1)
    whole = tiny_mlm(special)
    pretrain(whole, blocks, special, s, checkpoint_dir=tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_at_three(record):
        if record["step"] == 3:
            raise Stop

    first = tiny_mlm(special)
    with pytest.raises(Stop):
        pretrain(first, blocks, special, s, checkpoint_dir=tmp_path / "cut", on_log=stop_at_three)
    resumed = tiny_mlm(special)
    pretrain(resumed, blocks, special, s, checkpoint_dir=tmp_path / "cut")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_the_reference_takes_the_authors_precision_fp16_with_a_scaler_on_cuda_fp32_on_a_cpu(corpus):
    """The authors' mlm_train runs under torch.cuda.amp.autocast() with a GradScaler: on CUDA fp16 with loss
    scaling, on a CPU both are no-ops. On a CPU the reference step is therefore a plain fp32 step: the same
    weights as backward() and step() by hand."""
    cpu = AuthorsAmp("cpu")
    with warnings.catch_warnings():  # no CUDA here: torch warns that it turns the CUDA scaler off
        warnings.simplefilter("ignore", UserWarning)
        cuda = AuthorsAmp("cuda")
    assert (cpu.precision, cpu.scaler.is_enabled()) == ("fp32", False)
    assert (cuda.precision, cuda.cuda) == ("fp16 autocast + GradScaler", True)
    special, blocks = corpus["special"], corpus["padded"]
    s = settings()
    batch = torch.from_numpy(batch_at(blocks, 0, s.batch_size, s.seed)).long()
    models = [tiny_mlm(special).train() for _ in range(2)]
    optimizers = [torch.optim.AdamW(m.parameters(), lr=s.lr, weight_decay=s.weight_decay) for m in models]
    loss, real = reference_pretrain_step(models[0], optimizers[0], cpu, batch, special, s.mask_prob, s.seed, 0)
    seed_global_torch(s.seed, "pretrain/dropout", 0)
    inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size, s.mask_prob,
                                 torch_generator(s.seed, "pretrain/mask", 0))
    by_hand = models[1](input_ids=inputs, attention_mask=(batch != special.pad).long(), labels=labels).loss
    by_hand.backward()
    optimizers[1].step()
    assert loss == pytest.approx(by_hand.item(), rel=1e-6) and real == int((batch != special.pad).sum())
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)
