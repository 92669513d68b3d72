"""Model builders: BERT-1 members and the deep baseline, from a config (never from hub weights)."""

from __future__ import annotations


def bert_config(vocab_size: int, hidden_size: int, num_heads: int, num_layers: int,
                max_position: int = 128, intermediate_size: int | None = None,
                dropout: float = 0.1, num_labels: int = 2):
    """A `transformers.BertConfig`; FFN width defaults to 4 x hidden (the authors' variants)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        type_vocab_size=2,
        num_labels=num_labels,
    )


def paper_bert6_config(vocab_size: int = 30522):
    """The authors' BERT-6: 6 layers, 12 heads, hidden 768, FFN 3072, 128 positions."""
    return bert_config(vocab_size, 768, 12, 6, max_position=128)


def paper_bert1_config(vocab_size: int = 30522, num_heads: int = 12):
    """The authors' BERT-1 variants: 1 layer, hidden = 64 x heads, FFN = 4 x hidden."""
    return bert_config(vocab_size, 64 * num_heads, num_heads, 1, max_position=128)


def build_mlm(config):
    from transformers import BertForMaskedLM

    return BertForMaskedLM(config)


def build_classifier(config, num_labels: int, mlm=None):
    """`BertForSequenceClassification`; with `mlm`, its encoder and embeddings come from that masked LM.

    The pooler and the classifier always start from the initialisation of the current torch seed, so
    a pre-trained and a scratch member built under the same seed differ only in their encoder.
    """
    from transformers import BertForSequenceClassification

    config = config.__class__.from_dict({**config.to_dict(), "num_labels": num_labels})
    model = BertForSequenceClassification(config)
    if mlm is not None:
        missing, unexpected = model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
        if unexpected or any(not k.startswith("pooler.") for k in missing):
            raise RuntimeError(f"encoder transfer mismatch: missing={missing} unexpected={unexpected}")
    return model


def count_parameters(model) -> int:
    """Distinct parameters (tied input/output embeddings counted once), as the authors count them."""
    return sum(p.numel() for p in model.parameters())
