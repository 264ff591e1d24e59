"""A SentencePiece model with BERT's special tokens at fixed ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from .base import Tokenizer
from .chars import is_cjk, is_punctuation
from .config import CONFIG_NAME, SPECIAL_TOKENS, VOCAB_SIZE, read_config, write_config
from .errors import InputError
from .spm_proto import without_dummy_prefix
from .spm_training import TrainingStats, check_options, train_model

MODEL_NAME = "spm.model"
VOCAB_NAME = "spm.vocab"
WORD_BOUNDARY = "\u2581"  # "▁", SentencePiece's marker for a preceding space
SPECIAL_IDS = {name: i for i, name in enumerate(SPECIAL_TOKENS)}  # pad=0 unk=1 cls=2 sep=3 mask=4
SMALL_BATCH = 64  # fewer texts than this are encoded one by one
#: Files whose presence means a directory already holds a tokenizer that training must not silently replace.
TOKENIZER_FILES = (CONFIG_NAME, MODEL_NAME, "vocab.txt")


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class SentencePieceTokenizer(Tokenizer):
    """Wraps a trained SentencePiece model; batch encoding runs in SentencePiece's C++ code, multi-threaded.

    Text is normalised by the model (NFKC, whitespace runs collapsed to one space and trimmed), so `decode`
    returns the normalised text. Literal special-token strings in the text, such as "[MASK]", are ordinary text:
    `[CLS] [SEP] [MASK]` are control symbols and `[PAD]` never comes from text, so only `[UNK]` (for characters
    outside the vocabulary) can appear among the ids of plain text.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, num_threads: int | None = None, source: str = "the model"):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except (RuntimeError, OSError) as err:
            raise InputError(f"{source} is not a SentencePiece model ({err})") from None
        for name, i in SPECIAL_IDS.items():
            if i >= self._sp.get_piece_size() or self._sp.id_to_piece(i) != SPECIAL_TOKENS[name]:
                raise InputError(f"{source} does not have {SPECIAL_TOKENS[name]} at id {i}; train it with "
                                 "tokenizer.train so that the BERT special tokens have their fixed ids")
        self.num_threads = num_threads or _default_threads()
        self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        self._word_start = np.array([self._starts_word(i) for i in range(len(self._pieces))], dtype=bool)
        self._inside_words: spm.SentencePieceProcessor | None = None  # built on first use (`_encode_words`)

    @classmethod
    def from_file(cls, model_file: str | Path, num_threads: int | None = None) -> SentencePieceTokenizer:
        """A tokenizer from a `.model` file written by SentencePiece."""
        path = Path(model_file)
        if not path.is_file():
            raise InputError(f"{path}: no such SentencePiece model file")
        return cls(path.read_bytes(), num_threads, source=str(path))

    @classmethod
    def train(
        cls, inputs, vocab_size: int = VOCAB_SIZE, out_dir: str | Path | None = None, *, verbose: bool = True, **options
    ) -> SentencePieceTokenizer:
        """Train a SentencePiece tokenizer on `inputs` and save it to `out_dir` (if given); also `tokenizer.train`.

        `inputs`: a path (text file, or directory searched recursively for .txt files), or an iterable mixing
        `pathlib.Path` objects (files/directories) and `str` items (in-memory text, one sentence per line).
        Blank lines are skipped; beyond `input_sentence_size` lines, a uniform random sample is used.
        The options, those of `train_with_stats`: `model_type` "unigram" (default), "bpe", "char" or "word";
        `character_coverage`, the share of character occurrences the vocabulary must cover (rarer characters become
        [UNK], or bytes with `byte_fallback`); `num_threads`, SentencePiece threads, all cores by default; `seed`;
        `force`, to replace a tokenizer already in `out_dir` (refused otherwise); `progress`, a tqdm bar while
        reading (None: only for inputs of 4 MiB or more); `long_lines`, "split" (default) or "refuse" for a line
        longer than `tokenizer.training_text.MAX_LINE_CHARS` characters. With `verbose`, what happens goes to stderr: a
        note on long lines split, a line when training starts, and a one-line report at the end (vocabulary size,
        characters per token, time).
        Bad input (missing/empty/non-UTF-8 files, a vocabulary size the text cannot support) raises `InputError`.
        SentencePiece trains in a child process, so SIGINT or SIGTERM stops it at once (`tokenizer.spm_training`).
        """
        if verbose:
            options.setdefault("log", lambda line: print(line, file=sys.stderr, flush=True))
        tokenizer, stats = cls.train_with_stats(inputs, vocab_size, out_dir, **options)
        if verbose:
            model_type = options.get("model_type", "unigram")
            where = f", saved to {out_dir}" if out_dir is not None else ""
            print(f"trained a {model_type} SentencePiece tokenizer: {stats.summary()}{where}", file=sys.stderr)
        return tokenizer

    @classmethod
    def train_with_stats(
        cls,
        inputs,
        vocab_size: int = VOCAB_SIZE,
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
        long_lines: str = "split",
        log: Callable[[str], None] | None = None,
    ) -> tuple[SentencePieceTokenizer, TrainingStats]:
        """Like `train`, and also return the `TrainingStats` of the run; also `tokenizer.train_with_stats`.
        `log`, if given, gets the lines `train` prints with `verbose` (all but the final report)."""
        start = time.perf_counter()
        vocab_size = int(vocab_size)
        check_options(vocab_size, model_type, character_coverage, input_sentence_size, long_lines)
        if out_dir is not None:
            check_out_dir(Path(out_dir), force)
        model, corpus = train_model(
            inputs, vocab_size, model_type=model_type, character_coverage=character_coverage,
            byte_fallback=byte_fallback, input_sentence_size=input_sentence_size, num_threads=num_threads, seed=seed,
            progress=progress, long_lines=long_lines, log=log,
        )
        tokenizer = cls(model, num_threads=num_threads)
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

    def _starts_word(self, i: int) -> bool:
        # A piece starts a word if it follows a space ("▁"), is special, or is CJK/punctuation: Chinese has no
        # spaces, so each CJK piece (usually one character, as Chinese BERT's words) counts as a word.
        piece = self._pieces[i]
        if i < len(SPECIAL_IDS) or piece.startswith(WORD_BOUNDARY):
            return True
        if self._sp.is_byte(i):
            # Byte fallback spells an unknown character as its UTF-8 bytes; the lead byte starts it.
            return int(piece[1:-1], 16) >= 0xC0
        return is_cjk(piece[0]) or (len(piece) == 1 and is_punctuation(piece))

    # -- vocabulary -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def pad_token_id(self) -> int:
        return SPECIAL_IDS["pad"]

    @property
    def unk_token_id(self) -> int:
        return SPECIAL_IDS["unk"]

    @property
    def cls_token_id(self) -> int:
        return SPECIAL_IDS["cls"]

    @property
    def sep_token_id(self) -> int:
        return SPECIAL_IDS["sep"]

    @property
    def mask_token_id(self) -> int:
        return SPECIAL_IDS["mask"]

    @property
    def word_start(self) -> np.ndarray:
        """True for pieces after a space ("▁..."), special tokens, CJK pieces and single punctuation marks."""
        return self._word_start.copy()

    def id_to_token(self, token_id: int) -> str:
        return self._pieces[token_id]

    def token_to_id(self, token: str) -> int:
        return self._sp.piece_to_id(token)

    # -- text <-> ids -----------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        # A batch call starts worker threads, which costs about as much as encoding a few dozen short texts.
        if len(texts) < SMALL_BATCH:
            return [self._sp.encode(text, out_type=int) for text in texts]
        return self._sp.encode(texts, out_type=int, num_threads=self.num_threads)

    def _encode_words(self, words: list[str], joiner: str) -> list[list[int]]:
        """Words joined by a space are read as SentencePiece reads a text (its "▁" marks the space before each);
        words joined by nothing, as the continuation of a text: the same model without its dummy prefix, so that
        a Chinese character gets the piece it has inside running text ("京"), not a word-initial one ("▁京")."""
        if joiner.strip():
            raise ValueError(f"words are joined by a space or by nothing, not {joiner!r}")
        if joiner:
            return self.encode_plain(words)
        if self._inside_words is None:
            self._inside_words = spm.SentencePieceProcessor()
            self._inside_words.LoadFromSerializedProto(without_dummy_prefix(self._proto))
        return self._inside_words.encode(words, out_type=int, num_threads=self.num_threads)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The normalised text of `ids`; special tokens appear as "[CLS]" etc. unless skipped."""
        ids = [int(i) for i in ids]
        n_special = len(SPECIAL_IDS)
        if skip_special_tokens:
            return self._sp.decode([i for i in ids if i >= n_special])
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i >= n_special:
                run.append(i)
                continue
            if run:
                parts.append(self._sp.decode(run))
                run = []
            parts.append(self._pieces[i])
        if run:
            parts.append(self._sp.decode(run))
        return " ".join(p for p in parts if p)

    def normalize(self, text: str) -> str:
        """`text` as the model sees it: NFKC, whitespace runs as one space, no leading/trailing space."""
        # SentencePiece marks spaces (and the start of the text) with "▁".
        return self._sp.normalize(text).replace(WORD_BOUNDARY, " ").strip(" ")

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write `spm.model`, a readable `spm.vocab` (piece and score per line) and `tokenizer_config.json`.

        All or nothing: a save cut short (a signal, a full disk) removes the files it had written, and the
        directory if it made it, so that no half-written tokenizer is left looking complete."""
        directory = Path(directory)
        created = not directory.exists()
        vocab_lines = (f"{p}\t{self._sp.get_score(i):g}\n" for i, p in enumerate(self._pieces))
        config = {
            "kind": self.kind,
            "model_file": MODEL_NAME,
            "vocab_size": self.vocab_size,
            "special_tokens": {name: {"token": SPECIAL_TOKENS[name], "id": i} for name, i in SPECIAL_IDS.items()},
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / MODEL_NAME).write_bytes(self._proto)
            (directory / VOCAB_NAME).write_text("".join(vocab_lines), encoding="utf-8")
            write_config(directory, config)
        except BaseException:
            for name in (MODEL_NAME, VOCAB_NAME, CONFIG_NAME):
                (directory / name).unlink(missing_ok=True)
            if created and directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
            raise

    @classmethod
    def load(cls, directory: str | Path, num_threads: int | None = None) -> SentencePieceTokenizer:
        """Read the model named in `tokenizer_config.json` (default `spm.model`) from `directory`."""
        directory = Path(directory)
        model_file = directory / read_config(directory).get("model_file", MODEL_NAME)
        if not model_file.is_file():
            raise InputError(f"{directory} has no {model_file.name}; a SentencePiece tokenizer directory needs one")
        return cls.from_file(model_file, num_threads)


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
