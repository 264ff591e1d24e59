"""Multi-head self-attention, the one place where tokens look at each other.

Shapes: B batch, T tokens, C hidden size, H heads, D head size (C = H * D), N real tokens (unpadded).

The design document writes `attention = softmax(Q · K^T) · V`. BERT computes

    Attention(Q, K, V) = softmax(Q · K^T / sqrt(D) + M) · V

- The 1/sqrt(D) scale: if the entries of q and k are independent with mean 0 and variance 1, then q·k is a sum of D
  such products and has variance D. Unscaled, the logits grow like sqrt(D); softmax of large logits is almost one-hot,
  and its gradient almost zero, so training stalls. Dividing by sqrt(D) keeps their variance at 1 for any head size.
- M is the padding mask: 0 where the key is a real token, a huge negative number where it is [PAD], so that
  exp(score + M) is exactly 0 and no token attends to padding.
- Multi-head: Q, K, V are split into H slices of width D; each head attends on its own, and the H results are
  concatenated back to width C and mixed by one more linear layer (`attention.output.dense`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .rotary import rotate_padded, rotate_unpadded
from .unpad import Unpadding


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """M from a (B, T) 1/0 padding mask: (B, 1, 1, T) with 0 on real keys and the dtype's minimum on pads.

    The minimum (not -inf) keeps a row whose keys are all padding finite: it becomes a uniform average, as in
    Hugging Face's BERT, instead of NaN.
    """
    m = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - m) * torch.finfo(dtype).min


def attention_math(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False):
    """The readable path: softmax(Q K^T / sqrt(D) + M) V, step by step.

    q, k, v: (B, H, T, D); mask: (B, 1, 1, T) additive or None. Returns (context (B, H, T, D), probs (B, H, T, T)).
    """
    D = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
    if mask is not None:
        scores = scores + mask  # (B, H, T, T) + (B, 1, 1, T): pads get the dtype's minimum
    probs = scores.softmax(dim=-1)  # (B, H, T, T), each row sums to 1 over the keys
    probs_dropped = F.dropout(probs, p=dropout_p, training=training)
    context = probs_dropped @ v  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D)
    return context, probs


def attention_sdpa(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False):
    """The fast path: the same formula in one fused kernel (flash / memory-efficient on CUDA). Returns (context, None)."""
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0)
    return context, None  # (B, H, T, D); the fused kernels never materialise the probabilities


def attention_rows(q, k, v, lengths: list[int], num_heads: int, dropout_p: float = 0.0, training: bool = False):
    """Unpadded attention, one sequence at a time: q, k, v are (N, C) with each row's real tokens contiguous.

    Each sequence attends only among its own n tokens, so no mask and no padding is needed: softmax(Q K^T / sqrt(D)) V
    on (1, H, n, D) tensors. Returns (N, C). Used on the CPU, where the per-sequence loop costs less than attending
    over re-padded rows; on CUDA the re-padded batch goes through one fused kernel instead.
    """
    out = []
    for qs, ks, vs in zip(q.split(lengths), k.split(lengths), v.split(lengths)):  # each (n, C)
        n = qs.shape[0]
        if n == 0:
            continue
        qh, kh, vh = (x.view(1, n, num_heads, -1).transpose(1, 2) for x in (qs, ks, vs))  # (1, H, n, D)
        context = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p if training else 0.0)
        out.append(context.transpose(1, 2).reshape(n, -1))  # (1, H, n, D) -> (n, C)
    return torch.cat(out)  # (N, C)


def attention_nested(q, k, v, offsets: torch.Tensor, num_heads: int, dropout_p: float = 0.0, training: bool = False):
    """Unpadded attention in one call: q, k, v are (N, C); row b is [offsets[b], offsets[b + 1]).

    The (N, C) tensors are viewed as jagged nested tensors of shape (B, H, n_b, D), and one sdpa call attends within
    each row. On CUDA that is a single variable-length kernel (flash or memory-efficient), with no padding at all;
    on the CPU torch runs it sequence by sequence in a slower general path. Returns (N, C).
    """
    N, C = q.shape

    def heads(x):  # (N, C) -> (N, H, D) -> jagged (B, n_b, H, D) -> (B, H, n_b, D); the kernels need packed rows
        return torch.nested.nested_tensor_from_jagged(x.contiguous().view(N, num_heads, -1), offsets).transpose(1, 2)

    context = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), dropout_p=dropout_p if training else 0.0)
    return context.transpose(1, 2).values().reshape(N, C)  # (B, H, n_b, D) -> (B, n_b, H, D) -> (N, C)


class BertSelfAttention(nn.Module):
    """Q = x W_q + b_q, K = x W_k + b_k, V = x W_v + b_v, split into heads, attend, concatenate."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.attn_impl = config.attn_impl
        self.unpad_attention = config.unpad_attention
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob
        self.rotary = config.position_embedding_type == "rotary"
        self.fused_qkv = config.fused_qkv

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V, each (B, T, C) or (N, C). Fused: the three weight matrices stacked into one (3C, C), one matmul,
        then split; the parameters stay three, named as in BERT, so checkpoints are unchanged."""
        if not self.fused_qkv:
            return self.query(x), self.key(x), self.value(x)
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3C, C)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3C,)
        return F.linear(x, weight, bias).chunk(3, dim=-1)  # (..., 3C) -> 3 x (..., C)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)

    def forward(self, x, mask=None, unpadding: Unpadding | None = None, output_attentions: bool = False):
        q, k, v = self.project_qkv(x)  # each (B, T, C), or (N, C) unpadded
        fused = self.attn_impl == "sdpa" and not output_attentions
        if self.rotary and unpadding is not None:  # rotate by each token's position within its own row
            q, k = rotate_unpadded(q, k, unpadding.positions, self.num_heads)  # (N, C) each
        if unpadding is not None and fused:
            how = self.unpad_attention
            if how == "auto":  # measured: per sequence wins on the CPU (benchmarks/, README)
                how = "repad" if q.is_cuda else "rows"
            if how == "rows":  # per sequence, on real tokens only
                return attention_rows(q, k, v, unpadding.lengths, self.num_heads, self.dropout_p, self.training), None
            if how == "nested":  # all sequences in one variable-length call
                return attention_nested(q, k, v, unpadding.offsets, self.num_heads, self.dropout_p, self.training), None
        if unpadding is not None:  # attention mixes tokens within a row: put the rows back for it
            q, k, v = unpadding.pad(q), unpadding.pad(k), unpadding.pad(v)  # (N, C) -> (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, T, D)
        if self.rotary and unpadding is None:
            q, k = rotate_padded(q, k)  # (B, H, T, D) each, token t turned by t * theta
        attend = attention_sdpa if fused else attention_math
        context, probs = attend(q, k, v, mask, self.dropout_p, self.training)  # (B, H, T, D)
        B, H, T, D = context.shape
        context = context.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, C): heads concatenated
        if unpadding is not None:
            context = unpadding.unpad(context)  # (B, T, C) -> (N, C)
        return context, probs


class BertSelfOutput(nn.Module):
    """The output projection W_o that mixes the heads, dropout, then the residual connection and LayerNorm.

    post-LN (BERT):  x = LayerNorm(x + Dropout(context W_o + b_o))
    pre-LN:          x = x + Dropout(context W_o + b_o)   (the LayerNorm ran on the block's input instead)
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.norm_first = config.norm_first

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = residual + self.dropout(self.dense(context))
        return x if self.norm_first else self.LayerNorm(x)


class BertAttention(nn.Module):
    """Self-attention sub-layer with its residual; Hugging Face's names (`self`, `output`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask=None, unpadding=None, output_attentions=False):
        h = self.output.LayerNorm(x) if self.output.norm_first else x
        context, probs = self.self(h, mask, unpadding, output_attentions)
        return self.output(context, x), probs
