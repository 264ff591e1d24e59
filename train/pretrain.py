"""`python -m train.pretrain`: pretraining (BERT's masked words, ELECTRA, GPT's next token or T5's span corruption),
on one CPU or many GPUs, resumable exactly.

With no arguments it trains a SentencePiece tokenizer on the built-in Chinese text (People's Daily, January 1998,
plus the training split of the product reviews) and a small BERT by masked-language modelling on the reviews, 30%
of the tokens masked, for about twenty minutes on one CPU core, and leaves a run directory that
`python -m train.finetune` picks up. (In-domain text and MosaicBERT's masking rate are what measured best for the
built-in task, docs/RESULTS.md; `--builtin-corpus all --mlm-probability 0.15` is BERT's recipe on all of it.) `--objective causal` trains a GPT-2 and `--objective span` a
T5 instead, of the preset's size, on the same corpus and tokenizer in the same loop (`train/objectives.py`); their
run directories also feed `python -m train.generate`:

    runs/pretrain-YYYYmmdd-HHMMSS/
        config.json, model.safetensors   the latest weights (Hugging Face key names)
        tokenizer/                        the tokenizer the ids came from
        checkpoints/step_NNNNNN/          the last K full checkpoints (weights + optimiser, RNG and data state)
        data/                             the tokenized corpus, cached so a restart does not re-tokenize
        metrics.jsonl, loss.png, args.json
        .minibert-run                     the marker that makes the directory a run (train.cli)

Resume, force, faults: `--resume` continues the run with its own options (those given again may only be the
budget and bookkeeping ones, `MAY_CHANGE_ON_RESUME`) from its latest readable checkpoint, and repairs a top-level
copy of the weights that a kill left older than that checkpoint. `--force` removes only what a run writes, and only
from a run directory. Ctrl-C (SIGINT) and SIGTERM stop the loop between two steps and save that step's checkpoint,
so `--resume` gives the same losses as a run that was never stopped; exit status 130 and 143.

Distributed: `torchrun --nproc_per_node N -m train.pretrain ...` (NCCL on GPUs, gloo on CPUs). `--batch-size` is
the global batch: every rank masks the same global batch with the same generator and takes its own slice, so
the results do not depend on how the batch is split over ranks and micro-batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from minibert import BertConfig, InputError
from minibert.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, atomic_write, family, load_checked, read_config,
                                 read_weights, unwrap)
from minibert.compiled import compile_model
from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE
from minibert.config import PRESETS, TYPE_NAMES, field_types, read_fields
from train.builtin_data import BUILTIN_PARTS, builtin_pretraining_texts
from train.device import Dist, autocast, setup_distributed
from minibert.rundir import OutDir, OutState, check_usable, claim, inspect_out
from tokenizer.errors import Stopped
from train.cli import RUNS_DIR, opt, parse_given
from train.resume import given_by_value, options_on_resume
from train.families import NAMES as FAMILY_NAMES
from train.families import POSITIONS_FIELD, max_positions
from tokenizer.config import VOCAB_SIZE
from train.masking import MLM_PROBABILITY
from train.objectives import FAMILY, OBJECTIVES, Objective, make_objective
from train.optim import lr_at, make_adamw, set_lr
from train.checkpoints import (PRETRAIN_ENTRIES, PRETRAIN_RUN, Resumed, append_metrics, checkpoint_dirs, latest_checkpoint,  # noqa: F401
                               load_checkpoint, plot_losses, remove_save_leftovers, repair_top_level, save_checkpoint,
                               set_aside_unreadable, truncate_metrics)
from train.packing import BlockStream, block_batch, pack_blocks, split_blocks, tokenize_to_cache
from train.signals import StopSignals
from tokenizer.errors import command_main

# What the built-in corpus defaults to: pretraining on the in-domain reviews (measured best, docs/RESULTS.md), with
# a tokenizer that learns its pieces from all the built-in text.
DEFAULT_BUILTIN_CORPUS, DEFAULT_TOKENIZER_CORPUS = "reviews", "all"


@dataclass
class PretrainArgs:
    # data
    corpus: list[str] | None = opt(None, "text files, directories of them, or JSONL files with a 'text' field; "
                                         "default: the built-in Chinese corpus (People's Daily 1998 + training-split reviews)",
                                   metavar="PATH")
    builtin_corpus: str | None = opt(None, "without --corpus, which built-in text to pretrain on: reviews (the "
                                           "training-split reviews: in-domain text for the built-in sentiment task), "
                                           "news (People's Daily 1998) or all (both); default: reviews",
                                     choices=BUILTIN_PARTS)
    tokenizer_corpus: str | None = opt(None, "without --corpus, the built-in text a newly trained tokenizer learns "
                                             "its pieces from: all, news or reviews; default: all, whichever part is "
                                             "pretrained on, so that every built-in run has the same vocabulary",
                                       choices=BUILTIN_PARTS)
    out: str | None = opt(None, "run directory; default runs/pretrain-<date>-<time>")
    resume: bool = opt(False, "continue the run in --out exactly, from its latest checkpoint, with its own options; "
                              "only --max-steps, --max-time, --stop-at-step, the eval/log/save cadence, --keep-last, "
                              "--device, --micro-batch-size, --compile and --progress may be given anew (a new "
                              "--max-steps: the learning-rate schedule becomes that of a run of the new length)")
    force: bool = opt(False, "start over: remove the run in --out (only the files a run writes) first")
    tokenizer: str | None = opt(None, "an existing tokenizer directory; default: train one on the corpus")
    init: str | None = opt(None, "continue pretraining from the weights of this pretraining run (task-adaptive "
                                 "pretraining: a run on the general corpus, then --builtin-corpus reviews or your "
                                 "in-domain --corpus); the run's tokenizer and model config are used, the optimiser, "
                                 "schedule and data order start fresh. The run's model must be the one --objective "
                                 "trains (BERT for mlm and electra, GPT-2 for causal, T5 for span)", metavar="RUN")
    vocab_size: int = opt(VOCAB_SIZE, "vocabulary size of a newly trained tokenizer")
    tokenizer_model: str = opt("unigram", "SentencePiece model type of a newly trained tokenizer. unigram learns "
                                          "word-like pieces (about 1.4 Chinese characters each on the built-in corpus), "
                                          "which fine-tune better than single characters at this scale; auto: char for "
                                          "a mostly Chinese/Japanese corpus (as Chinese BERT), else unigram",
                               choices=["auto", "unigram", "bpe", "char"])
    max_seq_length: int = opt(128, "tokens per packed block, [CLS] and [SEP]s included (8 to 8192)")
    eval_fraction: float = opt(0.01, "fraction of the blocks held out for evaluation")
    # model
    preset: str = opt("tiny", "model size: tiny 2x128, small 4x256, base (BERT-base) 12x768; docs/RESULTS.md has "
                      "what each costs on a CPU", choices=["tiny", "small", "base"])
    config: str | None = opt(None, "JSON file of BertConfig fields, applied over the preset")
    set: list[str] = opt([], "config overrides, e.g. --set num_hidden_layers=6 norm_first=true", metavar="KEY=VALUE")
    # optimisation
    batch_size: int = opt(32, "global batch: sequences per optimiser step, over all ranks and micro-batches")
    micro_batch_size: int | None = opt(None, "sequences per forward pass and rank; default: the whole share")
    lr: float = opt(2e-3, "peak learning rate")
    warmup_steps: int = opt(50, "linear warmup steps")
    schedule: str = opt("linear", "decay after warmup", choices=["linear", "cosine", "constant"])
    weight_decay: float = opt(0.01, "AdamW weight decay on tensors of rank >= 2")
    adam_beta1: float = opt(0.9, "AdamW's beta1, the decay of the mean of the gradients")
    adam_beta2: float = opt(0.98, "AdamW's beta2, the decay of the mean of their squares (RoBERTa's 0.98; BERT's "
                                  "0.999, which fine-tuning keeps)")
    adam_epsilon: float = opt(1e-6, "AdamW's epsilon (RoBERTa's 1e-6)")
    max_grad_norm: float = opt(1.0, "clip the global gradient norm to this (0 = off); --grad-clip is its older "
                               "name", aliases=("--grad-clip",))
    objective: str = opt("mlm", "what is learned, and so which model: mlm (BERT's masked-language modelling), "
                                "electra (replaced-token detection: a small generator fills the masks, the BERT "
                                "encoder tells replaced tokens from originals at every position; docs/MATH.md), "
                                "causal (a GPT-2 predicts every next token) or span (a T5 writes back the spans, "
                                "15%% of the tokens, that its input has each replaced by a sentinel). --preset, "
                                "--config and --set size every model in BERT's field names (hidden_size, "
                                "num_hidden_layers, ...), mapped onto GPT-2's and T5's", choices=OBJECTIVES)
    generator_size: float = opt(GENERATOR_SIZE, "electra: the generator's width, heads and feed-forward as a fraction "
                                "of the encoder's (the paper found 1/4 to 1/2 best)")
    discriminator_weight: float = opt(DISCRIMINATOR_WEIGHT, "electra: lambda in L = L_generator + lambda * L_discriminator")
    share_embeddings: bool = opt(False, "electra: the generator shares the encoder's embedding tables (the paper's "
                                        "choice; it stalled both models at this project's CPU budget, docs/MATH.md)")
    mlm_probability: float = opt(MLM_PROBABILITY, "mlm, electra: fraction of tokens to predict (MosaicBERT's 0.3; BERT's 0.15; "
                                      "docs/RESULTS.md compares them)")
    whole_word_mask: bool = opt(False, "mlm, electra: mask whole words (using the tokenizer's word starts)")
    sparse_prediction: bool = opt(True, "mlm, electra: project to the vocabulary only at masked positions")
    # budget and bookkeeping
    max_steps: int | None = opt(3000, "optimiser steps; 0: as many as --max-time allows, measured after a few "
                                      "steps")
    max_time: float | None = opt(40.0, "training time limit in minutes, whichever of this and --max-steps comes first")
    stop_at_step: int | None = opt(None, "end the run after this step with a checkpoint, as if interrupted (--resume continues)")
    eval_every: int = opt(500, "evaluate every N steps")
    eval_batches: int = opt(20, "at most this many batches of held-out blocks per evaluation")
    log_every: int = opt(10, "append the training loss to metrics.jsonl every N steps")
    save_every: int = opt(1000, "checkpoint every N steps (and at the end)")
    keep_last: int = opt(2, "full checkpoints to keep")
    seed: int = opt(0, "seed of the initialisation, data order and masking")
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto")
    compile: bool = opt(False, "torch.compile the model")
    progress: bool = opt(True, "show a progress bar")


# ----------------------------------------------------------------------------------------------------------------
# set-up helpers


MAX_SEQ_LENGTH = 8192  # attention memory grows as T²; BERT itself stops at 512
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_args(args: PretrainArgs) -> None:
    """Every option's range, before any work is done; InputError names the option."""
    finite = math.isfinite
    checks = [
        (args.batch_size >= 1, "--batch-size must be at least 1"),
        (args.micro_batch_size is None or args.micro_batch_size >= 1, "--micro-batch-size must be at least 1"),
        (8 <= args.max_seq_length <= MAX_SEQ_LENGTH,
         f"--max-seq-length must be between 8 and {MAX_SEQ_LENGTH} (attention memory grows with its square)"),
        (0 < args.eval_fraction < 1, "--eval-fraction must be above 0 and below 1 (the share of blocks held out)"),
        (args.vocab_size > 5, "--vocab-size must exceed the 5 special tokens"),
        (finite(args.lr) and args.lr > 0, "--lr must be a positive number"),
        (args.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (finite(args.weight_decay), "--weight-decay must be a finite number"),
        (args.weight_decay >= 0, "--weight-decay must be >= 0"),
        (finite(args.max_grad_norm), "--max-grad-norm must be a finite number (0 = off)"),
        (args.max_grad_norm >= 0, "--max-grad-norm must be >= 0 (0 = off)"),
        (0 <= args.adam_beta1 < 1, "--adam-beta1 must be at least 0 and below 1"),
        (0 <= args.adam_beta2 < 1, "--adam-beta2 must be at least 0 and below 1"),
        (finite(args.adam_epsilon) and args.adam_epsilon > 0, "--adam-epsilon must be a positive number"),
        (0 < args.mlm_probability < 1, "--mlm-probability must be above 0 and below 1 (0.15 in BERT)"),
        (0 < args.generator_size <= 1, "--generator-size must be above 0 and at most 1 (a fraction of the encoder)"),
        (finite(args.discriminator_weight) and args.discriminator_weight > 0, "--discriminator-weight must be > 0"),
        (args.max_steps is None or args.max_steps >= 0, "--max-steps must be >= 0 (0: as many as --max-time allows)"),
        (args.max_time is None or (finite(args.max_time) and args.max_time > 0),
         "--max-time must be a positive number of minutes"),
        (args.max_steps or args.max_time is not None, "give a budget: --max-steps, --max-time, or both"),
        (args.stop_at_step is None or args.stop_at_step >= 1, "--stop-at-step must be at least 1"),
        (args.eval_every >= 1, "--eval-every must be at least 1"),
        (args.eval_batches >= 1, "--eval-batches must be at least 1"),
        (args.log_every >= 1, "--log-every must be at least 1"),
        (args.save_every >= 1, "--save-every must be at least 1"),
        (args.keep_last >= 1, "--keep-last must be at least 1 (the checkpoint that --resume reads)"),
        (0 <= args.seed < 2**32, "--seed must be between 0 and 2**32 - 1"),
        (DEVICE_NAME.fullmatch(args.device) is not None,
         f"--device {args.device!r}: expected cpu, cuda, cuda:N or auto"),
        (not (args.corpus and args.builtin_corpus),
         "--builtin-corpus picks part of the built-in corpus; it cannot be combined with --corpus"),
        (not (args.corpus and args.tokenizer_corpus),
         "--tokenizer-corpus picks the built-in text a new tokenizer learns from; with --corpus the tokenizer "
         "learns from that corpus"),
        (not (args.tokenizer and args.tokenizer_corpus),
         "--tokenizer-corpus picks the text a new tokenizer learns from; --tokenizer gives an existing one: "
         "choose one"),
        (not (args.resume and args.force), "--resume and --force contradict each other: choose one"),
        (not (args.whole_word_mask and FAMILY[args.objective] != "bert"),
         f"--whole-word-mask chooses the words MLM and ELECTRA mask; --objective {args.objective} masks none"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> BertConfig fields of the field's type (true/false, an integer, a number, a string;
    none for an optional field)."""
    types = field_types()
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in types:
            raise InputError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        base, optional = types[key]
        if optional and value.lower() in ("none", "null"):
            out[key] = None
            continue
        try:
            if base is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            elif base is int:
                out[key] = int(value)
            elif base is float:
                out[key] = float(value)
                if not math.isfinite(out[key]):
                    raise ValueError(value)
            elif base is str:
                out[key] = value
            else:
                raise InputError(f"--set {pair!r}: {key} cannot be given as KEY=VALUE; put it in a --config file")
        except ValueError:
            raise InputError(f"--set {pair!r}: {key} takes {TYPE_NAMES[base]}"
                             f"{' or none' if optional else ''}") from None
    return out


# Pretraining's own defaults over the preset: no dropout (a short run on plenty of data under-fits, so dropout only
# slows learning), rotary positions (a learned table is not learned at this budget: see docs/MATH.md).
PRETRAINING_FIELDS = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, position_embedding_type="rotary")


def model_config(args: PretrainArgs, vocab_size: int, objective: Objective | None = None):
    """The preset, pretraining's defaults, then the fields --config sets (and only those), then --set; the
    vocabulary is the tokenizer's, sparse prediction as --sparse-prediction says. These are BERT's fields, checked
    as a BertConfig whatever the objective; the objective's `config_from` maps them onto the model it trains (a
    GPT2Config or a T5Config of the same size), and without an objective the BertConfig is returned."""
    fields = {**PRESETS[args.preset], **PRETRAINING_FIELDS}
    if args.config:
        fields.update(read_fields(args.config))
    fields.update(parse_overrides(args.set))
    fields.update(vocab_size=vocab_size, sparse_prediction=args.sparse_prediction)
    # Positions beyond the block length would never be trained; fine-tuning caps its --max-length at this.
    fields.setdefault("max_position_embeddings", args.max_seq_length)
    if fields["max_position_embeddings"] < args.max_seq_length:
        raise InputError(f"--max-seq-length {args.max_seq_length} exceeds max_position_embeddings "
                         f"{fields['max_position_embeddings']}")
    # Every field checked as BERT's, whatever the model; but rotary positions (and their even head size) are BERT's
    # alone: GPT-2 and T5 keep their own positions.
    own_positions = {} if FAMILY[args.objective] == "bert" else {"position_embedding_type": "absolute"}
    config = BertConfig(**{**fields, **own_positions})
    return config if objective is None else objective.config_from(fields, vocab_size, args.max_seq_length)


def load_corpus(args: PretrainArgs) -> list[str]:
    if args.corpus:
        from train.corpus import read_texts

        return read_texts(args.corpus)
    return builtin_pretraining_texts(part=args.builtin_corpus or DEFAULT_BUILTIN_CORPUS)


def auto_model_type(texts: list[str], sample: int = 2000) -> str:
    """"char" when most letters of a sample are CJK (Chinese BERT tokenizes those one character each), else "unigram"."""
    from tokenizer.chars import is_cjk

    step = max(1, len(texts) // sample)
    letters = [c for t in texts[::step] for c in t if c.isalpha()]
    cjk = sum(map(is_cjk, letters))
    return "char" if letters and cjk > 0.5 * len(letters) else "unigram"


def get_tokenizer(args: PretrainArgs, out: Path, texts: list[str], d: Dist, resumed: bool):
    """A resumed run's own tokenizer (out/tokenizer); for a new run the one --tokenizer names, or one trained on
    the corpus, saved to out/tokenizer. A new run's directory holds no tokenizer (`claim` cleared it), so a
    leftover of an earlier attempt is never taken for the one this run asked for."""
    import tokenizer as tok_pkg

    tok_dir = out / "tokenizer"
    if resumed:
        return tok_pkg.load(tok_dir)
    if args.tokenizer or args.init:
        tok = tok_pkg.load(args.tokenizer or Path(args.init) / "tokenizer")
        if d.main:
            tok.save(tok_dir)
        return tok
    if not args.corpus:  # the built-in corpus: the tokenizer learns from --tokenizer-corpus (all of it by default)
        texts = builtin_pretraining_texts(part=args.tokenizer_corpus or DEFAULT_TOKENIZER_CORPUS)
    model_type = args.tokenizer_model if args.tokenizer_model != "auto" else auto_model_type(texts)
    if d.main:
        print(f"training a {model_type} SentencePiece tokenizer (at most {args.vocab_size} pieces) ...", flush=True)
        tok_pkg.SentencePieceTokenizer.train(texts, args.vocab_size, tok_dir, model_type=model_type)
    if d.world > 1:
        dist.barrier()
    return tok_pkg.load(tok_dir)


# ----------------------------------------------------------------------------------------------------------------
# the run directory and its checkpoints


def plan_out_dir(args: PretrainArgs, main: bool = True) -> OutDir:
    """What --out is and whether this command may use it, deciding without writing anything (`main`: the process
    that will hold the directory's lock; the other ranks of a multi-process run do not look at the lock).

    A new or empty directory starts a run. A run directory needs --resume (it continues) or --force (it starts
    over); one that never saved a checkpoint holds nothing worth keeping and starts over as it is. Anything else
    is refused."""
    out = inspect_out(Path(args.out or f"{RUNS_DIR}/pretrain-{datetime.now():%Y%m%d-%H%M%S}"), PRETRAIN_RUN,
                      check_lock=main)
    check_usable(out)
    is_run = out.state is OutState.RUN
    worth_keeping = is_run and (latest_checkpoint(out.path) is not None or (out.path / WEIGHTS_NAME).is_file())
    if args.resume:
        if not is_run:
            raise InputError(f"--resume: {out.path} {out.state.value}; there is no run to continue")
        if latest_checkpoint(out.path) is None:
            raise InputError(f"--resume: {out.path} holds no checkpoint: the run stopped before its first save "
                             "completed. Run the same command without --resume to start it over")
    elif worth_keeping and not args.force:
        raise InputError(f"{out.path} already holds a run; pass --resume to continue it or --force to start over")
    elif is_run and not args.force:
        print(f"note: {out.path} holds a run that stopped before its first checkpoint; starting it over", flush=True)
    return out


# Options that may be given anew on --resume: the budget and the bookkeeping, which do not change what a step
# computes. Every other option would make the run no longer the one it was, so a change to it is refused.
MAY_CHANGE_ON_RESUME = ("max_steps", "max_time", "eval_every", "log_every", "save_every", "keep_last", "device",
                        "progress", "compile", "micro_batch_size")
# Options that are about this command, not the run: never taken from the checkpoint.
THIS_COMMAND_ONLY = ("out", "resume", "force", "stop_at_step")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Options saved under an older name by earlier runs: old name -> the name now (Hugging Face's, where it has one).
RENAMED = {"grad_clip": "max_grad_norm"}


def resume_args(stored: dict, args: PretrainArgs, given: set[str]) -> tuple[PretrainArgs, list[str]]:
    """The run's own options, with those given on this command line that may change; returns them and the names
    of the options that changed. A given option that may not change, and differs, is an InputError naming it
    (`train.resume`, shared with train.finetune)."""
    def same(name, a, b):  # --max-steps 0 and none both mean no step limit
        return (None if name == "max_steps" and a == 0 else a) == (None if name == "max_steps" and b == 0 else b)

    stored = {RENAMED.get(k, k): v for k, v in stored.items()}  # a run saved before an option was renamed
    return options_on_resume(stored, args, given, MAY_CHANGE_ON_RESUME, THIS_COMMAND_ONLY, same)


# ----------------------------------------------------------------------------------------------------------------
# the data stream


# ----------------------------------------------------------------------------------------------------------------
# evaluation, checkpoints, plots


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


# ----------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class Outcome:
    """How the loop ended: the line printed, and the exit status (0: done or paused, 1: the loss stopped being
    finite, 128 + N: signal N, as a shell reports a process it ended)."""

    message: str
    exit_code: int = 0


@command_main
def main(argv: list[str] | None = None) -> int:
    args, given = parse_given(PretrainArgs, argv, __doc__.split("\n\n")[0], "python -m train.pretrain")
    return run(args, given)


def run(args: PretrainArgs, given: set[str] | None = None) -> int:
    """Check every option and the run directory without writing anything, then train. `given`: the options set on
    the command line (what --resume takes anew); without it, those that differ from their defaults.

    A new run that fails before its first checkpoint removes what it wrote (and its directory, if it made it)."""
    given = given_by_value(args) if given is None else set(given)
    check_args(args)
    d, device = setup_distributed(args.device)
    check_batch_split(args, d)
    out = plan_out_dir(args, d.main)
    resumed, changed = None, []
    if args.resume:
        resumed = load_checkpoint(out.path)
        args, changed = resume_args(resumed.state["args"], args, given)
        check_args(args)
        check_batch_split(args, d)
        step = resumed.state["step"]
        if "max_steps" in changed and args.max_steps and args.max_steps < step:
            raise InputError(f"--max-steps {args.max_steps}: the run is already at step {step}; give at least {step}")
    elif args.init:
        check_init(args, given)
    else:
        model_config(args, args.vocab_size)  # --preset, --config and --set, checked before any work
    if args.max_steps == 0:
        args.max_steps = None
    texts = load_corpus(args)
    # The directory is this process's from here to the end (its lock), and lists what the run writes (its marker).
    owned = claim(out, PRETRAIN_RUN, PRETRAIN_ENTRIES, clear=resumed is None) if d.main else None
    if d.world > 1:
        dist.barrier()
    try:
        with out_of_memory_hint(args, d):
            code = train(args, d, device, out.path, texts, resumed, changed)
    except BaseException:
        if owned is not None and resumed is None and latest_checkpoint(out.path) is None:
            owned.release()  # nothing worth keeping: leave the directory as it was
        raise
    finally:
        if owned is not None:
            owned.close()
    if d.world > 1:
        dist.destroy_process_group()
    return code


# Options that say what the model and its tokenizer are: an --init run says that instead.
DEFINED_BY_INIT = ("tokenizer", "tokenizer_corpus", "vocab_size", "tokenizer_model", "preset", "config", "set")


# How a run of each model family was pretrained, for the message that refuses the wrong one.
TRAINED_BY = {"bert": "--objective mlm or electra", "gpt2": "--objective causal", "t5": "--objective span"}


def check_init(args: PretrainArgs, given: set[str]) -> None:
    """--init RUN: a pretraining run with its weights, config and tokenizer, of the model family that --objective
    trains, and no option that would redefine them."""
    run_dir = Path(args.init)
    for name in (CONFIG_NAME, WEIGHTS_NAME, "tokenizer"):
        if not (run_dir / name).exists():
            raise InputError(f"--init {run_dir}: no {name}; point it at a pretraining run directory")
    clash = [k for k in DEFINED_BY_INIT if k in given]
    if clash:
        raise InputError(f"--init takes the model and tokenizer of {run_dir}; leave out "
                         f"{', '.join(_flag(k) for k in clash)}")
    config = read_config(run_dir / CONFIG_NAME)
    have, want = family(config), FAMILY[args.objective]
    if have != want:
        raise InputError(f"--init {run_dir} holds a {FAMILY_NAMES[have]} model (pretrained with {TRAINED_BY[have]}), "
                         f"but --objective {args.objective} trains {FAMILY_NAMES[want]}; continue it with "
                         f"{TRAINED_BY[have]}, or give --init a {FAMILY_NAMES[want]} run")
    read_weights(run_dir / WEIGHTS_NAME)  # names the file if it cannot be read
    limit = max_positions(config)  # none for T5's relative positions
    if limit is not None and limit < args.max_seq_length:
        raise InputError(f"--max-seq-length {args.max_seq_length} exceeds the --init model's "
                         f"{POSITIONS_FIELD[have]} {limit}")


@contextmanager
def out_of_memory_hint(args: PretrainArgs, d: Dist):
    """Running out of memory (torch's OutOfMemoryError on a GPU, the CPU allocator's RuntimeError) becomes
    InputError: a batch too large for the machine is a choice of options, and the message says which to change."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        text = str(err)
        if not (isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
                or "can't allocate memory" in text):
            raise
        share = args.batch_size // d.world
        micro = args.micro_batch_size or share
        smaller = max((m for m in range(1, max(1, micro // 4) + 1) if share % m == 0), default=1)
        raise InputError(f"out of memory in a training step of --batch-size {args.batch_size}"
                         f"{f' (--micro-batch-size {micro})' if args.micro_batch_size else ''} at --max-seq-length "
                         f"{args.max_seq_length}: lower --batch-size, or set --micro-batch-size (e.g. "
                         f"{smaller}) to run each batch in smaller pieces with the same result") from None


def check_batch_split(args: PretrainArgs, d: Dist) -> None:
    share = args.batch_size // d.world
    micro = args.micro_batch_size or share
    if args.batch_size % d.world or share == 0 or share % micro:
        raise InputError(f"--batch-size {args.batch_size} must split evenly over {d.world} rank(s) "
                         f"and micro-batches of {micro}")


# ----------------------------------------------------------------------------------------------------------------
# the loop's parts, in the order the loop uses them


@dataclass
class Data:
    """The corpus as the loop sees it: the tokenizer, the packed blocks (a fixed slice held out) and the objective
    that turns blocks into batches (`eval_objective`: the same, masking token by token, so held-out losses compare
    across runs)."""

    tok: object
    n_blocks: int
    train_blocks: np.ndarray
    eval_blocks: np.ndarray
    objective: Objective
    eval_objective: Objective


def prepare_data(args: PretrainArgs, out: Path, texts: list[str], d: Dist, resumed: bool) -> Data:
    """Corpus -> tokenizer -> cached ids (rank 0 writes the cache, the others read it) -> packed blocks."""
    tok = get_tokenizer(args, out, texts, d, resumed)
    pieces = "\n".join(tok.id_to_token(i) for i in range(tok.vocab_size))
    fingerprint = f"{tok.kind}:{hashlib.sha256(pieces.encode()).hexdigest()[:16]}"
    if d.main:
        tokenize_to_cache(texts, tok, out / "data", tokenizer_fingerprint=fingerprint)
    if d.world > 1:
        dist.barrier()
    corpus = tokenize_to_cache(texts, tok, out / "data", tokenizer_fingerprint=fingerprint)
    blocks = pack_blocks(corpus.ids, corpus.offsets, args.max_seq_length, tok.cls_token_id, tok.sep_token_id)
    train_blocks, eval_blocks = split_blocks(blocks, args.eval_fraction, args.seed)
    word_start = torch.from_numpy(tok.word_start) if args.whole_word_mask else None
    settings = dict(mlm_probability=args.mlm_probability, generator_size=args.generator_size,
                    discriminator_weight=args.discriminator_weight, share_embeddings=args.share_embeddings)
    return Data(tok, len(blocks), train_blocks, eval_blocks,
                make_objective(args.objective, tok, word_start=word_start, **settings),
                make_objective(args.objective, tok, word_start=None, **settings))


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
                print(f"note: resuming with {_flag(name)} {getattr(args, name)} (the run had "
                      f"{state['args'][name]})", flush=True)
    return s


@dataclass
class Runner:
    """How the steps run on this machine: the model as trained (compiled, DDP-wrapped), the autocast context,
    and this rank's share of the global batch, cut into micro-batches of `micro`, `accum` of them."""

    model: torch.nn.Module
    amp: object
    share: int
    micro: int
    accum: int


def runner_for(model: torch.nn.Module, args: PretrainArgs, d: Dist, device: torch.device) -> Runner:
    """bf16 autocast and TF32 on CUDA (fused AdamW is `make_adamw`'s); torch.compile on request; DDP across ranks."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_model = compile_model(model) if args.compile else model
    if d.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    share = args.batch_size // d.world
    micro = args.micro_batch_size or share
    return Runner(train_model, autocast(device), share, micro, share // micro)


def print_header(args, d: Dist, device, out: Path, texts: list[str], data: Data, model, seconds: float) -> None:
    if not d.main:
        return
    # BERT's encoder (what fine-tuning keeps; not ELECTRA's generator nor the MLM head); GPT-2 and T5 whole,
    # their output layers being their embeddings
    family_ = data.objective.family
    counted = unwrap(model).bert if family_ == "bert" else unwrap(model)
    what = "encoder" if family_ == "bert" else FAMILY_NAMES[family_]
    n_params = sum(p.numel() for p in counted.parameters())
    print(f"run {out} | {len(texts):,} texts -> {data.n_blocks:,} blocks of {args.max_seq_length} "
          f"({len(data.train_blocks):,} train, {len(data.eval_blocks):,} held out) | vocab {data.tok.vocab_size:,} | "
          f"{what} {n_params / 1e6:.2f}M parameters | {d.world} rank(s) on {device} | set-up {seconds:.0f}s",
          flush=True)


def train_step(s: TrainState, r: Runner, data: Data, args: PretrainArgs, d: Dist, device) -> tuple[float, dict, float]:
    """One optimiser step; returns the step's loss (the objective's weighted sum), its terms and the lr.

    The global batch is drawn and masked identically on every rank (the same generator state everywhere), each
    loss term counted over all of it; then each rank takes its rows. Each term's micro-batch mean is weighed by
    its share of the global count, L = Σ_k w_k Σ_micro mean_k · n_k / N_k, so accumulation gives the gradient of
    one big batch; DDP averages over ranks, hence the factor world. Then clip, step, zero."""
    objective = data.objective
    lr = lr_at(s.step, peak_lr=args.lr, warmup_steps=args.warmup_steps, total_steps=s.total_steps or 10**9,
               schedule=args.schedule)
    set_lr(s.optimizer, lr)
    batch = objective.make_batch(block_batch(data.train_blocks, s.stream.next_batch()), s.mask_gen)
    global_counts = objective.counts(batch)
    mine = {k: v[d.rank * r.share:(d.rank + 1) * r.share] for k, v in batch.items()}
    terms = dict.fromkeys(global_counts, 0.0)
    for m in range(r.accum):
        rows = slice(m * r.micro, (m + 1) * r.micro)
        part = {k: v[rows].to(device, non_blocking=True) for k, v in mine.items()}
        share_of = {k: n / global_counts[k] for k, n in objective.counts(part).items()}
        sync = nullcontext() if (d.world == 1 or m == r.accum - 1) else r.model.no_sync()
        with sync, r.amp:
            means = objective.losses(r.model, part)
            loss = sum(objective.weights[k] * means[k] * share_of[k] * d.world for k in means)
        loss.backward()
        for k in means:
            terms[k] += means[k].detach().float() * share_of[k]
    if args.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), args.max_grad_norm)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    term_values = torch.stack([torch.as_tensor(terms[k], device=device) for k in terms])
    if d.world > 1:  # each rank holds its rows' part of each global mean
        dist.all_reduce(term_values)
    terms = dict(zip(terms, term_values.tolist()))
    return sum(objective.weights[k] * v for k, v in terms.items()), terms, lr


class TimeBudget:
    """--max-time as a number of steps, measured over steps start+5 .. start+10 (evaluations included, as they
    share the budget), so that a resumed run replays the same steps; `None` budget: --max-steps alone."""

    def __init__(self, args: PretrainArgs, s: TrainState):
        self.seconds = None if args.max_time is None else args.max_time * 60.0
        self.max_steps, self.eval_every = args.max_steps, args.eval_every
        self.calibrate_at = s.step + 10 if s.total_steps is None else None
        self.start = None

    def update(self, s: TrainState, eval_seconds: float) -> bool:
        """After a step: True when the step budget was just set."""
        if self.calibrate_at is not None and s.step == self.calibrate_at - 5:
            self.start = (s.step, s.train_seconds)
        if self.calibrate_at is None or s.step != self.calibrate_at:
            return False
        per_step = (s.train_seconds - self.start[1]) / (s.step - self.start[0])
        per_step += eval_seconds / self.eval_every
        total = s.step + max(1, int((self.seconds - s.train_seconds - eval_seconds) / per_step))
        s.total_steps = max(min(total, self.max_steps) if self.max_steps is not None else total, s.step)
        self.calibrate_at = None
        return True

    def spent(self, s: TrainState) -> bool:
        return self.seconds is not None and s.train_seconds >= self.seconds and s.step < (s.total_steps or 0)


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


# ----------------------------------------------------------------------------------------------------------------
# the loop


def train(args: PretrainArgs, d: Dist, device: torch.device, out: Path, texts: list[str], resumed: Resumed | None,
          changed: list[str]) -> int:
    t_setup = time.perf_counter()
    if resumed is not None and d.main:
        set_aside_unreadable(resumed)
        remove_save_leftovers(out)
    # 1. Corpus -> tokenizer -> cached ids -> packed blocks, a fixed slice held out; the objective.
    data = prepare_data(args, out, texts, d, resumed is not None)
    # 2. Model, optimiser and the rest of the state a checkpoint restores; the options the run was made with.
    s = build_state(args, d, device, out, data, resumed, changed)
    if d.main:
        atomic_write(out / "args.json", lambda p: p.write_text(json.dumps(dataclasses.asdict(args), indent=2) + "\n",
                                                              encoding="utf-8"))
    # 3. Speed: autocast, compile, DDP, micro-batches.
    r = runner_for(s.model, args, d, device)
    print_header(args, d, device, out, texts, data, s.model, time.perf_counter() - t_setup)
    # Tokens of the corpus per step, B·T for every objective (span corruption's encoder reads fewer, its decoder the
    # ~0.3 T targets): tokens/s says how fast each objective gets through the same text.
    tokens_per_step = args.batch_size * args.max_seq_length
    budget, saved_step = TimeBudget(args, s), s.step if resumed else None

    def log(record):
        if d.main:
            append_metrics(out / "metrics.jsonl", record)

    def evaluate_now() -> dict:
        return evaluate(s.model, data.eval_objective, data.eval_blocks, args, device, d, r.amp)

    def checkpoint():
        nonlocal saved_step
        if saved_step == s.step:
            return
        if d.main:
            save_checkpoint(out, s.model, s.optimizer, s.to_dict(args), args.keep_last)
        if d.world > 1:
            dist.barrier()
        saved_step = s.step

    resume_hint = f"continue with: python -m train.pretrain --out {shlex.quote(str(out))} --resume"
    outcome, window_tokens = Outcome("done"), 0
    with StopSignals() as stop:
        # 4. An evaluation before the first step: the starting point and, for a time budget, its cost.
        t0 = time.perf_counter()
        if s.step == 0:
            log({"step": 0, **evaluate_now()})
        eval_seconds = time.perf_counter() - t0
        bar = tqdm(total=s.total_steps, initial=s.step, disable=not (d.main and args.progress), unit="step",
                   dynamic_ncols=True, desc="pretraining")
        window_start = time.perf_counter()
        try:
            while s.total_steps is None or s.step < s.total_steps:
                # 5. A signal is acted on here, between two steps: the checkpoint is exactly the state after a step.
                if stop.received(d, device):
                    checkpoint()
                    outcome = Outcome(f"{stop.name} received: stopped after step {s.step}, checkpoint saved; "
                                      f"{resume_hint}", 128 + stop.signum)
                    break
                # 6. One optimiser step (batch, micro-batches, clip, step); a loss that is not finite ends the run.
                t_step = time.perf_counter()
                step_loss, terms, lr = train_step(s, r, data, args, d, device)
                if not math.isfinite(step_loss):
                    outcome = Outcome(f"stopped: the loss became {step_loss} at step {s.step + 1}; the last good "
                                      "checkpoint is kept", 1)
                    break
                s.step += 1
                s.train_seconds += time.perf_counter() - t_step
                window_tokens += tokens_per_step
                # 7. A time budget becomes a step budget after a few measured steps (so a resumed run is exact).
                if budget.update(s, eval_seconds):
                    bar.total = s.total_steps
                    bar.refresh()
                # 8. Log, evaluate, checkpoint.
                at_end = s.step == s.total_steps
                if s.step % args.log_every == 0 or at_end:
                    now = time.perf_counter()
                    tps = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    parts = {f"loss_{k}": v for k, v in terms.items()} if len(terms) > 1 else {}
                    log({"step": s.step, "loss": step_loss, **parts, "lr": lr, "tokens_per_s": tps,
                         "time_s": s.train_seconds})
                    bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{tps:,.0f}", refresh=False)
                bar.update(1)
                if s.step % args.eval_every == 0 or at_end:
                    t0 = time.perf_counter()
                    last_eval = evaluate_now()
                    eval_seconds = time.perf_counter() - t0
                    s.train_seconds += eval_seconds
                    log({"step": s.step, **last_eval})
                    if d.main:
                        bar.write(f"step {s.step}: {describe_eval(last_eval)}")
                if s.step % args.save_every == 0 or at_end:
                    checkpoint()
                # 9. The other ways a run ends early: --stop-at-step, and --max-time spent.
                if args.stop_at_step is not None and s.step >= args.stop_at_step:
                    checkpoint()
                    outcome = Outcome(f"paused at step {s.step}; {resume_hint}")
                    break
                if budget.spent(s):
                    if s.step % args.eval_every:  # the run ends here: report where it got to
                        log({"step": s.step, **evaluate_now()})
                    checkpoint()
                    outcome = Outcome(f"stopped by --max-time after {s.step} steps")
                    break
        except (KeyboardInterrupt, Stopped):  # a second signal, in the middle of a step: that step is not saved
            last = latest_checkpoint(out)
            outcome = Outcome(f"interrupted again during step {s.step + 1}: nothing saved for it; --resume "
                              f"continues from {last.name if last else 'the start'}", 130)
        finally:
            bar.close()
    # 10. The loss curve and the summary.
    if d.main:
        plot_losses(out / "metrics.jsonl", out / "loss.png", data.objective.eval_loss_name)
        print_summary(out, outcome, s, tokens_per_step, data.objective)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
