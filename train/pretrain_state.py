"""Everything a pretraining checkpoint restores, and how it is built: a new model (seeded), the weights of an --init
run, or a checkpoint's whole state on --resume, so that a resumed run continues bit for bit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from minibert import InputError
from minibert.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checked, read_config, read_weights
from train.checkpoints import Resumed, repair_top_level, truncate_metrics
from train.device import Dist
from train.optim import make_adamw
from train.packing import BlockStream
from train.pretrain_data import Data
from train.pretrain_options import PretrainArgs, model_config
from train.resume import flag


@dataclass
class TrainState:
    """Everything a checkpoint restores, so that a resumed run continues bit for bit: the weights and the
    optimiser's moments, where the batch stream and the masking generator stand, the step, the planned number of
    steps (None until a time budget is measured) and the training time so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    stream: BlockStream
    mask_gen: torch.Generator
    step: int = 0
    total_steps: int | None = None
    train_seconds: float = 0.0

    def to_dict(self, args: PretrainArgs) -> dict:
        return {"step": self.step, "total_steps": self.total_steps, "train_seconds": self.train_seconds,
                "stream": self.stream.state(), "mask_rng": self.mask_gen.get_state(),
                "torch_rng": torch.get_rng_state(), "args": dataclasses.asdict(args)}


def model_config_for(args: PretrainArgs, data: Data, resumed: Resumed | None):
    """The run's own config on --resume, the --init run's, or a new one from --preset/--config/--set."""
    if resumed:
        config = resumed.config
    elif args.init:
        bert_only = {"sparse_prediction": args.sparse_prediction} if data.objective.family == "bert" else {}
        config = read_config(Path(args.init) / CONFIG_NAME, **bert_only)
    else:
        config = model_config(args, data.tok.vocab_size, data.objective)
    if config.vocab_size != data.objective.model_vocab_size:
        raise InputError(f"the tokenizer has {data.tok.vocab_size} tokens, so the model needs "
                         f"{data.objective.model_vocab_size} embeddings, but it has {config.vocab_size}; use the "
                         "tokenizer the model was trained with")
    return config


def build_state(args: PretrainArgs, d: Dist, device: torch.device, out: Path, data: Data, resumed: Resumed | None,
                changed: list[str]) -> TrainState:
    """A new model (seeded), the --init run's weights, or the checkpoint's whole state on --resume."""
    torch.manual_seed(args.seed)
    model = data.objective.build(model_config_for(args, data, resumed)).to(device)
    s = TrainState(model, make_adamw(model, args.lr, args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                                     eps=args.adam_epsilon),
                   BlockStream(len(data.train_blocks), args.batch_size, args.seed),
                   torch.Generator().manual_seed(args.seed), total_steps=args.max_steps)
    if args.init and not resumed:  # the encoder carries over; a head the earlier objective lacked starts fresh
        report = load_checked(model, read_weights(Path(args.init) / WEIGHTS_NAME))
        fresh = sorted({k.split(".")[0] for k in report.newly_initialised})
        if d.main:
            print(f"init: weights of {args.init}" + (f"; fresh: {', '.join(fresh)}" if fresh else ""), flush=True)
    if resumed:
        state = resumed.state
        load_checked(model, resumed.weights)
        s.optimizer.load_state_dict(state["optimizer"])
        s.stream.restore(state["stream"])
        s.mask_gen.set_state(state["mask_rng"])
        torch.set_rng_state(state["torch_rng"])
        s.step, s.train_seconds = state["step"], state["train_seconds"]
        # A new budget replaces the planned number of steps (None: measured again, for a time budget); the
        # learning rate then follows the schedule of a run of the new length from here on.
        s.total_steps = args.max_steps if {"max_steps", "max_time"} & set(changed) else state["total_steps"]
        if d.main:
            truncate_metrics(out / "metrics.jsonl", s.step if s.step > 0 else -1)
            repair_top_level(out, resumed.path, s.step)
            for name in changed:
                print(f"note: resuming with {flag(name)} {getattr(args, name)} (the run had "
                      f"{state['args'][name]})", flush=True)
    return s
