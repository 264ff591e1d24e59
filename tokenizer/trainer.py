"""Training a SentencePiece tokenizer with BERT's special tokens at ids [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4."""

from __future__ import annotations

import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from minibert.errors import InputError

from .config import CONFIG_NAME, SPECIAL_TOKENS
from .corpus import Corpus, read_corpus
from .spm_tokenizer import MODEL_NAME, SentencePieceTokenizer

MODEL_TYPES = ("unigram", "bpe", "char", "word")
#: Files whose presence means a directory already holds a tokenizer that training must not silently replace.
TOKENIZER_FILES = (CONFIG_NAME, MODEL_NAME, "vocab.txt")


@dataclass
class TrainingStats:
    """What a training run did: corpus size, resulting vocabulary, compression and wall time."""

    vocab_size: int
    n_sentences: int  # non-blank lines read
    n_sampled: int  # lines actually trained on (at most input_sentence_size)
    n_chars: int  # characters in the sampled lines
    n_tokens: int  # tokens the trained model makes of the sampled lines
    seconds: float

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / max(1, self.n_tokens)

    def summary(self) -> str:
        return (f"vocabulary {self.vocab_size:,} tokens; {self.chars_per_token:.2f} characters per token on "
                f"{self.n_sampled:,} training lines ({self.n_chars:,} characters); {self.seconds:.1f} s")


