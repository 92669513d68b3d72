"""Model shapes: parameter counts equal the authors' BERT-6 and BERT-1; encoder transfer is exact."""

from __future__ import annotations

import torch

from workers.model.bert import (
    bert_config,
    build_classifier,
    build_mlm,
    count_parameters,
    paper_bert1_config,
    paper_bert6_config,
)


def test_paper_bert6_masked_lm_parameters():
    assert count_parameters(build_mlm(paper_bert6_config())) == 66_692_154


def test_paper_bert1_masked_lm_parameters():
    assert count_parameters(build_mlm(paper_bert1_config(num_heads=12))) == 31_252_794


def test_six_bert1_encoders_hold_one_bert6_encoder():
    one = count_parameters(build_mlm(paper_bert1_config()).bert.encoder)
    six = count_parameters(build_mlm(paper_bert6_config()).bert.encoder)
    assert one == 7_087_872 and six == 6 * one


def test_bert1_variants_scale_hidden_with_heads():
    cfg = paper_bert1_config(num_heads=8)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (512, 2048, 1)


def test_classifier_takes_the_encoder_and_keeps_its_own_head():
    cfg = bert_config(500, 32, 2, 1, max_position=32)
    torch.manual_seed(0)
    mlm = build_mlm(cfg)
    torch.manual_seed(1)
    pre = build_classifier(cfg, 4, mlm=mlm)
    torch.manual_seed(1)
    scratch = build_classifier(cfg, 4)
    for name, param in pre.bert.named_parameters():
        if not name.startswith("pooler."):
            assert torch.equal(param, mlm.bert.state_dict()[name]), name
    # same seed -> the scratch twin's head and pooler start identical; only the encoder differs
    assert torch.equal(pre.classifier.weight, scratch.classifier.weight)
    assert torch.equal(pre.bert.pooler.dense.weight, scratch.bert.pooler.dense.weight)
    assert not torch.equal(pre.bert.embeddings.word_embeddings.weight, scratch.bert.embeddings.word_embeddings.weight)
