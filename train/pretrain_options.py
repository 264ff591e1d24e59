"""The options of `python -m train.pretrain` and their checks, all made before any work is done: each option's
range, the model config they describe (--preset, --config, --set over pretraining's own defaults), what --init
may be given with, and which options a resumed run takes anew (`train.resume`). InputError names the option.

Every default is the one the library uses (`train.mlm.MLM_PROBABILITY`, `minibert.electra`'s ELECTRA
settings, `tokenizer.config.VOCAB_SIZE`), and every option is recorded in the run's args.json.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from minibert import BertConfig, InputError
from minibert.checkpoint import CONFIG_NAME, WEIGHTS_NAME, family, read_config, read_weights
from minibert.config import PRESETS, TYPE_NAMES, field_types, read_fields
from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE
from tokenizer.config import VOCAB_SIZE
from train.builtin_data import BUILTIN_PARTS
from train.corpus_files import BAD_FILE_POLICIES
from tokenizer.command import opt
from train.device import Dist
from train.families import NAMES as FAMILY_NAMES
from train.families import POSITIONS_FIELD, max_positions
from train.mlm import MLM_PROBABILITY
from train.objectives import FAMILY, OBJECTIVES, Objective
from train.resume import flag, options_on_resume

# Lines a new tokenizer learns from at most: all of the built-in text (29,475 lines), and a sample of a larger
# corpus small enough that a run's memory stays flat in the corpus's size (docs/RESULTS.md, the memory table).
TOKENIZER_SAMPLE = 50_000

# What the built-in corpus defaults to: pretraining on the in-domain reviews (measured best, docs/RESULTS.md), with
# a tokenizer that learns its pieces from all the built-in text.
DEFAULT_BUILTIN_CORPUS, DEFAULT_TOKENIZER_CORPUS = "reviews", "all"


@dataclass
class PretrainArgs:
    # data
    corpus: list[str] | None = opt(None, "text files (one document per line), JSONL files (one object with a "
                                         "'text' field per line), either gzipped (.txt.gz, .jsonl.gz), directories "
                                         "of them (searched recursively) and glob patterns (quoted: 'data/*.txt'); "
                                         "read line by line, tokenized in parallel into shards on disk, so of any "
                                         "size; default: the built-in Chinese corpus (People's Daily 1998 + "
                                         "training-split reviews)", metavar="PATH")
    workers: int | None = opt(None, "processes that tokenize --corpus in parallel; default: the number of cores")
    bad_files: str = opt("stop", "a --corpus file that cannot be read as text (empty, binary, not UTF-8, a bad "
                                 "JSONL line): stop names it and exits with status 2; skip leaves it out with a "
                                 "warning and counts the files skipped", choices=BAD_FILE_POLICIES)
    data_cache: str | None = opt(None, "directory for the token shards, shared by runs (a corpus and tokenizer "
                                       "already tokenized there is not tokenized again); default: the run's data/",
                                 metavar="DIR")
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
                              "--device, --micro-batch-size, --compile, --progress, --workers and --data-cache may "
                              "be given anew (a new "
                              "--max-steps: the learning-rate schedule becomes that of a run of the new length)")
    force: bool = opt(False, "start over: remove the run in --out (only the files a run writes) first")
    tokenizer: str | None = opt(None, "an existing tokenizer directory; default: train one on the corpus")
    init: str | None = opt(None, "continue pretraining from the weights of this pretraining run (task-adaptive "
                                 "pretraining: a run on the general corpus, then --builtin-corpus reviews or your "
                                 "in-domain --corpus); the run's tokenizer and model config are used, the optimiser, "
                                 "schedule and data order start fresh. The run's model must be the one --objective "
                                 "trains (BERT for mlm and electra, GPT-2 for causal, T5 for span)", metavar="RUN")
    vocab_size: int = opt(VOCAB_SIZE, "vocabulary size of a newly trained tokenizer")
    tokenizer_sample: int = opt(TOKENIZER_SAMPLE, "lines a newly trained tokenizer learns from: all of the corpus's, "
                                                  "or a uniform sample of this many (SentencePiece's sentence "
                                                  "sampling). Its training takes about 20 bytes of memory per byte "
                                                  "of the sample, so this bounds the memory of a run on a large "
                                                  "corpus", metavar="LINES")
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
    max_grad_norm: float = opt(1.0, "clip the global gradient norm to this (0 = off)")
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
        (args.tokenizer_sample >= 1, "--tokenizer-sample must be at least 1 (lines)"),
        (args.workers is None or args.workers >= 1, "--workers must be at least 1"),
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


def check_batch_split(args: PretrainArgs, d: Dist) -> None:
    """--batch-size splits evenly over the ranks, and each rank's share over micro-batches."""
    share = args.batch_size // d.world
    micro = args.micro_batch_size or share
    if args.batch_size % d.world or share == 0 or share % micro:
        raise InputError(f"--batch-size {args.batch_size} must split evenly over {d.world} rank(s) "
                         f"and micro-batches of {micro}")



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
                         f"{', '.join(flag(k) for k in clash)}")
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


# Options that may be given anew on --resume: the budget and the bookkeeping, which do not change what a step
# computes. Every other option would make the run no longer the one it was, so a change to it is refused.
MAY_CHANGE_ON_RESUME = ("max_steps", "max_time", "eval_every", "log_every", "save_every", "keep_last", "device",
                        "progress", "compile", "micro_batch_size", "workers", "data_cache")
# Options that are about this command, not the run: never taken from the checkpoint.
THIS_COMMAND_ONLY = ("out", "resume", "force", "stop_at_step")


def resume_args(stored: dict, args: PretrainArgs, given: set[str]) -> tuple[PretrainArgs, list[str]]:
    """The run's own options, with those given on this command line that may change; returns them and the names
    of the options that changed. A given option that may not change, and differs, is an InputError naming it
    (`train.resume`, shared with train.finetune)."""
    def same(name, a, b):  # --max-steps 0 and none both mean no step limit
        return (None if name == "max_steps" and a == 0 else a) == (None if name == "max_steps" and b == 0 else b)

    return options_on_resume(stored, args, given, MAY_CHANGE_ON_RESUME, THIS_COMMAND_ONLY, same)
