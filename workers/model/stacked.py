"""The stacked model of a member group: G BERT members of one shape as one model (workers/train/groups.py trains it).

On a GPU one BERT-1 member is launch-bound: it fills a few percent of the device. Stacking G members'
weights on a leading member axis makes every linear layer of all G one batched matmul (`torch.baddbmm`)
and their attention one `scaled_dot_product_attention` call on a [G*batch, heads, seq, dim] view.

Each member's dropout comes from its own generator (`DropoutStreams`), seeded like the solo loop's
`pretrain/dropout` stream and drawing masks of the same shapes, in the same order, by the same operation
(`bernoulli_`) as `F.dropout` draws them alone; so on a CPU a member's loss curve in a stack equals its
curve alone (to float rounding; tests/test_groups.py). While dropout is on, attention runs as explicit
matmuls so that each member's attention-dropout mask can be applied; with dropout 0 it runs through
`scaled_dot_product_attention`. The losses decode only the masked positions (`masked_rows`, found on the CPU).

`compiled_stack_losses` is the forward pass and losses through `torch.compile`: the dropout masks are drawn
before the compiled call, each member's from its own generator in the order and shapes of the eager pass
(`StackedMLM.dropout_shapes`), and passed in as tensors (`DrawnNoise`). So the compiled graph holds no
generator and no data-dependent shape, and a compiled group's loss curves are the eager group's
(tests/test_compile.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from workers.text.masking import IGNORE_INDEX

# ----------------------------------------------------------------------------------------------
# the stacked model


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Every member's linear layer in one batched matmul: x [G, n, in], weight [G, out, in], bias [G, out]."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))  # [G, n, out]


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Each member's LayerNorm over the last axis: x [G, ..., H], weight and bias [G, H]."""
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (weight.shape[1],)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * weight.view(shape) + bias.view(shape)


