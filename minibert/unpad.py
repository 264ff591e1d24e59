"""Unpadding: run per-token work only on real tokens of a padded batch (the MosaicBERT / ModernBERT idea).

Shapes: B batch, T tokens per row (padded), N real tokens in the whole batch (N <= B*T), C hidden size, H heads,
D head size (C = H * D), n the real tokens of one row.

A padded batch of reviews whose median length is a third of its longest row spends most of its arithmetic on
[PAD]. Projections, the feed-forward network and LayerNorm act on each token independently, so they can run on
the (N, C) matrix of real tokens alone. Only attention mixes tokens within a row, and `unpad_attention` picks how
it finds the rows (the ways below; `BertSelfAttention` takes one at construction):
- rows:   one sequence at a time, each (1, H, n, D), no mask (the CPU's default: measured fastest there);
- repad:  scatter into a zero (B, T, C) tensor for one masked fused kernel, and gather back (CUDA's default);
- nested: a jagged nested tensor of the N rows split at `offsets`: one variable-length kernel on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Unpadding:
    """Where the N real tokens of a (B, T) batch are, computed once per batch and shared by every layer."""

    indices: torch.Tensor  # (N,) positions of the real tokens in the flattened (B*T) batch
    B: int
    T: int
    positions: torch.Tensor  # (N,) each real token's position t within its row (its column in the padded batch)
    offsets: torch.Tensor  # (B + 1,) the (N, ...) rows hold row 0's tokens, then row 1's, ...: row b is
    #                        [offsets[b], offsets[b + 1]), a jagged layout
    _lengths: list[int] | None = field(default=None, repr=False)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> "Unpadding":
        B, T = attention_mask.shape
        indices = torch.nonzero(attention_mask.reshape(-1), as_tuple=True)[0]  # (N,)
        row_lengths = attention_mask.ne(0).sum(dim=1)  # (B,)
        offsets = F.pad(row_lengths.cumsum(0), (1, 0))  # (B,) -> (B + 1,), a 0 in front
        return cls(indices=indices, B=B, T=T, positions=indices % T, offsets=offsets)

    @property
    def lengths(self) -> list[int]:
        """The row lengths as Python ints, for splitting the (N, ...) rows. A device-to-host copy, made once and
        only when asked for (by the per-sequence attention); everything else stays on the device, and in one
        torch.compile graph."""
        if self._lengths is None:
            self._lengths = self.offsets.diff().tolist()  # (B + 1,) -> (B,) real tokens per row
        return self._lengths

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): keep the real tokens."""
        return x.reshape(self.B * self.T, *x.shape[2:])[self.indices]  # (N, ...)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...): real tokens back in place, zeros at the pads."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:])  # (B*T, ...)
        out = out.index_copy(0, self.indices, x)  # differentiable scatter
        return out.view(self.B, self.T, *x.shape[1:])  # (B, T, ...)


# --- attention over unpadded tokens ----------------------------------------------------------------------------


def attention_rows(q, k, v, lengths: list[int], num_heads: int, dropout_p: float = 0.0, training: bool = False,
                   is_causal: bool = False, scale: float | None = None, biases: list[torch.Tensor] | None = None):
    """Unpadded attention, one sequence at a time: q, k, v are (N, H*D) with each row's real tokens contiguous.

    Each sequence attends only among its own n tokens, so no padding mask is needed: softmax(Q K^T · s + M) V on
    (1, H, n, D) tensors, s = 1/sqrt(D) unless `scale` says otherwise. M is the causal mask with `is_causal` (GPT-2:
    a row's real tokens keep their order, so causal among them is causal in the padded row), or the row's own
    entry of `biases`, (1, H, n, n) (T5's position bias); else nothing. Returns (N, H*D). Used on the CPU, where
    the per-sequence loop costs less than attending over re-padded rows; on CUDA the re-padded batch goes through
    one fused kernel instead.
    """
    out = []
    for b, (qs, ks, vs) in enumerate(zip(q.split(lengths), k.split(lengths), v.split(lengths))):  # each (n, H*D)
        n = qs.shape[0]
        if n == 0:
            continue
        qh, kh, vh = (x.view(1, n, num_heads, -1).transpose(1, 2) for x in (qs, ks, vs))  # (1, H, n, D)
        mask = None if biases is None else biases[b]  # (1, H, n, n) or None
        context = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=dropout_p if training else 0.0,
                                                 is_causal=is_causal, scale=scale)
        out.append(context.transpose(1, 2).reshape(n, -1))  # (1, H, n, D) -> (n, H*D)
    return torch.cat(out)  # (N, H*D)


def row_biases(bias: torch.Tensor, unpadding: "Unpadding") -> list[torch.Tensor]:
    """A (1, H, T, T) bias that depends on the query's and key's columns (T5's position bias) cut to each row's real
    tokens: B tensors (1, H, n_b, n_b). A row whose real tokens are its first n_b columns (right padding) gets a
    slice; any other pattern gathers its columns. Computed once per batch and shared by every block."""
    out, start = [], 0
    for n in unpadding.lengths:
        columns = unpadding.positions[start:start + n]  # (n,)
        start += n
        if n == 0 or int(columns[-1]) == n - 1:  # columns 0 .. n-1
            out.append(bias[:, :, :n, :n])
        else:
            out.append(bias[:, :, columns[:, None], columns[None, :]])  # (1, H, n, n)
    return out


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


# The ways of `unpad_attention`. Each takes the (N, C) queries, keys and values (projected, and rotated where the
# positions are rotary), the batch's additive mask (B, 1, 1, T), its Unpadding and the BertSelfAttention whose heads
# these are (its num_heads, dropout_p, training, and multi_head_attention for padded rows), and returns
# (context (N, C), probabilities (B, H, T, T) or None).


def attend_rows(q, k, v, mask, unpadding: Unpadding, attention: nn.Module, output_attentions: bool = False):
    """rows: each sequence on its own, with no mask (`attention_rows`)."""
    H, p = attention.num_heads, attention.dropout_p
    return attention_rows(q, k, v, unpadding.lengths, H, p, attention.training), None


def attend_nested(q, k, v, mask, unpadding: Unpadding, attention: nn.Module, output_attentions: bool = False):
    """nested: all sequences in one variable-length call (`attention_nested`)."""
    H, p = attention.num_heads, attention.dropout_p
    return attention_nested(q, k, v, unpadding.offsets, H, p, attention.training), None


def attend_repadded(q, k, v, mask, unpadding: Unpadding, attention: nn.Module, output_attentions: bool = False):
    """repad: the rows put back in place for the padded, masked attention (`attention.multi_head_attention`), then
    unpadded again. The only way that can form the probabilities, so `output_attentions` always takes it."""
    q, k, v = unpadding.pad(q), unpadding.pad(k), unpadding.pad(v)  # (N, C) -> (B, T, C)
    context, probs = attention.multi_head_attention(q, k, v, mask, output_attentions)  # (B, T, C); (B, H, T, T)
    return unpadding.unpad(context), probs  # (B, T, C) -> (N, C)


def attend_auto(q, k, v, mask, unpadding: Unpadding, attention: nn.Module, output_attentions: bool = False):
    """auto: rows on the CPU, repad on CUDA (measured: benchmarks/, README); by the tensors' device at each call, since
    a model may move after it is built."""
    attend = attend_repadded if q.is_cuda else attend_rows
    return attend(q, k, v, mask, unpadding, attention, output_attentions)


UNPADDED_ATTENTION = {"rows": attend_rows, "repad": attend_repadded, "nested": attend_nested, "auto": attend_auto}
