"""What makes a distilled set teach, piece by piece, on real AG News text and tiny real BERTs (no Ray): the span
crop (CV-DD's augmentation for text), relabelling every augmented view, recover with a crop every iteration,
the attention-label sets (Maekawa et al. 2023), why batch-specific soft labelling has no counterpart, and
kd_full's unlabelled texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.committee.voting import soft_labels
from workers.distill import attention as wa
from workers.distill import augment
from workers.distill import recover as wr
from workers.distill import sets as wd
from workers.distill import students as ws
from workers.text.corpus import Ragged, encode
from workers.train.finetune import TokenDistributions, pad_batch, predict_logits
from workers.train.seeds import numpy_rng

CLASSES = 4


@pytest.fixture(scope="module")
def ag_news(small_corpus, data_root):
    """24 real AG News training texts (6 per class), encoded with a 600-token tokenizer (at most 40 tokens)."""
    import pyarrow.parquet as pq

    table = pq.read_table(data_root / "ag_news" / "train.parquet").to_pydict()
    labels = np.array(table["label"])
    rows = np.concatenate([np.flatnonzero(labels == c)[:6] for c in range(CLASSES)])
    texts = [table["text"][i] for i in rows]
    tokenizer = small_corpus["tokenizer"]
    return {"examples": encode(tokenizer, texts, max_length=40), "labels": labels[rows], "special": small_corpus["special"]}


@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory, ag_news):
    """Three tiny BERT-1 classifiers of one shape (each its own seed), saved as a finished run saves members; their
    dense weights are drawn 10x BERT's scale so that their logits vary from example to example."""
    from workers.model.bert import ModelSettings, build_classifier, init_from_streams

    settings = ModelSettings(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=None, max_position=64,
                             dropout=0.1)
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for seed in range(3):
        model = build_classifier(settings.bert_config(ag_news["special"].vocab_size, CLASSES), CLASSES)
        init_from_streams(model, seed, "test/members")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("weight") and "LayerNorm" not in name:
                    param.mul_(10.0)
        directory = root / f"member-{seed:02d}"
        model.save_pretrained(directory)
        dirs.append(str(directory))
    return dirs


@pytest.fixture(scope="module")
def members(member_dirs):
    from workers.committee.committee import load_members

    return load_members(member_dirs)


# ----------------------------------------------------------------------------------------------
# the span crop


def test_a_span_crop_keeps_cls_and_sep_around_a_window_of_the_content(ag_news):
    examples, pad = ag_news["examples"], ag_news["special"].pad
    rows = np.arange(len(examples))
    ids, mask = pad_batch(examples, rows, pad)
    view, view_mask = augment.crop_batch(ids, mask, np.random.default_rng(7), 0.5, pad)
    again, _ = augment.crop_batch(ids, mask, np.random.default_rng(7), 0.5, pad)
    assert torch.equal(view, again)  # the same stream gives the same view
    other, _ = augment.crop_batch(ids, mask, np.random.default_rng(8), 0.5, pad)
    assert not torch.equal(view, other)
    lengths = examples.lengths()
    for i in rows:
        original = examples.row(i).tolist()
        n = int(view_mask[i].sum())
        cropped = view[i, :n].tolist()
        assert cropped[0] == original[0] and cropped[-1] == original[-1]  # [CLS] and [SEP] stay
        content, window = original[1:-1], cropped[1:-1]
        assert 0.5 * len(content) - 1 <= len(window) <= len(content)  # a share in [0.5, 1], rounded
        starts = [s for s in range(len(content) - len(window) + 1) if content[s:s + len(window)] == window]
        assert starts, "the window is a contiguous piece of the content"
        assert (view[i, n:] == pad).all() and n == len(window) + 2 <= lengths[i]
    # a batch of token distributions is cropped by the same indices
    probs = torch.rand(*ids.shape, 3)
    dists = TokenDistributions(torch.stack([ids, ids + 1, ids + 2], dim=-1), probs / probs.sum(-1, keepdim=True))
    soft_view, soft_mask = augment.crop_batch(dists, mask, np.random.default_rng(7), 0.5, pad)
    assert torch.equal(soft_mask, view_mask)
    real = view_mask.bool()
    assert torch.equal(soft_view.ids[..., 0][real], view[real])
    np.testing.assert_allclose(soft_view.probs.sum(-1)[real].numpy(), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# relabelling every view, and why batch-specific soft labelling has no counterpart


def test_a_member_labels_an_example_alike_in_any_batch(members, ag_news):
    """CV-DD's BSSL relabels with BatchNorm's statistics of the synthetic batch; a BERT's LayerNorm has no batch
    statistics, so each example's logits are the same alone and in any batch (padding included)."""
    examples, pad = ag_news["examples"], ag_news["special"].pad
    together = predict_logits(members[0], examples, pad, batch_size=24)
    for i in (0, 5, 17):
        alone = predict_logits(members[0], wd.take(examples, np.array([i])), pad)
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-5, atol=1e-5)
    shuffled = np.random.default_rng(0).permutation(len(examples))
    np.testing.assert_allclose(predict_logits(members[0], wd.take(examples, shuffled), pad, batch_size=5),
                               together[shuffled], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["prior_weighted", "mean_probability", "equal_logit"])
