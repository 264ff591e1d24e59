"""Optimiser and learning-rate schedule, shared by pretraining and fine-tuning.

The document's update is plain gradient descent, `param = param - learning_rate · grad`. BERT uses AdamW, which
keeps running averages of the gradient (m) and of its square (v) and steps each parameter by
`lr · m̂ / (sqrt(v̂) + eps)`, plus decoupled weight decay `lr · wd · param`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay by rule: tensors of rank >= 2 (weight matrices, embeddings) decay; biases and LayerNorm don't."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6):
    """AdamW over `param_groups`; the fused kernel on CUDA (one launch for all parameters)."""
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=on_cuda or None)


def lr_at(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int, schedule: str = "linear",
          final_ratio: float = 0.0) -> float:
    """Linear warmup from 0 to peak_lr over warmup_steps, then linear or cosine decay to final_ratio · peak_lr
    at total_steps. `step` counts optimiser steps from 0."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    elif schedule == "constant":
        shape = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return peak_lr * (final_ratio + (1.0 - final_ratio) * shape)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, scales: list[float] | None = None) -> None:
    """Set every group's learning rate (times a per-group scale, for layer-wise decay)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * (scales[i] if scales else group.get("lr_scale", 1.0))
