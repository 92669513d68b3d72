"""A committee of K same-shape BERT classifiers packed into one batched forward.

`PackedCommittee.from_members(models)` stacks the weights of K `BertForSequenceClassification` members
(every member the same config: BERT-1 members, or one BERT-6 as K = 1) into tensors with a leading
member axis, and runs all members at once with batched matmuls (`torch.baddbmm`): one kernel per
weight instead of K. It computes what the members compute one by one (tests check it to float
tolerance), in eval mode (no dropout).

The last layer feeds only the [CLS] position to the pooler, so with `cls_only_last_layer` the last
layer computes keys and values at every position but queries, attention output and the FFN only at
[CLS]. For a BERT-1 member that layer is its only layer. Applied to a BERT-6 (K = 1) it prunes only
its sixth layer, so a comparison built on this class gives the deep model the same trick.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors]).contiguous()


class PackedCommittee(torch.nn.Module):
    """K members' weights stacked on a leading axis; forward -> logits [K, batch, classes]."""

    def __init__(self, members: list, cls_only_last_layer: bool = True):
        super().__init__()
        config = members[0].config
        for m in members[1:]:
            if m.config.to_dict() != config.to_dict():
                raise ValueError("packed members must share one config")
        self.members = len(members)
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.layers = config.num_hidden_layers
        self.eps = config.layer_norm_eps
        self.cls_only_last_layer = cls_only_last_layer
        bert = [m.bert for m in members]
        emb = [b.embeddings for b in bert]
        self.word = torch.nn.Parameter(_stack([e.word_embeddings.weight for e in emb]), requires_grad=False)  # [K, V, h]
        self.position = torch.nn.Parameter(_stack([e.position_embeddings.weight for e in emb]), requires_grad=False)  # [K, P, h]
        self.token_type = torch.nn.Parameter(_stack([e.token_type_embeddings.weight[0] for e in emb]), requires_grad=False)  # [K, h]
        self.emb_ln = self._ln([e.LayerNorm for e in emb])
        self.blocks = torch.nn.ModuleList()
        for i in range(self.layers):
            layer = [b.encoder.layer[i] for b in bert]
            att = [lyr.attention for lyr in layer]
            block = torch.nn.Module()
            # Linear weights are [out, in]; stacked transposed as [K, in, out] for x @ W.
            block.w_qkv = self._weight([torch.cat([a.self.query.weight, a.self.key.weight, a.self.value.weight]) for a in att])
            block.b_qkv = self._bias([torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias]) for a in att])
            block.w_out = self._weight([a.output.dense.weight for a in att])
            block.b_out = self._bias([a.output.dense.bias for a in att])
            block.ln1 = self._ln([a.output.LayerNorm for a in att])
            block.w_ffn_in = self._weight([lyr.intermediate.dense.weight for lyr in layer])
            block.b_ffn_in = self._bias([lyr.intermediate.dense.bias for lyr in layer])
            block.w_ffn_out = self._weight([lyr.output.dense.weight for lyr in layer])
            block.b_ffn_out = self._bias([lyr.output.dense.bias for lyr in layer])
            block.ln2 = self._ln([lyr.output.LayerNorm for lyr in layer])
            self.blocks.append(block)
        self.w_pool = self._weight([b.pooler.dense.weight for b in bert])
        self.b_pool = self._bias([b.pooler.dense.bias for b in bert])
        self.w_cls = self._weight([m.classifier.weight for m in members])
        self.b_cls = self._bias([m.classifier.bias for m in members])

    @classmethod
    def from_members(cls, members: list, cls_only_last_layer: bool = True) -> "PackedCommittee":
        return cls(members, cls_only_last_layer).eval()

    @staticmethod
    def _weight(weights: list[torch.Tensor]) -> torch.nn.Parameter:
        return torch.nn.Parameter(_stack([w.t() for w in weights]), requires_grad=False)  # [K, in, out]

    @staticmethod
    def _bias(biases: list[torch.Tensor]) -> torch.nn.Parameter:
        return torch.nn.Parameter(_stack(biases).unsqueeze(1), requires_grad=False)  # [K, 1, out]

    @staticmethod
    def _ln(norms: list) -> torch.nn.ParameterList:
        return torch.nn.ParameterList([torch.nn.Parameter(_stack([n.weight for n in norms]).unsqueeze(1), requires_grad=False),
                                       torch.nn.Parameter(_stack([n.bias for n in norms]).unsqueeze(1), requires_grad=False)])

    def _norm(self, x: torch.Tensor, ln: torch.nn.ParameterList) -> torch.Tensor:
        """LayerNorm of x [K, rows, h] with each member's own scale and shift."""
        return torch.addcmul(ln[1], F.layer_norm(x, (self.hidden,), eps=self.eps), ln[0])

    def _attention(self, block, x: torch.Tensor, batch: int, seq: int, mask: torch.Tensor | None,
                   cls_only: bool) -> torch.Tensor:
        """Self-attention output [K, batch*q, h] for x [K, batch*seq, h]; q = 1 ([CLS]) when cls_only."""
        K, h, heads = self.members, self.hidden, self.heads
        d = h // heads
        if cls_only:
            kv = torch.baddbmm(block.b_qkv[:, :, h:], x, block.w_qkv[:, :, h:])  # [K, b*s, 2h]
            cls_rows = x.view(K, batch, seq, h)[:, :, 0]  # [K, b, h]
            q = torch.baddbmm(block.b_qkv[:, :, :h], cls_rows, block.w_qkv[:, :, :h])  # [K, b, h]
            q = q.view(K * batch, 1, heads, d).transpose(1, 2)  # [K*b, heads, 1, d]
            k, v = kv.view(K * batch, seq, 2, heads, d).permute(2, 0, 3, 1, 4)  # each [K*b, heads, s, d]
            q_len = 1
        else:
            qkv = torch.baddbmm(block.b_qkv, x, block.w_qkv)  # [K, b*s, 3h]
            q, k, v = qkv.view(K * batch, seq, 3, heads, d).permute(2, 0, 3, 1, 4)
            q_len = seq
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [K*b, heads, q, d]
        return ctx.transpose(1, 2).reshape(K, batch * q_len, h)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [K, batch, classes] for input_ids [batch, seq] (attention_mask [batch, seq], 1 = real)."""
        K, h = self.members, self.hidden
        batch, seq = input_ids.shape
        offsets = torch.arange(K, device=input_ids.device).view(K, 1, 1) * self.word.shape[1]
        x = self.word.view(-1, h)[(input_ids.unsqueeze(0) + offsets).view(-1)].view(K, batch, seq, h)
        x = x + self.position[:, :seq].unsqueeze(1) + self.token_type.view(K, 1, 1, h)
        x = self._norm(x.view(K, batch * seq, h), self.emb_ln)  # [K, b*s, h]
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool().view(1, batch, 1, 1, seq).expand(K, -1, -1, -1, -1).reshape(K * batch, 1, 1, seq)
        for i, block in enumerate(self.blocks):
            cls_only = self.cls_only_last_layer and i == self.layers - 1
            attended = self._attention(block, x, batch, seq, mask, cls_only)
            if cls_only:
                x = x.view(K, batch, seq, h)[:, :, 0]  # [K, b, h]: only [CLS] goes on
            x = self._norm(torch.baddbmm(block.b_out, attended, block.w_out) + x, block.ln1)
            inner = F.gelu(torch.baddbmm(block.b_ffn_in, x, block.w_ffn_in))
            x = self._norm(torch.baddbmm(block.b_ffn_out, inner, block.w_ffn_out) + x, block.ln2)
        cls = x.view(K, batch, -1, h)[:, :, 0]  # [K, b, h]
        pooled = torch.tanh(torch.baddbmm(self.b_pool, cls, self.w_pool))
        return torch.baddbmm(self.b_cls, pooled, self.w_cls)  # [K, b, classes]
