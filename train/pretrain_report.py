"""What a pretraining run prints: the header once the set-up is done, and the summary when the loop ends (how it
ended, how far and how fast it got, the held-out figures, and the commands to run next)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from minibert.checkpoint import unwrap
from train.device import Dist
from train.families import NAMES as FAMILY_NAMES
from train.objectives import Objective
from train.pretrain_data import Data
from train.pretrain_state import TrainState


@dataclass
class Outcome:
    """How the loop ended: the line printed, and the exit status (0: done or paused, 1: the loss stopped being
    finite, 128 + N: signal N, as a shell reports a process it ended)."""

    message: str
    exit_code: int = 0


def print_header(args, d: Dist, device, out: Path, n_texts: int, data: Data, model, seconds: float) -> None:
    if not d.main:
        return
    # BERT's encoder (what fine-tuning keeps; not ELECTRA's generator nor the MLM head); GPT-2 and T5 whole,
    # their output layers being their embeddings
    family_ = data.objective.family
    counted = unwrap(model).bert if family_ == "bert" else unwrap(model)
    what = "encoder" if family_ == "bert" else FAMILY_NAMES[family_]
    n_params = sum(p.numel() for p in counted.parameters())
    print(f"run {out} | {n_texts:,} texts -> {data.n_blocks:,} blocks of {args.max_seq_length} "
          f"({len(data.train_blocks):,} train, {len(data.eval_blocks):,} held out) | vocab {data.tok.vocab_size:,} | "
          f"{what} {n_params / 1e6:.2f}M parameters | {d.world} rank(s) on {device} | set-up {seconds:.0f}s",
          flush=True)


def print_summary(out: Path, outcome: Outcome, s: TrainState, tokens_per_step: int, objective: Objective) -> None:
    """The run's last lines: how it ended, how far and fast it got, the held-out figures, what to run next."""
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    evals = [r for r in records if "eval_loss" in r]
    print(f"\n{outcome.message}")
    print(f"  steps {s.step:,} | tokens {s.step * tokens_per_step:,} | training time {s.train_seconds / 60:.1f} min "
          f"| {s.step * tokens_per_step / max(s.train_seconds, 1e-9):,.0f} tokens/s")
    if evals:
        first, last = evals[0], evals[-1]
        print(f"  held-out {objective.eval_loss_name} {first['eval_loss']:.3f} -> {last['eval_loss']:.3f}, "
              f"{objective.eval_accuracy_name} {first['eval_accuracy']:.1%} -> {last['eval_accuracy']:.1%}, "
              f"perplexity {first['eval_perplexity']:.0f} -> {last['eval_perplexity']:.1f}")
        if "eval_order_gain" in last:
            print(f"  word order: held-out loss with each block shuffled {last['eval_loss_shuffled']:.3f}, "
                  f"{last['eval_order_gain']:.3f} nats above the real order (0 = the model reads a bag of words)")
        if "eval_discriminator_loss" in last:
            print(f"  discriminator: held-out loss {first['eval_discriminator_loss']:.4f} -> "
                  f"{last['eval_discriminator_loss']:.4f}, accuracy {last['eval_discriminator_accuracy']:.1%} "
                  f"on every token ({last['eval_replaced_fraction']:.1%} replaced)")
    print(f"  run directory {out} (model.safetensors, tokenizer/, metrics.jsonl, loss.png)")
    print(f"  next: python -m train.finetune --init {shlex.quote(str(out))}")
    if objective.family != "bert":
        example = "今天天气" if objective.family == "gpt2" else "今天<extra_id_0>很好"
        print(f"        python -m train.generate {shlex.quote(str(out))} {shlex.quote(example)}")
