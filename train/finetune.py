"""python -m train.finetune: fine-tune a pretrained minibert (or Hugging Face BERT) for text classification or, with
`--task ner`, named entities (a BIO tag per character or word, `train/finetune_tasks.py`), with honest numbers. A run of `python -m train.pretrain --objective causal` (GPT-2) or `--objective span` (T5)
fine-tunes the same way, on the same split, with the same metrics: GPT-2's body or T5's encoder takes BERT's place
(`train/families.py` says what each keeps and how it pools).

    python -m train.finetune                         # latest runs/pretrain-*/, built-in review sentiment task
    python -m train.finetune --from-scratch          # the control: same architecture, random initial weights
    python -m train.finetune --train data.csv --label-column sentiment --seeds 1 2 3
    python -m train.finetune --task ner              # People's Daily person, place and organisation names

Honest means: the model is selected on the validation split (best epoch by validation score) and the test split
is scored once, at the end, for that model only. Classification has K outputs and a cross-entropy loss (the
example of 《预训练与微调的详细方法》, section 5.2.3, trains a one-output `nn.Linear(768, 1)` regression head, on the
test set). `--from-scratch` gives the same
architecture, tokenizer and budget without pretraining, so the difference between the two runs is what
pretraining buys.

Outputs in --out: the best model (`train.classifier` describes the files), `results.json` with every metric, and a
table on stdout. With several --seeds, each seed's run is in `OUT/seed-S/` and `OUT/results.json` adds the mean and
standard deviation over seeds. `args.json` keeps the options the run was started with.

Stopping and resuming: SIGINT (Ctrl-C) or SIGTERM stops the run between two training steps with one line and exit
status 130 or 143. Every epoch's end is saved (`train.finetune_state`), so `--resume` keeps the seeds that finished
and continues the interrupted one from its last whole epoch, with the same figures as a run never stopped. A run
stopped before its first epoch ended leaves nothing behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from minibert import BertModel, GPT2LMHeadModel, T5ForConditionalGeneration
from minibert.checkpoint import family
from minibert.config import UNPAD_ATTENTION
from minibert.errors import InputError
from minibert.rundir import OutDir, OutState, RunKind, check_usable, claim, inspect_out, recorded_entries
from train import families, finetune_state, metrics, optim
from tokenizer.command import build_parser as build_options_parser
from tokenizer.command import opt, parse_options
from train.cli import RUNS_DIR, TaskDraw, write_json
from train.batches import EncodedSet, collate, length_bucketed_batches, load_tokenizer
from train.finetune_data import TaskData, warn
from train.finetune_tasks import TASKS, check_task_options
from train.finetune_state import MODEL_ENTRIES
from minibert.pooling import POOLINGS
from train.classifier import FineTuned, save_classifier
from train.device import autocast, resolve_device
from train.resume import given_by_value, options_on_resume
from train.signals import StopSignals
from tokenizer.command import command_main

STRATEGIES = ("full", "linear-probe", "freeze-bottom-k", "layer-fusion")
METRICS = ("macro_f1", "accuracy", "f1")  # f1: entity-level, for --task ner


# Tokens per example for a model without a position table (T5's relative positions), when --max-length is not given.
UNBOUNDED_MAX_LENGTH = 256


@dataclass
class Options(TaskDraw):
    """train.finetune's options; the task's (--train ... --train-examples) come from `train.cli.TaskDraw`."""

    # -- what to start from
    init: str | None = opt(None, "the pretrained model: a minibert run directory (config.json, model.safetensors, "
                           "tokenizer/) of BERT, ELECTRA, GPT-2 (--objective causal) or T5 (--objective span), "
                           "or a local Hugging Face BERT directory (config.json, weights, vocab.txt). "
                           "Default: the latest RUNS_DIR/pretrain-*/ that has a model.safetensors", metavar="DIR")
    from_scratch: bool = opt(False, "the control: the same architecture, config and tokenizer as the pretrained "
                             "model, from random initial weights, with the same budget")
    runs_dir: str = opt(RUNS_DIR, "where pretraining runs are looked for, and where the default --out goes",
                        metavar="DIR")
    out: str | None = opt(None, "output directory: new or empty (or, with --force, an earlier fine-tuning run). "
                          "Default: RUNS_DIR/finetune-YYYYmmdd-HHMMSS", metavar="DIR")
    force: bool = opt(False, "replace the fine-tuning run in --out: remove the entries that run recorded as its "
                      "own (in its .minibert-run marker), and nothing else, first")
    resume: bool = opt(False, "continue the stopped fine-tuning run in --out with its own options: the seeds that "
                       "finished are kept, the interrupted one continues from its last whole epoch, with the same "
                       "figures as a run never stopped. Options given again must match the run's, except --device "
                       "and --eval-batch-size")
    max_length: int | None = opt(None, "tokens per example, [CLS] and [SEP] included; longer texts are truncated. "
                                 "Default: as many as the model has positions (max_position_embeddings; "
                                 f"{UNBOUNDED_MAX_LENGTH} for T5's relative positions); a larger value is capped "
                                 "there")
    # -- what trains
    strategy: str = opt("full", "full: every weight trains. linear-probe: embeddings and all encoder blocks "
                        "frozen, only the head trains (pooler with --pooling pooler, and the classifier). "
                        "freeze-bottom-k: embeddings and the bottom --freeze-layers blocks frozen. layer-fusion: "
                        "the encoder frozen (ELMo's feature-based use), the classifier reads a learned "
                        "softmax-weighted mix of all L+1 layers times a learned scale gamma. Frozen parts run "
                        "without dropout; layer-fusion is for BERT alone", choices=STRATEGIES)
    freeze_layers: int | None = opt(None, "K for --strategy freeze-bottom-k: how many bottom blocks to freeze "
                                    "(0..L; the embeddings are always frozen by that strategy)", metavar="K")
    pooling: str = opt("mean", "sentence vector: mean = the mean over real tokens (the default, for every model: "
                       "pretraining has no next-sentence task, so nothing trains the [CLS] vector to summarise, and "
                       "objectives compare under the same fine-tuning); pooler = BERT's tanh(W h_[CLS] + b) "
                       "(Hugging Face-compatible, the one that exports); cls = the [CLS] vector; last = the last "
                       "real token's vector (for GPT-2 the only one that has read the whole text). GPT-2 takes "
                       "mean or last, T5's encoder mean, cls or last. Taken from the last layer, or from the fused "
                       "one with layer-fusion", choices=POOLINGS)
    # -- optimisation
    epochs: int = opt(3, "passes over the training data")
    batch_size: int = opt(32, "training examples per step")
    eval_batch_size: int = opt(128, "examples per forward pass when evaluating")
    lr: float = opt(5e-4, "peak learning rate of AdamW (reached after warmup, then decayed linearly to 0); "
                    "5e-4 suits the tiny preset, BERT-base wants 2e-5 to 5e-5")
    warmup_ratio: float = opt(0.1, "fraction of all steps spent warming the learning rate up linearly from 0")
    weight_decay: float = opt(0.01, "AdamW weight decay, on weight matrices only (tensors of rank >= 2; not on "
                              "biases, LayerNorm or the fusion weights)")
    layer_lr_decay: float = opt(1.0, "layer-wise learning-rate decay: the head gets --lr, the top block lr*d, the "
                                "next lr*d^2, ..., the embeddings lr*d^(L+1). 1.0 = off", metavar="D")
    dropout: float | None = opt(0.1, "dropout probability in the encoder (hidden and attention) and before the "
                                "classifier; BERT's 0.1 by default (pretraining runs without dropout). Pass a "
                                "negative value to keep the pretrained config's values", metavar="P")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this (0 = no clipping)")
    token_dropout: float = opt(0.0, "augmentation: delete each non-special training token with probability P "
                               "(deleted, not replaced by [UNK]; never all of a text). 0 = off", metavar="P")
    patience: int = opt(0, "early stopping: stop after this many epochs without a better validation score "
                        "(0 = off: train all --epochs)")
    metric: str | None = opt(None, "validation score that picks the best epoch: macro_f1 (the default) or accuracy "
                             "for classification, f1 (entity-level, the default) for ner", choices=METRICS)
    seeds: list[int] = opt((0,), "one run per seed (head initialisation, dropout, batch order); with several, "
                           "results.json and the table report the mean and sample std of each metric",
                           metavar="SEED")
    unpad: bool = opt(True, "BERT: run per-token work on real tokens only (faster; --no-unpad for the padded "
                      "path); GPT-2 and T5 always run padded")
    unpad_attention: str = opt("auto", "with --unpad, how attention meets the variable lengths: rows (one sequence "
                               "at a time), repad (one masked kernel over the re-padded batch), nested (one "
                               "variable-length kernel on CUDA); auto: rows on the CPU, repad on CUDA",
                               choices=UNPAD_ATTENTION)
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto (cuda if available); on cuda the forward pass runs in "
                      "bfloat16 autocast")


# -- options ------------------------------------------------------------------------------------------------


DESCRIPTION = ("Fine-tune a pretrained minibert for text classification or named entities (--task ner): "
               "validation metrics every epoch, test metrics once, for the epoch with the best validation score.")


def build_parser() -> argparse.ArgumentParser:
    """argparse options generated from the fields of `Options` (`tokenizer.command.build_parser`)."""
    return build_options_parser(Options, DESCRIPTION, "python -m train.finetune")


def check_options(o: Options) -> None:
    """Range checks that argparse cannot express; InputError names the option."""
    checks = [
        (o.epochs >= 1, "--epochs must be at least 1"),
        (o.batch_size >= 1 and o.eval_batch_size >= 1, "--batch-size and --eval-batch-size must be at least 1"),
        (math.isfinite(o.lr) and o.lr > 0, "--lr must be a positive number"),
        (0 <= o.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
        (math.isfinite(o.weight_decay) and o.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 < o.layer_lr_decay <= 1, "--layer-lr-decay must be in (0, 1]"),
        (o.dropout is None or o.dropout < 1, "--dropout must be below 1"),
        (0 <= o.token_dropout < 1, "--token-dropout must be in [0, 1)"),
        (o.patience >= 0, "--patience must be >= 0"),
        (math.isfinite(o.max_grad_norm) and o.max_grad_norm >= 0, "--max-grad-norm must be >= 0"),
        (o.max_length is None or o.max_length >= 3, "--max-length must be at least 3 ([CLS], a token, [SEP])"),
        (len(set(o.seeds)) == len(o.seeds), "--seeds must be distinct"),
        (all(0 <= s < 2**32 for s in o.seeds) and 0 <= o.split_seed < 2**32,
         "--seeds and --split-seed must be between 0 and 2**32 - 1"),
        (o.train_examples is None or o.train_examples >= 1, "--train-examples must be at least 1"),
        (not (o.resume and o.force), "--resume and --force contradict each other: choose one"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)
    if o.metric is not None and o.metric not in TASKS[o.task].metric_choices:
        raise InputError(f"--metric {o.metric} is not a score of --task {o.task}; choose "
                         f"{', '.join(TASKS[o.task].metric_choices)}")
    check_task_options(o)
    if o.strategy == "freeze-bottom-k" and o.freeze_layers is None:
        raise InputError("--strategy freeze-bottom-k needs --freeze-layers K (how many bottom blocks to freeze)")
    if o.strategy != "freeze-bottom-k" and o.freeze_layers is not None:
        raise InputError("--freeze-layers only applies to --strategy freeze-bottom-k")


# -- the pretrained model -----------------------------------------------------------------------------------


def latest_pretraining_run(runs_dir: Path) -> Path:
    """The newest `runs_dir/pretrain-*/` holding a model.safetensors (by name, which is a timestamp, then mtime)."""
    runs = [p for p in runs_dir.glob("pretrain-*") if (p / "model.safetensors").is_file()]
    if not runs:
        raise InputError(
            f"no pretraining run found (no {runs_dir}/pretrain-*/model.safetensors); run `python -m train.pretrain` "
            "first, or pass --init with a minibert run or a Hugging Face BERT directory"
        )
    return max(runs, key=lambda p: (p.name, p.stat().st_mtime))


@dataclass
class Pretrained:
    # weights to start from (also the architecture for --from-scratch): BERT's encoder, or the GPT-2 / T5 language
    # model whose body the classifier keeps (`train.families.copy_pretrained`)
    encoder: BertModel | GPT2LMHeadModel | T5ForConditionalGeneration
    tokenizer: object
    path: Path
    kind: str  # "minibert" or "huggingface"
    fresh: list[str]  # encoder weights the checkpoint did not have (e.g. the pooler of an MLM run)

    @property
    def family(self) -> str:
        """"bert", "gpt2" or "t5"."""
        return family(self.encoder.config)


def load_pretrained_encoder(path: Path, overrides: dict) -> Pretrained:
    """The encoder weights and tokenizer of a minibert run directory (BERT, GPT-2 or T5, by its config.json) or a
    local Hugging Face BERT directory. `overrides` are BERT config fields, given to GPT-2 and T5 as theirs
    (`train.families.config_overrides`)."""
    from minibert.checkpoint import load_pretrained, stored_model_type
    from minibert.hf import load_hf, load_hf_tokenizer
    from minibert.gpt_t5_checkpoint import load_pretrained as load_gpt_t5

    if not path.is_dir():
        raise InputError(f"{path}: no such directory (--init)")
    if (path / "tokenizer").is_dir() and (path / "model.safetensors").is_file():
        stored = stored_model_type(path / "config.json")
        if stored is None:
            encoder, report = load_pretrained(path, BertModel, **overrides)
            fresh = report.newly_initialised
        else:
            encoder, fresh = load_gpt_t5(path, **families.config_overrides(stored, overrides)), []
        tok, kind = load_tokenizer(path / "tokenizer"), "minibert"
    elif (path / "vocab.txt").is_file():
        encoder = load_hf(path, BertModel, **overrides)
        tok, kind = load_hf_tokenizer(path), "huggingface"
        fresh = [] if _hf_has_pooler(path) else ["pooler.dense.weight", "pooler.dense.bias"]
    else:
        raise InputError(
            f"{path}: neither a minibert run (config.json, model.safetensors, tokenizer/) nor a Hugging Face BERT "
            "directory (config.json, model.safetensors or pytorch_model.bin, vocab.txt)"
        )
    if tok.vocab_size > encoder.config.vocab_size:
        raise InputError(f"{path}: the tokenizer has {tok.vocab_size} tokens but the model only "
                         f"{encoder.config.vocab_size} embeddings")
    return Pretrained(encoder, tok, path, kind, fresh)


def _hf_has_pooler(path: Path) -> bool:
    from minibert.files import read_checkpoint_weights

    return any(k.endswith("pooler.dense.weight") for k in read_checkpoint_weights(path))


def build_classifier(pre: Pretrained, o: Options, label_names: list[str]) -> FineTuned:
    """A fresh classifier with K outputs (BertForSequenceClassification, or GPT-2's / T5's, `train.families`; for
    --task ner BertForTokenClassification), its body copied from `pre` (unless from scratch); weights the
    checkpoint lacked (the pooler of an MLM run), the classifier and the fusion weights start from the model's
    initialisation, drawn from the current torch seed."""
    model = families.classifier_model(pre.encoder.config, label_names, o.task)
    if not o.from_scratch:
        families.copy_pretrained(model, pre.encoder, pre.fresh)
    return TASKS[o.task].build(model, o)


def apply_strategy(classifier: FineTuned, strategy: str, freeze_layers: int | None = None) -> None:
    """Freeze what the strategy keeps fixed: requires_grad off, and the module runs in eval mode (no dropout)."""
    parts = families.parts(classifier.model)
    blocks = parts.blocks
    L = len(blocks)
    if strategy == "full":
        frozen = []
    elif strategy in ("linear-probe", "layer-fusion"):
        frozen = [*parts.embeddings, *blocks]
        if parts.final_norm is not None:
            frozen.append(parts.final_norm)
    elif strategy == "freeze-bottom-k":
        if not 0 <= freeze_layers <= L:
            raise InputError(f"--freeze-layers must be between 0 and {L} (the model has {L} blocks)")
        frozen = [*parts.embeddings, *blocks[:freeze_layers]]
    else:
        raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for module in frozen:
        module.requires_grad_(False)
    classifier.frozen = frozen


# -- optimiser ----------------------------------------------------------------------------------------------


def param_groups(classifier: FineTuned, lr: float, weight_decay: float, layer_lr_decay: float) -> list[dict]:
    """`train.optim.param_groups` with the classifier's depths: lr * decay^(L+1-depth), depth 0 for the
    embeddings, i+1 for block i, L for a final norm, L+1 for the head (pooler, classifier, mix)
    (`train.families.Parts`); the fusion weights count as the head's."""
    top = len(families.parts(classifier.model).blocks) + 1
    return optim.param_groups(classifier, weight_decay, layer_lr_decay, families.depths(classifier.model), top, lr)