def existing_tokenizer_files(out_dir: Path) -> list[str]:
    """Names of tokenizer files already in `out_dir`."""
    return [name for name in TOKENIZER_FILES if (out_dir / name).exists()]


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an output path that is a file, or a directory holding a tokenizer unless `force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file; give a directory for the tokenizer")
    found = existing_tokenizer_files(out_dir) if out_dir.is_dir() else []
    if found and not force:
        raise InputError(f"{out_dir} already holds a tokenizer ({', '.join(found)}); choose another directory or "
                         "pass --force to overwrite it")


def _check_options(vocab_size: int, model_type: str, character_coverage: float, input_sentence_size: int) -> None:
    if model_type not in MODEL_TYPES:
        raise InputError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise InputError(f"vocabulary size {vocab_size} is too small; it must exceed the {len(SPECIAL_TOKENS)} "
                         "special tokens (typical: 8000 to 32000)")
    if not 0 < character_coverage <= 1:
        raise InputError(f"character coverage {character_coverage} must be in (0, 1]; 0.9995 suits Chinese, "
                         "1.0 small alphabets")
    if input_sentence_size < 1:
        raise InputError(f"input sentence size {input_sentence_size} must be at least 1")


def _explain(err: RuntimeError, corpus: Corpus, vocab_size: int) -> InputError:
    """An `InputError` that says what to change, from a SentencePiece training failure."""
    message = str(err)
    too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return InputError(f"{corpus.source} has too little text for a vocabulary of {vocab_size}: at most "
                          f"{too_high.group(1)} tokens can be learned from it. Lower --vocab-size to "
                          f"{too_high.group(1)} or less, or train on more text.")
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return InputError(f"the characters of {corpus.source} and the special tokens (and the 256 byte tokens "
                          f"with --byte-fallback) need {too_low.group(1)} tokens, more than --vocab-size "
                          f"{vocab_size}. Raise --vocab-size or lower --character-coverage.")
    detail = message.split("] ")[-1].strip() or message
    return InputError(f"SentencePiece could not train on {corpus.source}: {detail}")


def train_with_stats(
    inputs,
    vocab_size: int = 8000,
    out_dir: str | Path | None = None,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool | None = None,
) -> tuple[SentencePieceTokenizer, TrainingStats]:
    """Like `train`, and also return the `TrainingStats` of the run."""
    start = time.perf_counter()
    vocab_size = int(vocab_size)
    _check_options(vocab_size, model_type, character_coverage, input_sentence_size)
    if out_dir is not None:
        check_out_dir(Path(out_dir), force)
    threads = num_threads or max(1, os.cpu_count() or 1)
    corpus = read_corpus(inputs, input_sentence_size, seed, progress)
    # SentencePiece silently drops lines longer than max_sentence_length (in bytes); allow the longest we have.
    longest_bytes = 4 * max(map(len, corpus.sentences))
    spm.set_random_generator_seed(seed)
    # Unigram training prunes the seed vocabulary by this factor per round. SentencePiece's 0.75 takes twice as
    # many rounds as 0.5 and, on 1.8M characters of Chinese, gains only 0.2% in characters per token.
    algorithm_options = {"shrinking_factor": 0.5} if model_type == "unigram" else {}
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus.sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            # NFKC (full-width letters, digits and punctuation become half-width) plus whitespace folding.
            normalization_rule_name="nmt_nfkc",
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece=SPECIAL_TOKENS["pad"], unk_piece=SPECIAL_TOKENS["unk"],
            bos_piece=SPECIAL_TOKENS["cls"], eos_piece=SPECIAL_TOKENS["sep"],
            # A control symbol gets the next id (4) and is never produced from text, unlike a user-defined one.
            control_symbols=[SPECIAL_TOKENS["mask"]],
            # The uniform sample of at most input_sentence_size lines was drawn while reading; train on all of it.
            input_sentence_size=0,
            max_sentence_length=max(4192, longest_bytes),
            num_threads=threads,
            minloglevel=2,  # errors only: the trainer otherwise logs hundreds of lines to stderr
            **algorithm_options,
        )
    except RuntimeError as err:
        raise _explain(err, corpus, vocab_size) from None
    tokenizer = SentencePieceTokenizer(model.getvalue(), num_threads=num_threads)
    n_tokens = sum(map(len, tokenizer.encode_plain(corpus.sentences)))
    if out_dir is not None:
        tokenizer.save(out_dir)
    stats = TrainingStats(
        vocab_size=tokenizer.vocab_size,
        n_sentences=corpus.n_sentences,
        n_sampled=len(corpus.sentences),
        n_chars=sum(map(len, corpus.sentences)),
        n_tokens=n_tokens,
        seconds=time.perf_counter() - start,
    )
    return tokenizer, stats


def train(
    inputs,
    vocab_size: int = 8000,
    out_dir: str | Path | None = None,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool | None = None,
    verbose: bool = True,
) -> SentencePieceTokenizer:
    """Train a SentencePiece tokenizer on `inputs` and save it to `out_dir` (if given).

    `inputs`: a path (text file, or directory searched recursively for .txt files), or an iterable mixing
    `pathlib.Path` objects (files/directories) and `str` items (in-memory text, one sentence per line).
    Blank lines are skipped; beyond `input_sentence_size` lines, a uniform random sample is used.
    `model_type`: "unigram" (default), "bpe", "char" or "word". `character_coverage`: the share of character
    occurrences the vocabulary must cover; rarer characters become [UNK] (or bytes, with `byte_fallback`).
    `num_threads`: SentencePiece threads, all cores by default. An `out_dir` that already holds a tokenizer is
    refused unless `force`. `progress`: tqdm bar while reading (None: only for inputs of 4 MiB or more).
    With `verbose`, a one-line report (vocabulary size, characters per token, time) goes to stderr.
    Bad input (missing/empty/non-UTF-8 files, a vocabulary size the text cannot support) raises `InputError`.
    """
    tokenizer, stats = train_with_stats(
        inputs, vocab_size, out_dir, model_type=model_type, character_coverage=character_coverage,
        byte_fallback=byte_fallback, input_sentence_size=input_sentence_size, num_threads=num_threads, seed=seed,
        force=force, progress=progress,
    )
    if verbose:
        where = f", saved to {out_dir}" if out_dir is not None else ""
        print(f"trained a {model_type} SentencePiece tokenizer: {stats.summary()}{where}", file=sys.stderr)
    return tokenizer