class DropoutStreams:
    """Each member's dropout masks from its own generator, drawn as `F.dropout` draws them alone.

    `F.dropout(x, p)` on a member's activation draws `bernoulli_(1 - p)` on a tensor of x's shape from
    torch's generator; the solo loop seeds that generator per step from the member's `pretrain/dropout`
    stream. Here member g's generator is seeded the same way and draws the same shapes in the same order.
    """

    def __init__(self, generators: list[torch.Generator] | None):
        self.generators = generators  # None: no dropout (evaluation)

    @property
    def training(self) -> bool:
        return self.generators is not None

    def noise(self, shape: tuple, p: float, device) -> torch.Tensor:
        """Every member's scaled keep-mask [G, *shape] for dropout `p` on one activation of `shape`."""
        return torch.stack([torch.empty(shape, device=device).bernoulli_(1 - p, generator=g)
                            for g in self.generators]).div_(1 - p)

    def apply(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Dropout on x [G, *one member's activation shape]."""
        if self.generators is None or p == 0.0:
            return x
        return x * self.noise(x.shape[1:], p, x.device).to(x.dtype)

    def draw(self, plan: list[tuple[tuple, float]], device) -> list[torch.Tensor]:
        """The masks of a whole pass, ahead of it: one [G, *shape] per (shape, p) of `plan`, in its order."""
        return [self.noise(shape, p, device) for shape, p in plan]


class DrawnNoise:
    """Dropout masks drawn ahead (`DropoutStreams.draw`), applied in the order they were drawn; a compiled
    pass takes them as tensors, so it traces no generator."""

    training = True

    def __init__(self, masks: list[torch.Tensor]):
        self.masks = list(masks)
        self.used = 0

    def apply(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if p == 0.0:
            return x
        mask = self.masks[self.used]
        self.used += 1
        return x * mask.to(x.dtype)


class StackedMLM(torch.nn.Module):
    """G `BertForMaskedLM` members of one shape as one model: every weight is [G, *the member's shape].

    `names` lists the members' parameters in `named_parameters` order (tied weights once, as the solo
    optimizer sees them: the decoder is the word embedding); `weights` are the stacked tensors in that order.
    """

    def __init__(self, members: list, device: torch.device | str = "cpu"):
        super().__init__()
        config = members[0].config
        if config.hidden_act != "gelu" or config.is_decoder or config.add_cross_attention:
            raise ValueError("a member group stacks BERT encoders with GELU activations only")
        per_member = [dict(m.named_parameters()) for m in members]
        self.names = list(per_member[0])
        for name in self.names:
            shapes = {tuple(params[name].shape) for params in per_member}
            if len(shapes) != 1:
                raise ValueError(f"members of a group must have one shape; {name} has shapes {sorted(shapes)}")
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([params[name].detach() for params in per_member]).to(device))
            for name in self.names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self.size = len(members)
        self.vocab_size = config.vocab_size
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_layers = config.num_hidden_layers
        self.eps = config.layer_norm_eps
        self.hidden_dropout = config.hidden_dropout_prob
        self.attention_dropout = config.attention_probs_dropout_prob
        self.pad_id = members[0].bert.embeddings.word_embeddings.padding_idx

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def w(self, name: str) -> torch.Tensor:
        return self.weights[self._index[name]]

    def _ln(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return _layer_norm(x, self.w(prefix + ".weight"), self.w(prefix + ".bias"), self.eps)

    def _dense(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return _linear(x, self.w(prefix + ".weight"), self.w(prefix + ".bias"))

    def embed(self, ids: torch.Tensor, drop: DropoutStreams) -> torch.Tensor:
        """ids [G, b, s] -> [G, b, s, H]: word + token type 0 + position, LayerNorm, dropout (as BertEmbeddings)."""
        g, _, s = ids.shape
        word = self.w("bert.embeddings.word_embeddings.weight")  # [G, V, H]
        offsets = torch.arange(g, device=ids.device).view(g, 1, 1) * self.vocab_size
        x = F.embedding(ids + offsets, word.reshape(g * self.vocab_size, self.hidden_size))
        if self.pad_id is not None:  # as nn.Embedding's padding_idx: no gradient reaches the pad row from a lookup
            x = torch.where((ids == self.pad_id).unsqueeze(-1), x.detach(), x)
        token_type = self.w("bert.embeddings.token_type_embeddings.weight")[:, 0]  # [G, H]
        x = x + token_type.view(g, 1, 1, -1)
        x = x + self.w("bert.embeddings.position_embeddings.weight")[:, :s].unsqueeze(1)
        return drop.apply(self._ln(x, "bert.embeddings.LayerNorm"), self.hidden_dropout)

    def attention(self, x: torch.Tensor, prefix: str, batch: int, key_padding: torch.Tensor | None,
                  drop: DropoutStreams) -> torch.Tensor:
        """Self-attention of x [G, b*s, H] on a [G*b, heads, s, head_dim] view; key_padding [G, b, s] (True: real)."""
        g, n, h = x.shape
        seq, heads = n // batch, self.num_heads
        head_dim = h // heads

        def heads_view(t: torch.Tensor) -> torch.Tensor:
            return t.view(g * batch, seq, heads, head_dim).transpose(1, 2)  # [G*b, heads, s, d]

        q, k, v = (heads_view(self._dense(x, f"{prefix}.self.{part}")) for part in ("query", "key", "value"))
        scale = head_dim ** -0.5
        keep = None if key_padding is None else key_padding.reshape(g * batch, 1, 1, seq)
        if drop.training and self.attention_dropout > 0:
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [G*b, heads, s, s]
            if keep is not None:
                scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            probs = drop.apply(scores.softmax(-1).view(g, batch, heads, seq, seq), self.attention_dropout)
            out = torch.matmul(probs.view(g * batch, heads, seq, seq), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
        return out.transpose(1, 2).reshape(g, n, h)

    def encode(self, ids: torch.Tensor, key_padding: torch.Tensor | None, drop: DropoutStreams) -> torch.Tensor:
        """The encoder's last hidden states [G, b*s, H] for ids [G, b, s] (as BertModel, without a pooler)."""
        g, batch, seq = ids.shape
        x = self.embed(ids, drop).reshape(g, batch * seq, self.hidden_size)
        for i in range(self.num_layers):
            layer = f"bert.encoder.layer.{i}"
            a = self.attention(x, f"{layer}.attention", batch, key_padding, drop)
            a = drop.apply(self._dense(a, f"{layer}.attention.output.dense"), self.hidden_dropout)
            x = self._ln(a + x, f"{layer}.attention.output.LayerNorm")
            f = F.gelu(self._dense(x, f"{layer}.intermediate.dense"))
            f = drop.apply(self._dense(f, f"{layer}.output.dense"), self.hidden_dropout)
            x = self._ln(f + x, f"{layer}.output.LayerNorm")
        return x

    def dropout_shapes(self, batch: int, seq: int) -> list[tuple[tuple, float]]:
        """(one member's activation shape, p) of every dropout of a training pass, in `encode`'s order."""
        tokens, hidden = batch * seq, self.hidden_size
        plan = [((batch, seq, hidden), self.hidden_dropout)]
        for _ in range(self.num_layers):
            plan += [((batch, self.num_heads, seq, seq), self.attention_dropout),
                     ((tokens, hidden), self.hidden_dropout), ((tokens, hidden), self.hidden_dropout)]
        return [(shape, p) for shape, p in plan if p > 0.0]

    def losses_at(self, hidden: torch.Tensor, order: torch.Tensor, targets: torch.Tensor,
                  counts: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over its masked positions, decoding only those: hidden [G, n, H],
        the masked rows from `masked_rows` (order, targets [G, width], counts [G]) -> [G]."""
        g, width = order.shape
        rows = hidden.gather(1, order.unsqueeze(-1).expand(-1, -1, self.hidden_size))  # [G, width, H]
        t = F.gelu(self._dense(rows, "cls.predictions.transform.dense"))
        t = self._ln(t, "cls.predictions.transform.LayerNorm")
        word = self.w("bert.embeddings.word_embeddings.weight")  # the decoder is tied to the word embedding
        logits = torch.baddbmm(self.w("cls.predictions.bias").unsqueeze(1), t, word.transpose(1, 2))  # [G, width, V]
        per_token = F.cross_entropy(logits.float().reshape(-1, self.vocab_size), targets.reshape(-1),
                                    ignore_index=IGNORE_INDEX, reduction="none").view(g, width)
        return per_token.sum(1) / counts.clamp(min=1)

    @torch.no_grad()
    def write_back(self, members: list) -> None:
        """Copy each member's slice into its `BertForMaskedLM` (tied weights follow the word embedding)."""
        for g, member in enumerate(members):
            params = dict(member.named_parameters())
            for name, weight in zip(self.names, self.weights):
                params[name].copy_(weight[g])


# ----------------------------------------------------------------------------------------------
# the losses at the masked positions, eager and compiled


def masked_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each member's masked positions are: labels [G, n] (-100 where unmasked) -> (order [G, width]: the
    positions, in order, padded to the largest count; targets [G, width]: -100 beyond a member's count;
    counts [G]). Members' masked counts differ; the padding is ignored by the loss."""
    chosen = labels != IGNORE_INDEX  # [G, n]
    counts = chosen.sum(1)  # [G]
    width = max(1, int(counts.max()))
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :width]  # [G, width]
    return order, labels.gather(1, order), counts


def stack_losses(model: StackedMLM, inputs: torch.Tensor, key_padding: torch.Tensor | None, order: torch.Tensor,
                 targets: torch.Tensor, counts: torch.Tensor, drop) -> torch.Tensor:
    """Each member's masked-LM loss [G]: inputs [G, b, s], the masked rows from `masked_rows`, `drop` a
    DropoutStreams or DrawnNoise."""
    return model.losses_at(model.encode(inputs, key_padding, drop), order, targets, counts)


def _stack_losses_drawn(model: StackedMLM, inputs: torch.Tensor, key_padding: torch.Tensor | None,
                        order: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor,
                        masks: list[torch.Tensor]) -> torch.Tensor:
    return stack_losses(model, inputs, key_padding, order, targets, counts, DrawnNoise(masks))


@functools.cache
def compiled_stack_losses(backend: str):
    """`stack_losses` through `torch.compile`, dropout masks drawn ahead and passed in (compiled at the first
    call, and again for a new shape or group size; the masked width is marked dynamic at each call)."""
    return torch.compile(_stack_losses_drawn, backend=backend)
