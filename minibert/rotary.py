"""Rotary position embeddings (RoPE; Su et al., 2021), the position scheme of ModernBERT, as an alternative to
BERT's learned position table.

Shapes: B batch, H heads, T tokens, D head size, N real tokens (unpadded).

Instead of adding a position vector to the input, RoPE rotates each query and key by an angle proportional to
its position t. Pair the D dimensions as (x_0, x_1), (x_2, x_3), ...; pair i turns by the angle t * theta_i with
theta_i = 10000^(-2i/D):

    rope(x, t)_{2i}   = x_{2i} cos(t theta_i) - x_{2i+1} sin(t theta_i)
    rope(x, t)_{2i+1} = x_{2i} sin(t theta_i) + x_{2i+1} cos(t theta_i)

A rotation by angle a followed by the transpose of a rotation by angle b is a rotation by a - b, so

    rope(q, i) . rope(k, j) = q^T R((j - i) theta) k

depends only on the offset j - i: attention scores see relative positions from the first step, where a learned
table must first discover that neighbouring positions matter. With a short training budget that is the
difference between a model that uses word order and one that only sees which words occur (a bag of words).
Values are not rotated, and nothing else in the model changes.
"""

from __future__ import annotations

import torch

BASE = 10000.0


def rotation_angles(positions: torch.Tensor, head_size: int) -> torch.Tensor:
    """t * theta_i, theta_i = 10000^(-2i/D), for each position t and pair i: (..., D/2), positions of shape (...)."""
    inv_freq = BASE ** (-torch.arange(0, head_size, 2, dtype=torch.float32, device=positions.device) / head_size)  # (D/2,)
    return positions.to(torch.float32)[..., None] * inv_freq  # (...) -> (..., D/2)


def rotary_angles(positions: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of t * theta_i for each position t: two (..., D/2) tensors, positions of shape (...)."""
    angles = rotation_angles(positions, head_size)  # (..., D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_{2i}, x_{2i+1}) pair of the last dimension of x by the angles whose cos and sin are given.

    x: (..., D); cos, sin: broadcastable to (..., D/2). Returns x's shape and dtype.
    """
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()  # (..., D/2) each: the pairs' first and second halves
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., D/2, 2)
    return rotated.flatten(-2).to(x.dtype)  # (..., D/2, 2) -> (..., D), pairs interleaved back in place


def rotate_padded(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: (B, H, T, D), token t of every row at position t."""
    cos, sin = rotary_angles(torch.arange(q.size(2), device=q.device), q.size(-1))  # (T, D/2) each
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


def rotate(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, num_heads: int):
    """q, k: (..., C) tokens, each of H heads of D = C / H; positions: each token's position t, of shape q's
    leading dimensions or broadcastable to them: (T,) for (B, T, C) rows, (N,) for unpadded (N, C) tokens."""
    *lead, C = q.shape
    cos, sin = rotary_angles(positions, C // num_heads)  # (..., D/2) each
    cos, sin = cos[..., None, :], sin[..., None, :]  # (..., 1, D/2): the same angle for every head
    q = apply_rotary(q.view(*lead, num_heads, -1), cos, sin).view(*lead, C)  # (..., C) -> (..., H, D) -> (..., C)
    k = apply_rotary(k.view(*lead, num_heads, -1), cos, sin).view(*lead, C)
    return q, k