# -- training -----------------------------------------------------------------------------------------------


def make_optimizer(classifier: FineTuned, o: Options, total_steps: int):
    """AdamW (BERT's betas and eps) over the trainable parameters, and the per-step warmup + linear decay."""
    groups = param_groups(classifier, o.lr, o.weight_decay, o.layer_lr_decay)
    optimizer = optim.make_adamw(classifier, o.lr, o.weight_decay, betas=(0.9, 0.999), eps=1e-8, groups=groups)
    schedule = optim.Schedule(optimizer, peak_lr=o.lr, warmup_steps=round(o.warmup_ratio * total_steps),
                              total_steps=total_steps)
    return optimizer, schedule


def train_epoch(classifier: FineTuned, data: EncodedSet, optimizer, schedule, o: Options,
                rng: random.Random, pad_id: int, special_ids=frozenset(), desc: str = "train",
                stop: StopSignals | None = None) -> float | None:
    """One pass over `data` in length-bucketed batches; returns the mean training loss, or None when `stop` got a
    signal: the pass then ends between two steps, before the epoch is over."""
    classifier.train()
    device = next(classifier.parameters()).device
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    total_loss, seen = 0.0, 0
    batches = length_bucketed_batches(data.lengths, o.batch_size, rng)
    # A progress bar with the running loss; disable=None turns it off when stderr is not a terminal (log files).
    bar = tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0, disable=None)
    for indices in bar:
        if stop is not None and stop.signum is not None:
            bar.close()
            return None
        batch = collate(data, indices, pad_id, o.token_dropout, special_ids, rng)  # (B, T) tensors, T = longest
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device):
            logits = classifier(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, K) or (B, T, K)
        loss = classifier.loss(logits.float(), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, o.max_grad_norm)
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(indices)
        seen += len(indices)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
    bar.close()
    return total_loss / seen


