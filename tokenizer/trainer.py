"""The SentencePiece training step: text in, a model with BERT's special tokens at ids [PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4 out, as the bytes of a `.model` file.

`SentencePieceTokenizer.train` (also `tokenizer.train`) wraps those bytes in a tokenizer, saves it and reports;
this module knows nothing of the tokenizer class, so the class can offer training without an import cycle.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import sentencepiece as spm

from .config import SPECIAL_TOKENS
from .corpus import Corpus, read_corpus
from .errors import InputError

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


def check_options(vocab_size: int, model_type: str, character_coverage: float, input_sentence_size: int) -> None:
    """InputError for an option out of range, before any text is read."""
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
) -> tuple[bytes, Corpus]:
    """Read `inputs` (see `corpus.read_corpus`) and train a SentencePiece model on them; returns the model's bytes
    and the corpus it was trained on. The options are those of `SentencePieceTokenizer.train`, checked beforehand
    by `check_options`; a vocabulary the text cannot support raises InputError saying what to change."""
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
    return model.getvalue(), corpus
