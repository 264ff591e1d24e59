"""Optimiser and learning-rate schedule, shared by pretraining and fine-tuning.

The update of 《预训练与微调的详细方法》 (section 4.2.2) is plain gradient descent,
`param = param - learning_rate · grad`. BERT uses AdamW, which
keeps running averages of the gradient (m) and of its square (v) and steps each parameter by
`lr · m̂ / (sqrt(v̂) + eps)`, plus decoupled weight decay `lr · wd · param`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, layer_lr_decay: float = 1.0,
                 depths: dict[int, int] | None = None, top: int = 0, lr: float | None = None) -> list[dict]:
    """AdamW's parameter groups, for every loop.

    Weight decay by rule: tensors of rank >= 2 (weight matrices, embeddings) decay; biases and norms don't.
    Layer-wise learning-rate decay (ELECTRA, ULMFiT's discriminative fine-tuning): a parameter at depth d of `top`
    (`depths`: id(parameter) -> d; absent = `top`, the head) learns at lr · decay^(top - d), so the embeddings
    (d = 0) move least and the head most. Each group carries its `lr_scale`, which `set_lr` multiplies in;
    with `lr` the groups also start at lr · lr_scale. Groups come in order of first appearance, decayed first.
    """
    groups: dict[tuple[float, bool], dict] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        scale = layer_lr_decay ** (top - depths.get(id(p), top)) if depths else 1.0
        for decays in (True, False):  # both groups of a scale exist, so the order never depends on the first tensor
            groups.setdefault((scale, decays), {"params": [], "weight_decay": weight_decay if decays else 0.0,
                                                "lr_scale": scale, **({} if lr is None else {"lr": lr * scale})})
        groups[scale, p.dim() >= 2]["params"].append(p)
    return list(groups.values())


def make_adamw(model: nn.Module, lr: float, weight_decay: float, *, betas: tuple[float, float], eps: float,
               groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW over `groups` (default: `param_groups(model, weight_decay)`); the fused kernel on CUDA (one launch
    for all parameters). No defaults: each command's options hold its own (pretraining RoBERTa's betas
    (0.9, 0.98) and eps 1e-6, fine-tuning BERT's (0.9, 0.999) and 1e-8), so a run's args.json records them."""
    on_cuda = next(model.parameters()).is_cuda
    groups = param_groups(model, weight_decay) if groups is None else groups
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=on_cuda or None)


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: lr times the group's `lr_scale` (layer-wise decay; 1 without it)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Schedule:
    """`lr_at` stepping with the optimiser: after each optimiser step, `step()` sets the next step's learning rate
    (the loop that keeps its own step counter, as pretraining does, calls `set_lr(optimizer, lr_at(step, ...))`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, peak_lr: float, warmup_steps: int, total_steps: int,
                 schedule: str = "linear"):
        self.optimizer, self.steps = optimizer, 0
        self.lr = lambda step: lr_at(step, peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                                     schedule=schedule)
        set_lr(optimizer, self.lr(0))

    def step(self) -> None:
        self.steps += 1
        set_lr(self.optimizer, self.lr(self.steps))
