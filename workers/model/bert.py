"""Model builders: BERT-1 members and the deep baseline, from a config (never from hub weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.train.seeds import torch_generator


@dataclass(frozen=True)
class ModelSettings:
    """The shape of one member (typed, immutable: it crosses the Ray boundary inside a MemberSpec)."""

    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int | None  # None: 4 x hidden_size
    max_position: int
    dropout: float

    def bert_config(self, vocab_size: int, num_labels: int = 2):
        return bert_config(vocab_size, self.hidden_size, self.num_heads, self.num_layers,
                           max_position=self.max_position, intermediate_size=self.intermediate_size,
                           dropout=self.dropout, num_labels=num_labels)


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
    """`BertForSequenceClassification`; with `mlm`, its encoder and embeddings come from that masked LM."""
    from transformers import BertForSequenceClassification

    config = config.__class__.from_dict({**config.to_dict(), "num_labels": num_labels})
    model = BertForSequenceClassification(config)
    if mlm is not None:
        transfer_encoder(model, mlm)
    return model


def transfer_encoder(classifier, mlm) -> None:
    """Copy the masked LM's embeddings and encoder into the classifier (pooler and head stay as they are)."""
    missing, unexpected = classifier.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"encoder transfer mismatch: missing={missing} unexpected={unexpected}")


HEAD_PREFIXES = ("bert.pooler.", "classifier.")  # a classifier's parts that pre-training never trains


@torch.no_grad()
def init_from_streams(model, seed: int, stream: str, head_stream: str | None = None) -> None:
    """Draw every parameter of `model` again, each from its own named stream (seed, stream, parameter name).

    The rule is BERT's (normal(0, initializer_range) for linear and embedding weights, zero biases and
    padding rows, LayerNorm at 1/0); the draws depend on the seed and the parameter's name only, not on
    the order in which transformers builds the modules. With `head_stream`, the pooler and the
    classifier draw from that stream instead (a pre-trained member and its scratch twin share it).
    """
    std = model.config.initializer_range
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # tied weights (the MLM decoder is the word embedding): drawn once
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            use = head_stream if head_stream and name.startswith(HEAD_PREFIXES) else stream
            if isinstance(module, torch.nn.LayerNorm):
                param.fill_(1.0 if param_name == "weight" else 0.0)
            elif param_name == "weight" and isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                draw = torch.empty(param.shape, dtype=torch.float32)
                draw.normal_(0.0, std, generator=torch_generator(seed, use, name))
                param.copy_(draw)
                if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                    param[module.padding_idx].zero_()
            else:  # biases, and the MLM head's output bias
                param.zero_()


def count_parameters(model) -> int:
    """Distinct parameters (tied input/output embeddings counted once), as the authors count them."""
    return sum(p.numel() for p in model.parameters())