def test_every_view_is_labelled_by_the_rule_on_that_view(member_dirs, members, ag_news, rule):
    examples, pad = ag_news["examples"], ag_news["special"].pad
    prior = (0.61, 0.55, 0.70)
    teacher = ws.ViewTeacher(tuple(member_dirs), rule, prior, 10.0)
    spec = ws.StudentSpec("random_prior", 2, seed=3, model=None, finetune=None, init="scratch", base_dir=None,
                          augment="crop", crop_min_share=0.5, teacher=teacher)
    view = ws.student_view(spec, None, pad, ws.ViewLabeller(teacher, "cpu"))
    rows = np.array([1, 4, 9, 13, 22])
    ids, mask = pad_batch(examples, rows, pad)
    step = 11
    view_ids, view_mask, targets = view(ids, mask, rows, step)
    # by hand: the view the student's crop stream gives at this step, read by each member one by one
    expected_ids, expected_mask = augment.crop_batch(ids, mask, numpy_rng(3, "student/crop", step), 0.5, pad)
    assert torch.equal(view_ids, expected_ids) and torch.equal(view_mask, expected_mask)
    cropped = Ragged(ids=np.concatenate([view_ids[i, :int(view_mask[i].sum())].numpy() for i in range(len(rows))]),
                     offsets=np.concatenate([[0], np.cumsum(view_mask.sum(1).numpy())]))
    logits = np.stack([predict_logits(m, cropped, pad) for m in members])  # [3, 5, classes]
    by_hand = wd.teacher_logits(soft_labels(logits, rule, np.array(prior), 10.0), rule)
    np.testing.assert_allclose(targets.numpy(), by_hand, rtol=1e-4, atol=1e-5)
    # the labels differ from those of the uncropped examples: the view, not the example, is labelled
    whole = np.stack([predict_logits(m, wd.take(examples, rows), pad) for m in members])
    assert np.abs(wd.teacher_logits(soft_labels(whole, rule, np.array(prior), 10.0), rule) - by_hand).max() > 0.01


def test_fixed_labels_follow_their_rows_through_the_crop(ag_news):
    examples, pad = ag_news["examples"], ag_news["special"].pad
    fixed = np.arange(len(examples) * CLASSES, dtype=np.float32).reshape(len(examples), CLASSES)
    spec = ws.StudentSpec("random_prior", 2, seed=0, model=None, finetune=None, init="scratch", base_dir=None,
                          augment="crop")
    rows = np.array([3, 7, 8])
    ids, mask = pad_batch(examples, rows, pad)
    view_ids, _, targets = ws.student_view(spec, fixed, pad)(ids, mask, rows, 0)
    assert view_ids.shape[1] <= ids.shape[1] and np.array_equal(targets.numpy(), fixed[rows])
    plain = ws.StudentSpec("full", None, seed=0, model=None, finetune=None, init="scratch", base_dir=None)
    assert ws.student_view(plain, fixed, pad) is None  # no crop, no teacher: the batches as they are


# ----------------------------------------------------------------------------------------------
# recover with a crop every iteration


def test_recover_with_crops_splits_into_tasks_unchanged(members, ag_news):
    from workers.committee.committee import Committee

    examples, labels, pad = ag_news["examples"], ag_news["labels"], ag_news["special"].pad
    committee = Committee(members, ["a", "b", "c"], np.array([0.6, 0.55, 0.7]), pad)
    stats = committee.hidden_stats(examples)
    rows = np.array([0, 6, 12, 18, 1, 7, 13, 19])  # 2 IPC indices x 4 classes, index-major
    init, init_labels = wd.take(examples, rows), labels[rows]
    ipc_index = np.repeat([0, 1], CLASSES)
    guides = wr.draw_guides(3, range(2), seed=0)
    settings = wr.RecoverSettings(iterations=6, lr=0.25, stats_weight=0.01, temperature=5.0, init_probability=0.9,
                                  keep_top=8, augment="crop", crop_min_share=0.5, seed=0)
    whole = wr.recover(members, stats, committee.val_accuracy, init, init_labels, ipc_index, guides, settings, pad,
                       example_keys=np.arange(8))
    parts = [wr.recover(members, stats, committee.val_accuracy, wd.take(init, np.arange(4 * g, 4 * g + 4)),
                        init_labels[4 * g:4 * g + 4], np.zeros(4, dtype=np.int64), guides[g:g + 1], settings, pad,
                        example_keys=np.arange(4 * g, 4 * g + 4)) for g in (0, 1)]
    joined = wd.concat_soft_tokens([p.tokens for p in parts], pad)
    np.testing.assert_array_equal(joined.ids, whole.tokens.ids)
    np.testing.assert_allclose(joined.probs, whole.tokens.probs, rtol=1e-4, atol=1e-5)
    # without crops the same problem takes another path: the crops are what the members saw (that recover with
    # crops puts its examples in class for fine-tuned guides: tests/test_distill.py)
    plain = wr.recover(members, stats, committee.val_accuracy, init, init_labels, ipc_index, guides,
                       wr.RecoverSettings(**{**settings.__dict__, "augment": "none"}), pad)
    assert not np.allclose(plain.loss_curve, whole.loss_curve)


