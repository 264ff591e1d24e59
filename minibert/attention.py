"""Multi-head self-attention, the one place where tokens look at each other, and the attention function that
BERT, GPT-2 (minibert/gpt.py) and T5 (minibert/t5.py) share.

Shapes: B batch, T tokens (queries), S keys, C hidden size, H heads, D head size (C = H * D), N real tokens
(unpadded).

《预训练与微调的详细方法》 (section 4.1.2, formula 3) writes the attention mechanism as

    attention = softmax(Q · K^T) · V

BERT computes

    Attention(Q, K, V) = softmax(Q · K^T / sqrt(D) + M) · V

- The 1/sqrt(D) scale, which the document's formula leaves out: if the entries of q and k are independent with
  mean 0 and variance 1, then q·k is a sum of D such products and has variance D. Unscaled, the logits grow like
  sqrt(D); softmax of large logits is almost one-hot, and its gradient almost zero, so training stalls. Dividing by
  sqrt(D) keeps their variance at 1 for any head size. (T5 leaves it out too, and folds it into the initial W_q.)
- M is the mask: for BERT, 0 where the key is a real token and a huge negative number where it is [PAD], so that
  exp(score + M) is exactly 0 and no token attends to padding; a decoder's M also hides the keys after the query.
- Multi-head: Q, K, V are split into H slices of width D; each head attends on its own, and the H results are
  concatenated back to width C and mixed by one more linear layer (`attention.output.dense`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .rotary import rotate
from .trace import LayerTrace
from .unpad import UNPADDED_ATTENTION, Unpadding, attend_repadded


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """M from a (B, T) 1/0 padding mask: (B, 1, 1, T) with 0 on real keys and the dtype's minimum on pads.

    The minimum (not -inf) keeps a row whose keys are all padding finite: it becomes a uniform average, as in
    Hugging Face's BERT, instead of NaN.
    """
    m = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - m) * torch.finfo(dtype).min


def causal_mask(T: int, S: int, attention_mask: torch.Tensor | None, dtype: torch.dtype, device) -> torch.Tensor:
    """M of shape (1 or B, 1, T, S): M_ij = 0 if j <= P + i and key j is a real token, else the dtype's minimum.

    The mask of a decoder (GPT-2, T5's decoder): token i may read tokens j <= i only. P = S - T keys come from a
    cache, so query i is token P + i of the sequence. attention_mask: (B, S) with 1 on real tokens and 0 on padding,
    or None. "Allowed" is computed as booleans and turned into 0 / minimum once, since adding two minimums (causal +
    padding) would overflow to -inf.
    """
    P = S - T
    i = torch.arange(T, device=device)[:, None] + P  # (T, 1): position of each query in the sequence
    j = torch.arange(S, device=device)[None, :]  # (1, S): position of each key
    allowed = (j <= i)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()  # (B, 1, T, S): no padded key either
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


# --- the attention of all three systems: one formula, a readable path and a fast path ---


def attention_math(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False, scale: float | None = None,
                   is_causal: bool = False):
    """The readable path: softmax(Q K^T · s + M) V, step by step, with s = 1/sqrt(D) unless `scale` says otherwise
    (T5 passes 1: its scale is folded into the initialisation of W_q).

    q: (B, H, T, D); k, v: (B, H, S, D) (S = T in self-attention); mask: the additive M, broadcastable to
    (B, H, T, S), or None. is_causal: M is the square causal mask (`causal_mask`), for a mask of None.
    Returns (context (B, H, T, D), probs (B, H, T, S)).
    """
    s = q.size(-1) ** -0.5 if scale is None else scale
    q = q if s == 1.0 else q * s  # the scale on Q, the smaller side (D <= S): the same product, a smaller pass
    scores = q @ k.transpose(-2, -1)  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S): Q K^T · s
    if is_causal:
        mask = causal_mask(q.size(-2), k.size(-2), None, q.dtype, q.device)  # (1, 1, T, S)
    if mask is not None:
        scores = scores + mask  # (B, H, T, S) + M: masked keys get the dtype's minimum
    probs = scores.softmax(dim=-1)  # (B, H, T, S), each row sums to 1 over the keys
    probs_dropped = F.dropout(probs, p=dropout_p, training=training)
    context = probs_dropped @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    return context, probs


def attention_sdpa(q, k, v, mask=None, dropout_p: float = 0.0, training: bool = False, scale: float | None = None,
                   is_causal: bool = False):
    """The fast path: the same formula in one fused kernel (flash / memory-efficient on CUDA). With `is_causal` the
    kernel applies the square causal mask itself and can skip the blocks above the diagonal. Returns (context, None):
    the fused kernels never materialise the probabilities.

    One exception: torch has no fused CPU kernel that drops out attention probabilities, so training with dropout on
    the CPU falls back to torch's own composite of the readable formula plus a scan for fully masked rows; the
    readable path itself is then taken (about 10% off a GPT training step, benchmarks' `gpt_train`).
    """
    if training and dropout_p > 0 and q.device.type == "cpu":
        return attention_math(q, k, v, mask, dropout_p, training, scale, is_causal)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0,
                                             is_causal=is_causal, scale=scale)
    return context, None  # (B, H, T, D)


# How the heads attend, by `attn_impl`: chosen once, when a model is built (BERT, GPT-2 and T5 alike).
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

    def forward(self, x, mask=None, unpadding: Unpadding | None = None, output_attentions: bool = False,
                trace: LayerTrace | None = None):
        """(B, T, C) -> (B, T, C), or unpadded (N, C) -> (N, C); with the probabilities (B, H, T, T) when asked for,
        else None. `mask`: the additive (B, 1, 1, T) padding mask M, or None. `trace`: where to keep Q, K, V."""
        q, k, v = self.project_qkv(x)  # each (B, T, C), or (N, C) unpadded
        if trace is not None:
            trace.query, trace.key, trace.value = q, k, v
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
    """W_o mixes the heads; then dropout, the residual connection and the attention sub-layer's LayerNorm:

        post-LN (BERT):  LayerNorm(x + Dropout(context W_o + b_o))
        pre-LN:          x + Dropout(context W_o + b_o)

    Pre-LN normalises the sub-layer's input instead of its sum, before the heads read it (`BertAttention`), with
    this same LayerNorm: its place in a checkpoint, `attention.output.LayerNorm`, is the same in both blocks.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.norm_first = config.norm_first

    def forward(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """context: the heads side by side; x: the residual stream the sub-layer read. Both (B, T, C) -> (B, T, C)."""
        a = self.dropout(self.dense(context))  # (B, T, C)
        return x + a if self.norm_first else self.LayerNorm(x + a)


class BertAttention(nn.Module):
    """The attention sub-layer, with its residual connection and LayerNorm (Hugging Face's names, `self` and
    `output`):

        post-LN (BERT):  x1 = LayerNorm(x + Dropout(SelfAttention(x) W_o + b_o))
        pre-LN:          x1 = x + Dropout(SelfAttention(LayerNorm(x)) W_o + b_o)
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)
        self.norm_first = config.norm_first

    def forward(self, x, mask=None, unpadding=None, output_attentions=False, trace: LayerTrace | None = None):
        """(B, T, C) -> x1 (B, T, C), or unpadded (N, C) -> (N, C); and the probabilities when asked for."""
        h = self.output.LayerNorm(x) if self.norm_first else x  # pre-LN: the heads read the normalised stream
        context, probs = self.self(h, mask, unpadding, output_attentions, trace)  # (B, T, C), or (N, C)
        if trace is not None:
            trace.attention_input, trace.context = h, context
        return self.output(context, x), probs