# -- one run ------------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    train: EncodedSet
    validation: EncodedSet
    test: EncodedSet


class Paused(Exception):
    """A signal stopped the run between two steps of `seed`'s epoch `epoch` (its earlier epochs are saved)."""

    def __init__(self, signum: int, seed: int, epoch: int):
        super().__init__(f"stopped during seed {seed}, epoch {epoch}")
        self.signum, self.seed, self.epoch = signum, seed, epoch


# What a seed's results.json holds besides the run's header (`run_header`).
SEED_RESULT_KEYS = ("seed", "parameters", "epochs", "best_epoch", "stopped_early", "validation", "test",
                    "train_seconds")


def train_one_seed(o: Options, seed: int, pre: Pretrained, task: TaskData, data: Encoded, out: Path,
                   stop: StopSignals | None = None) -> dict:
    """Fine-tune one seed into `out`, continuing from its saved state if it has one; returns its results. A signal
    (`stop`) raises Paused between two steps; every whole epoch is saved by then."""
    tok = pre.tokenizer
    pad_id, special = tok.pad_token_id, tok.special_ids
    kind, metric = TASKS[o.task], selection_metric(o)
    # 1. Seed everything that is random: head initialisation, dropout, batch order, token dropout.
    torch.manual_seed(seed)
    rng = random.Random(seed)
    # 2. The model: pretrained encoder (or random, for --from-scratch), fresh head, the strategy's frozen parts.
    classifier = build_classifier(pre, o, task.label_names)
    apply_strategy(classifier, o.strategy, o.freeze_layers)
    classifier.to(resolve_device(o.device))
    params = metrics.count_parameters(classifier)
    print(f"seed {seed}: {params['total']:,} parameters, {params['trainable']:,} trainable", flush=True)
    # 3. Optimiser and schedule: AdamW, linear warmup then linear decay, per step.
    steps_per_epoch = -(-len(data.train) // o.batch_size)
    optimizer, schedule = make_optimizer(classifier, o, total_steps=steps_per_epoch * o.epochs)
    # 4. A seed that was stopped continues after its last whole epoch (weights, optimiser, schedule, random states,
    #    best so far), exactly where an uninterrupted run would be.
    finetune_state.remove_unfinished_model(out)
    p = finetune_state.restore_state(out, classifier, optimizer, schedule, rng)  # the loop's record: epochs, best
    if p.epoch:
        print(f"seed {seed}: resuming after epoch {p.epoch}/{o.epochs} (saved in {out / finetune_state.CHECKPOINT})",
              flush=True)
    started = time.time() - p.train_seconds
    while p.epoch < o.epochs and not p.stopped_early:
        epoch = p.epoch + 1
        # 5. One epoch over length-bucketed batches; a signal ends it between two steps (it is done again on
        #    --resume, from the state saved after the previous epoch).
        epoch_start = time.time()
        if stop is not None and stop.signum is not None:  # it came during the previous epoch's validation or save
            raise Paused(stop.signum, seed, epoch)
        train_loss = train_epoch(classifier, data.train, optimizer, schedule, o, rng, pad_id, special,
                                 f"epoch {epoch}/{o.epochs}", stop)
        if train_loss is None:
            raise Paused(stop.signum, seed, epoch)
        # 6. Validation every epoch; keep the best state in memory.
        val = kind.evaluate(classifier, data.validation, o.eval_batch_size, pad_id, task.label_names)
        improved = p.best is None or val[metric] > p.best[metric]
        if improved:
            p.best, p.best_epoch, p.stale = val, epoch, 0
            p.best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
        else:
            p.stale += 1
        seconds = time.time() - epoch_start
        p.epoch = epoch
        p.history.append({"epoch": epoch, "train_loss": train_loss, "validation": kind.headline(val),
                          "seconds": round(seconds, 1)})
        # 7. Early stopping.
        p.stopped_early = bool(o.patience and p.stale >= o.patience)
        # 8. Save the epoch's end, then report it: a line printed is an epoch saved.
        p.train_seconds = time.time() - started
        finetune_state.save_state(out, classifier, optimizer, schedule, rng, p)
        print(f"epoch {epoch}/{o.epochs}  train loss {train_loss:.4f}  {kind.epoch_line(val)}  {seconds:.0f}s"
              f"{'  *best' if improved else ''}", flush=True)
        if p.stopped_early:
            print(f"early stop: no better validation {metric} for {p.stale} epoch(s)", flush=True)
    # 9. and 10. The best epoch's model, scored once on the test split, saved with its results.
    return finish_seed(o, seed, pre, task, data, out, classifier, params, p, time.time() - started)


def finish_seed(o: Options, seed: int, pre: Pretrained, task: TaskData, data: Encoded, out: Path, classifier,
                params: dict, p, train_seconds: float) -> dict:
    """Steps 9 and 10 of `train_one_seed`: the best epoch's weights (`p`, the loop's record), scored once on the
    test split; the model, its head, tokenizer and labels saved, then results.json (which marks the seed
    finished), then the saved state dropped. A save cut short leaves no model that looks finished."""
    tok = pre.tokenizer
    classifier.load_state_dict(p.best_state)
    test = TASKS[o.task].evaluate(classifier, data.test, o.eval_batch_size, tok.pad_token_id, task.label_names)
    meta = {"strategy": o.strategy, "freeze_layers": o.freeze_layers, "max_length": data_max_length(o, pre),
            "text_pair": getattr(task, "has_pairs", False), "joiner": getattr(task, "joiner", None),
            "init": str(pre.path), "from_scratch": o.from_scratch, "seed": seed}
    result = {
        "seed": seed,
        "parameters": params,
        "epochs": p.history,
        "best_epoch": p.best_epoch,
        "stopped_early": p.stopped_early,
        "validation": p.best,
        "test": test,
        "train_seconds": round(train_seconds, 1),
    }
    try:
        save_classifier(classifier, out, tok, meta)
        write_json(out / finetune_state.RESULTS_NAME, {**run_header(o, pre, task, data), **result})
    except BaseException:
        finetune_state.remove_unfinished_model(out)
        raise
    finetune_state.remove_state(out)
    return result


def finished_seed(out: Path) -> dict:
    """The results of a seed that finished in an earlier attempt, from its results.json."""
    saved = json.loads((out / finetune_state.RESULTS_NAME).read_text(encoding="utf-8"))
    return {k: saved[k] for k in SEED_RESULT_KEYS}


def selection_metric(o: Options) -> str:
    """The validation score that picks the best epoch: --metric, or the task's own (macro F1, entity F1)."""
    return o.metric or TASKS[o.task].metric_choices[0]


def data_max_length(o: Options, pre: Pretrained) -> int:
    """--max-length, capped at the positions the model has; by default all of them (UNBOUNDED_MAX_LENGTH for T5's
    relative positions, which have no limit)."""
    limit = families.max_positions(pre.encoder.config)
    wanted = o.max_length or limit or UNBOUNDED_MAX_LENGTH
    return wanted if limit is None else min(wanted, limit)


def run_header(o: Options, pre: Pretrained, task: TaskData, data: Encoded) -> dict:
    return {
        "init": str(pre.path),
        "init_kind": pre.kind,
        "model_type": pre.family,
        "from_scratch": o.from_scratch,
        "task": task.source,
        "label_names": task.label_names,
        # examples (texts, or sentences for ner); a tagger's model inputs are windows, counted beside them
        "sizes": {split: len(getattr(task, split)) for split in ("train", "validation", "test")},
        **({"windows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)}}
           if o.task == "ner" else {}),
        "label_counts": TASKS[o.task].counts(task),
        "data_notes": task.notes,
        "options": dataclasses.asdict(o),
    }


# -- the command --------------------------------------------------------------------------------------------


FINETUNE_RUN = RunKind("finetune", "fine-tuning run")
ARGS_NAME = "args.json"  # the options the run was started with, for --resume
# Options that --resume takes anew: how the figures are computed, not what they are. Any other given again must
# match the run's (`train.resume`).
MAY_CHANGE_ON_RESUME = ("device", "eval_batch_size")
THIS_COMMAND_ONLY = ("out", "resume", "force", "runs_dir")


def seed_dir(out: Path, o: Options, seed: int) -> Path:
    """Where a seed's run goes: --out itself for a single seed, OUT/seed-S with several."""
    return out if len(o.seeds) == 1 else out / f"seed-{seed}"


def run_entries(o: Options) -> list[str]:
    """The top-level names this run writes into --out, recorded in its marker before they are written (so --force
    removes these and nothing else)."""
    if len(o.seeds) == 1:
        return [ARGS_NAME, finetune_state.RESULTS_NAME, finetune_state.CHECKPOINT, *MODEL_ENTRIES]
    return [ARGS_NAME, finetune_state.RESULTS_NAME, *(f"seed-{s}" for s in o.seeds)]


def saved_anything(path: Path) -> bool:
    """Whether the run in `path` holds work worth keeping: a finished seed or a saved epoch, in --out itself or in
    one of the seed directories it recorded."""
    places = [path, *(path / name for name in recorded_entries(path) if name.startswith("seed-"))]
    return any(finetune_state.is_finished(d) or finetune_state.has_state(d) for d in places)


def plan_out(o: Options) -> OutDir:
    """Whether --out may be used, decided without writing anything (`minibert.rundir` describes a run directory).
    A run there needs --resume (it continues) or --force (it starts over), unless it saved nothing: then it starts
    over as it is."""
    if o.resume and not o.out:
        raise InputError("--resume needs --out DIR: the fine-tuning run to continue")
    out = inspect_out(Path(o.out) if o.out else Path(o.runs_dir) / f"finetune-{datetime.now():%Y%m%d-%H%M%S}",
                      FINETUNE_RUN)
    check_usable(out)
    if o.resume and out.state is not OutState.RUN:
        raise InputError(f"--resume: --out {out.path} {out.state.value}; there is no fine-tuning run to continue")
    if out.state is OutState.RUN and not (o.resume or o.force):
        if saved_anything(out.path):
            raise InputError(f"--out {out.path} already holds a fine-tuning run; pass --resume to continue it, "
                             "--force to replace it, or choose another --out")
        print(f"note: {out.path} holds a fine-tuning run that stopped before saving anything; starting it over",
              flush=True)
    return out


def resumed_options(o: Options, out: Path, given: set[str]) -> Options:
    """--resume: the run's own options (its args.json), with those given again that may change (`train.resume`)."""
    path = out / ARGS_NAME
    if not path.is_file():  # stopped before it wrote them, so before any epoch: the options given start it
        return o
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot be read ({e}); start the run over with --force") from None
    resumed, _ = options_on_resume(stored, o, given, MAY_CHANGE_ON_RESUME, THIS_COMMAND_ONLY)
    check_options(resumed)
    return resumed


def train_seeds(o: Options, pre: Pretrained, task: TaskData, data: Encoded, out: Path, stop: StopSignals) -> dict:
    """Every seed's results, by seed: those finished in an earlier attempt read back, the others trained."""
    runs = {}
    for seed in o.seeds:
        where = seed_dir(out, o, seed)
        if finetune_state.is_finished(where):
            finetune_state.remove_state(where)  # if a kill came between its results.json and this
            runs[seed] = finished_seed(where)
            print(f"seed {seed}: finished before (test accuracy {runs[seed]['test']['accuracy']:.4f}), kept",
                  flush=True)
            continue
        runs[seed] = train_one_seed(o, seed, pre, task, data, where, stop)
    return runs


def stopped_line(stop: Paused, out: Path, kept: bool) -> str:
    """The one line a signal ends the run with."""
    where = f"{signal.Signals(stop.signum).name} received: stopped during epoch {stop.epoch} of seed {stop.seed}"
    if not kept:
        return f"{where}; nothing was saved yet, so nothing is left in {out}"
    return (f"{where}; the seeds finished and the epochs done are saved; continue with: python -m train.finetune "
            f"--out {out} --resume")


def run(o: Options, given: set[str] | None = None) -> dict:
    """Everything `main` does, returning what it writes to results.json. `given`: the options set on the command
    line (what --resume takes anew); without it, those that differ from their defaults. Raises Paused when a
    signal stopped it."""
    given = given_by_value(o) if given is None else set(given)
    check_options(o)
    resolve_device(o.device)
    plan = plan_out(o)
    if o.resume:
        o = resumed_options(o, plan.path, given)
    o = dataclasses.replace(o, metric=selection_metric(o))  # recorded in args.json as the score it is
    # 1. The pretrained model and its tokenizer.
    path = Path(o.init) if o.init else latest_pretraining_run(Path(o.runs_dir))
    overrides: dict = {"unpad": o.unpad, "unpad_attention": o.unpad_attention}
    if o.dropout is not None and o.dropout >= 0:
        overrides.update(hidden_dropout_prob=o.dropout, attention_probs_dropout_prob=o.dropout,
                         classifier_dropout=o.dropout)
    pre = load_pretrained_encoder(path, overrides)
    families.check_choices(pre.family, o.pooling, o.strategy)
    L = families.num_layers(pre.encoder.config)
    if o.freeze_layers is not None and not 0 <= o.freeze_layers <= L:
        raise InputError(f"--freeze-layers must be between 0 and {L} (the model has {L} blocks)")
    # 2. The data: built-in or the user's files, split, labels mapped to ids.
    kind = TASKS[o.task]
    task = kind.load(o)
    for note in task.notes:
        warn(note)
    if pre.fresh and not o.from_scratch:
        warn(f"{path}: no weights for {', '.join(pre.fresh)}; they start fresh")
    # 3. Tokenise every split once.
    max_length = data_max_length(o, pre)
    if o.max_length is not None and max_length < o.max_length:
        warn(f"--max-length {o.max_length} capped at the model's max_position_embeddings, {max_length}")
    data = Encoded(*(kind.encode(pre.tokenizer, task, split, max_length)
                     for split in (task.train, task.validation, task.test)))
    print(f"{'from scratch, architecture of' if o.from_scratch else 'init'} {path} ({pre.kind} "
          f"{families.NAMES[pre.family]}); task: {task.source}; "
          f"train {len(data.train)}, validation {len(data.validation)}, test {len(data.test)}; "
          f"labels {', '.join(task.label_names)}; strategy {o.strategy}"
          f"{f', pooling {o.pooling}' if o.task == 'classification' else ''}", flush=True)
    # 4. The directory is this run's from here to the end (its lock); its marker lists what the run writes. A new
    #    run records its options (--init resolved) for --resume.
    owned = claim(plan, FINETUNE_RUN, run_entries(o), clear=not o.resume)
    out = owned.path
    try:
        if not (out / ARGS_NAME).is_file():
            write_json(out / ARGS_NAME, dataclasses.asdict(dataclasses.replace(o, init=str(path), resume=False,
                                                                               force=False)))
        # 5. One fine-tuning run per seed; SIGINT and SIGTERM stop it between two steps.
        with StopSignals() as stop:
            runs = train_seeds(o, pre, task, data, out, stop)
        # 6. Report: results.json and tables.
        return report(o, pre, task, data, runs, out)
    except BaseException as e:
        kept = saved_anything(out)
        if not kept:  # stopped or failed before any epoch was saved: leave nothing behind
            owned.release()
        if isinstance(e, Paused):
            e.args = (stopped_line(e, out, kept),)
        raise
    finally:
        owned.close()


def report(o: Options, pre: Pretrained, task: TaskData, data: Encoded, runs: dict, out: Path) -> dict:
    """results.json with every seed's reports (and their mean ± std with several), and the tables on stdout."""
    results = run_header(o, pre, task, data)
    one = next(iter(runs.values()))  # the titles of a single seed's tables
    kind = TASKS[o.task]
    metrics.report_seeds(results, runs, f"validation (best epoch {one['best_epoch']})",
                         "test (scored once, best validation epoch)", kind.format_report, kind.summarize)
    params = one["parameters"]
    print(f"parameters: {params['total']:,} total, {params['trainable']:,} trainable")
    write_json(out / finetune_state.RESULTS_NAME, results)
    print(f"wrote {out}")
    return results


@command_main
def main(argv: list[str] | None = None) -> int:
    options, given = parse_options(Options, argv, DESCRIPTION, "python -m train.finetune")
    try:
        run(options, given)
    except Paused as stop:
        print(stop, file=sys.stderr, flush=True)
        return 128 + stop.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
