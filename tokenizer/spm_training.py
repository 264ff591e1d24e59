"""The SentencePiece training step: text in, a model with BERT's special tokens at ids [PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4 out, as the bytes of a `.model` file.

`SentencePieceTokenizer.train` (also `tokenizer.train`) wraps those bytes in a tokenizer, saves it and reports;
this module knows nothing of the tokenizer class, so the class can offer training without an import cycle.

SentencePiece itself runs in a child process (`tokenizer.spm_process`), so that SIGINT or SIGTERM stops training
at once: its C++ code would not return to Python, where the signal is acted on, before it had finished.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import SPECIAL_TOKENS
from .training_text import LONG_LINES, Corpus, read_corpus
from .command import Stopped
from .errors import InputError
from .spm_process import FAILED

MODEL_TYPES = ("unigram", "bpe", "char", "word")


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


def check_options(vocab_size: int, model_type: str, character_coverage: float, input_sentence_size: int,
                  long_lines: str = "split") -> None:
    """InputError for an option out of range, before any text is read."""
    if long_lines not in LONG_LINES:
        raise InputError(f"--long-lines {long_lines!r}: choose one of {', '.join(LONG_LINES)}")
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


def train_model(
    inputs,
    vocab_size: int,
    *,
    model_type: str,
    character_coverage: float,
    byte_fallback: bool,
    input_sentence_size: int,
    num_threads: int | None,
    seed: int,
    progress: bool | None,
    long_lines: str = "split",
    log: Callable[[str], None] | None = None,
) -> tuple[bytes, Corpus]:
    """Read `inputs` (see `corpus.read_corpus`) and train a SentencePiece model on them; returns the model's bytes
    and the corpus it was trained on. The options are those of `SentencePieceTokenizer.train`, checked beforehand
    by `check_options`; a vocabulary the text cannot support raises InputError saying what to change. `log` gets
    the lines that say what is happening (long lines split, training started)."""
    threads = num_threads or max(1, os.cpu_count() or 1)
    corpus = read_corpus(inputs, input_sentence_size, seed, progress, long_lines)
    if log is not None:
        if (note := corpus.long_lines_note()) is not None:
            log(f"note: {note}")
        log(f"training a {model_type} SentencePiece model on {len(corpus.sentences):,} lines "
            f"({sum(map(len, corpus.sentences)):,} characters) ...")
    # SentencePiece silently drops lines longer than max_sentence_length (in bytes); allow the longest we have.
    longest_bytes = 4 * max(map(len, corpus.sentences))
    # Unigram training prunes the seed vocabulary by this factor per round. SentencePiece's 0.75 takes twice as
    # many rounds as 0.5 and, on 1.8M characters of Chinese, gains only 0.2% in characters per token.
    algorithm_options = {"shrinking_factor": 0.5} if model_type == "unigram" else {}
    options = dict(
        seed=seed,
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
    try:
        model = run_trainer(options, corpus.sentences)
    except RuntimeError as err:
        raise _explain(err, corpus, vocab_size) from None
    return model, corpus


SPM_PROCESS = Path(__file__).with_name("spm_process.py")
CHUNK = 1 << 20  # bytes of sentences written to the trainer at a time


def run_trainer(options: dict, sentences: list[str]) -> bytes:
    """The model's bytes, trained by SentencePiece in a child process (`tokenizer.spm_process`) on `sentences`.

    Whatever interrupts the wait (SIGINT or SIGTERM as `Stopped` or KeyboardInterrupt, any error) terminates the
    child before it propagates, so training stops when the command does. SentencePiece's own refusal comes back as
    the RuntimeError it raised; a child ended by a signal raises `Stopped` for SIGINT and SIGTERM (Ctrl-C reaches
    the whole process group) and InputError for anything else (SIGKILL: most likely memory)."""
    # Run as a script, not `-m`: it needs only sentencepiece, not this package (nor the caller's sys.path).
    proc = subprocess.Popen([sys.executable, str(SPM_PROCESS), json.dumps(options)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        data = ("\n".join(sentences) + "\n").encode("utf-8", errors="replace")
        try:
            for start in range(0, len(data), CHUNK):
                proc.stdin.write(data[start : start + CHUNK])
        except BrokenPipeError:  # the child ended early: its status and message say why
            pass
        del data
        model, message = proc.communicate()  # closes stdin, then waits
    except BaseException:
        proc.kill()  # it holds nothing worth a clean exit: the model would only have come back as bytes
        proc.wait()
        raise
    if proc.returncode == 0:
        return model
    message = message.decode("utf-8", errors="replace").strip()
    if proc.returncode == FAILED:
        raise RuntimeError(message)
    if -proc.returncode in (signal.SIGINT, signal.SIGTERM):
        raise Stopped(-proc.returncode)
    how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"ended with status {proc.returncode}")
    raise InputError(f"the SentencePiece training process {how}{': ' + message.splitlines()[-1] if message else ''}"
                     "; if it ran out of memory, train on fewer lines (--input-sentence-size)")