# ----------------------------------------------------------------------------------------------
# attention-label sets (Maekawa et al. 2023)


def _student(ag_news):
    from workers.model.bert import ModelSettings, build_classifier, init_from_streams

    settings = ModelSettings(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=None, max_position=64,
                             dropout=0.1)
    model = build_classifier(settings.bert_config(ag_news["special"].vocab_size, CLASSES), CLASSES)
    init_from_streams(model, 5, "test/student")
    return wa.eager_attention(model).eval()


def test_the_attention_term_vanishes_on_the_students_own_attention(ag_news):
    model = _student(ag_news)
    ids, mask = pad_batch(ag_news["examples"], np.arange(8), ag_news["special"].pad)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        out = model(inputs_embeds=embeds, attention_mask=mask, output_attentions=True)
        own = wa.cls_attention(out.attentions)  # [8, layers, heads, seq]
        # uniform soft labels: the cross-entropy term is -mean over classes of log p(class)
        cross_entropy = float(-torch.log_softmax(out.logits, dim=-1).mean(dim=-1).mean())
    params = dict(model.named_parameters())
    soft = torch.zeros(8, CLASSES)
    with torch.no_grad():
        assert float(wa.inner_loss(model, params, embeds, mask, soft, own, 5.0)) == pytest.approx(cross_entropy,
                                                                                               abs=1e-6)
        # all of [CLS]'s attention on position 1: KL = -log(the student's attention there), about log(40)
        onto_one = torch.zeros_like(own)
        onto_one[..., 1] = 1.0
        expected = cross_entropy + 5.0 * float(-own[..., 1].log().mean())
        assert float(wa.inner_loss(model, params, embeds, mask, soft, onto_one, 5.0)) == pytest.approx(expected,
                                                                                                    rel=1e-5)


def test_the_outer_loss_reaches_every_learned_part_of_an_attention_set(ag_news):
    examples, labels, pad = ag_news["examples"], ag_news["labels"], ag_news["special"].pad
    model = _student(ag_news)
    rows = np.array([0, 6, 12, 18])
    init = wd.take(examples, rows)
    attention = np.full((4, 1, 2, int(init.lengths().max())), 0.0, dtype=np.float32)
    for i, n in enumerate(init.lengths()):
        attention[i, :, :, :n] = 1.0 / n
    train_soft = np.eye(CLASSES, dtype=np.float32)[labels] * 4.0  # confident teacher logits on the real examples
    settings = wa.AttentionSettings(steps=6, lr=0.05, inner_steps=1, inner_lr=0.05, attention_weight=1.0,
                                    real_batch=16, seed=0)
    learned = wa.distill_attention(model, init, labels[rows], train_soft[rows], attention, examples, train_soft,
                                   settings, pad)
    start = model.get_input_embeddings()(pad_batch(init, np.arange(4), pad)[0]).detach().numpy()
    assert not np.allclose(learned.embeds, start)  # every part moved
    assert not np.allclose(learned.soft_labels, train_soft[rows])
    assert learned.inner_lr != pytest.approx(0.05, rel=1e-6)
    np.testing.assert_allclose(learned.attention_labels.sum(-1), 1.0, rtol=1e-5)
    assert learned.loss_curve.shape == (6,) and np.isfinite(learned.loss_curve).all()
    # a student's update on the set is one plain step of the learned size on the inner loss
    student = _student(ag_news)
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    params = dict(student.named_parameters())
    loss = wa.inner_loss(student, params, torch.from_numpy(learned.embeds), torch.from_numpy(learned.mask()),
                         torch.from_numpy(learned.soft_labels), torch.from_numpy(learned.attention_labels), 1.0)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    wa.train_on_attention_set(student, learned, settings)
    name = "classifier.weight"
    np.testing.assert_allclose(student.state_dict()[name].numpy(),
                               (before[name] - learned.inner_lr * grads[name]).numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# kd_full's unlabelled texts


def test_unlabelled_texts_come_from_the_training_file_outside_every_split():
    from orchestrator.config.distill import load_distill_config
    from orchestrator.distill.teaching import unlabelled_pool
    from orchestrator.run.prepare import load_cfg_task
    from conftest import REPO

    cfg = load_distill_config(REPO / "configs" / "distill_smoke.yaml")
    pool = unlabelled_pool(cfg)
    splits = load_cfg_task(cfg)
    assert not set(pool) & (set(splits.train_texts) | set(splits.val_texts) | set(splits.test_texts))
    # the training file's 8,000 rows less the 400 training and 80 validation examples (and repeated texts)
    assert 7000 < len(pool) <= 8000 - 480 and len(set(pool)) == len(pool)
    assert unlabelled_pool(cfg)[:50] == pool[:50]  # a fixed order
