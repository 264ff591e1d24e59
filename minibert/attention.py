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
from .rotary import rotate
from .unpad import UNPADDED_ATTENTION, Unpadding, attend_repadded
from .unpad import attention_nested, attention_rows  # noqa: F401  (importable from here, as before)


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


# How one head attends, by `attn_impl`.
ATTENTION = {"math": attention_math, "sdpa": attention_sdpa}


class BertSelfAttention(nn.Module):
    """Q = x W_q + b_q, K = x W_k + b_k, V = x W_v + b_v; split into H heads; softmax(Q K^T / sqrt(D) + M) V in each
    head; the heads concatenated back to width C. With rotary positions Q and K are first turned by position.

    How a head attends is chosen here, once: the formula step by step (`attn_impl="math"`) or torch's fused kernel
    ("sdpa"); and for unpadded input, how the (N, C) real tokens find their rows (`unpad_attention`, minibert/unpad.py;
    the formula always meets them re-padded). Asking for the probabilities (`output_attentions`) takes the formula,
    the only path that forms them.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob
        self.rotary = config.position_embedding_type == "rotary"
        self.fused_qkv = config.fused_qkv
        self.attn_impl, self.unpad_attention = config.attn_impl, config.unpad_attention  # as configured, for reading
        self.attend = ATTENTION[config.attn_impl]
        self.attend_unpadded = UNPADDED_ATTENTION["repad" if config.attn_impl == "math" else config.unpad_attention]

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

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        B, H, T, D = x.shape
        return x.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, C): the heads side by side

    def forward(self, x, mask=None, unpadding: Unpadding | None = None, output_attentions: bool = False):
        """(B, T, C) -> (B, T, C), or unpadded (N, C) -> (N, C); with the probabilities (B, H, T, T) when asked for,
        else None. `mask`: the additive (B, 1, 1, T) padding mask M, or None."""
        q, k, v = self.project_qkv(x)  # each (B, T, C), or (N, C) unpadded
        if self.rotary:  # RoPE: the query and key of the token at position t turned by t * theta_i
            t = torch.arange(q.size(1), device=q.device) if unpadding is None else unpadding.positions  # (T,) or (N,)
            q, k = rotate(q, k, t, self.num_heads)  # shapes unchanged
        if unpadding is not None:  # real tokens only: they meet attention the way chosen at construction
            attend = attend_repadded if output_attentions else self.attend_unpadded
            return attend(q, k, v, mask, unpadding, self, output_attentions)  # (N, C)
        return self.multi_head_attention(q, k, v, mask, output_attentions)

    def multi_head_attention(self, q, k, v, mask=None, output_attentions: bool = False):
        """Multi-head attention of (B, T, C) queries, keys and values: split, attend, concatenate."""
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, T, C) -> (B, H, T, D)
        attend = attention_math if output_attentions else self.attend
        context, probs = attend(q, k, v, mask, self.dropout_p, self.training)  # (B, H, T, D); probs (B, H, T, T)
        return self.merge_heads(context), probs  # (B, H, T, D) -> (B, T, C)


class BertSelfOutput(nn.Module):
    """The output projection W_o that mixes the heads, then dropout: Dropout(context W_o + b_o). Its LayerNorm is
    the attention sub-layer's (`BertAttention.norm`), which the block applies: Hugging Face's module holds it."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(context))  # (B, T, C) -> (B, T, C)


class BertAttention(nn.Module):
    """The attention sub-layer, Attention(x) = Dropout(SelfAttention(x) W_o + b_o), and its LayerNorm; the block
    (minibert/encoder.py) adds the residual and places the norm. Hugging Face's names (`self`, `output`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask=None, unpadding=None, output_attentions=False):
        context, probs = self.self(x, mask, unpadding, output_attentions)  # (B, T, C), or (N, C)
        return self.output(context), probs

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over each token's C numbers, with this sub-layer's gamma and beta
        (Hugging Face's `attention.output.LayerNorm`)."""
        return self.output.LayerNorm(x)
