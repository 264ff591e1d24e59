"""Held-out evaluation during pretraining: the objective's loss, the accuracy of its predictions and the
perplexity on fixed masks, and for MLM what word order is worth (the same blocks with their tokens shuffled)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from train.device import Dist
from train.packing import block_batch


def shuffle_rows(ids: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same tokens and the same targets, each row in a random order: what is left is a bag of words."""
    order = torch.rand(ids.shape, generator=gen).argsort(dim=1)  # (B, T) a permutation per row
    return ids.gather(1, order), labels.gather(1, order)


@torch.no_grad()
def evaluate(model, objective, eval_blocks, args, device, d: Dist, amp) -> dict:
    """Held-out loss, accuracy of the predictions and perplexity exp(loss), on fixed masks (the objective's
    `eval_sums`; for ELECTRA the generator's MLM loss, and the discriminator's loss and accuracy on every token).

    MLM also reports `eval_loss_shuffled`: the loss on the same blocks and targets with each block's tokens in a
    random order. A model that only knows which words occur scores the same on both; `eval_order_gain` (shuffled
    minus real) is what it has learned from word order, in nats per masked token.
    """
    model.eval()
    gen = torch.Generator().manual_seed(1234)  # the same masks and shuffles at every evaluation
    B = args.micro_batch_size or args.batch_size
    n = min(len(eval_blocks), B * args.eval_batches)
    rows = slice(d.rank, None, d.world)  # every rank a share of each batch
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, n, B):
        batch = objective.make_batch(block_batch(eval_blocks, np.arange(start, min(n, start + B))), gen)
        shuffled = shuffle_rows(batch["input_ids"], batch["labels"], gen) if objective.order_probe else None
        part = {k: v[rows].to(device) for k, v in batch.items()}
        if len(part["input_ids"]) == 0:
            continue
        with amp:
            sums = objective.eval_sums(model, part)
            if shuffled is not None:
                ids, labels = (x[rows].to(device) for x in shuffled)
                sums["shuffled_loss"] = objective.eval_sums(model, {**part, "input_ids": ids, "labels": labels})["loss"]
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + v.to(device, torch.float64)
    names = sorted(totals)
    stacked = torch.stack([totals[k] for k in names])
    if d.world > 1:
        dist.all_reduce(stacked)
    t = dict(zip(names, stacked.tolist()))
    model.train()
    loss = t["loss"] / t["count"]
    out = {"eval_loss": loss, "eval_accuracy": t["correct"] / t["count"], "eval_perplexity": math.exp(min(loss, 50))}
    if "shuffled_loss" in t:
        out.update(eval_loss_shuffled=t["shuffled_loss"] / t["count"], eval_order_gain=(t["shuffled_loss"] - t["loss"]) / t["count"])
    if "disc_loss" in t:
        out.update(eval_discriminator_loss=t["disc_loss"] / t["disc_count"],
                   eval_discriminator_accuracy=t["disc_correct"] / t["disc_count"],
                   eval_replaced_fraction=t["replaced"] / t["disc_count"])
    return out


def describe_eval(e: dict) -> str:
    """One line of an evaluation's figures."""
    text = f"held-out loss {e['eval_loss']:.3f}, accuracy {e['eval_accuracy']:.1%}, perplexity {e['eval_perplexity']:.1f}"
    if "eval_order_gain" in e:
        text += f", word order worth {e['eval_order_gain']:.3f} nats"
    if "eval_discriminator_loss" in e:
        text = (f"generator {text}; discriminator loss {e['eval_discriminator_loss']:.4f}, accuracy "
                f"{e['eval_discriminator_accuracy']:.1%} ({e['eval_replaced_fraction']:.1%} of the tokens replaced)")
    return text
