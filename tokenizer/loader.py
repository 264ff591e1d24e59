"""Opening whichever kind of tokenizer a directory holds."""

from __future__ import annotations

from pathlib import Path

from .base import Tokenizer
from .config import CONFIG_NAME, read_config
from .errors import InputError
from .spm_tokenizer import MODEL_NAME, SentencePieceTokenizer
from .wordpiece import VOCAB_NAME, WordPieceTokenizer

KINDS: dict[str, type[Tokenizer]] = {
    SentencePieceTokenizer.kind: SentencePieceTokenizer,
    WordPieceTokenizer.kind: WordPieceTokenizer,
}


def load(directory: str | Path) -> Tokenizer:
    """The tokenizer saved in `directory`.

    The "kind" in `tokenizer_config.json` decides; without one, a directory with `vocab.txt` (a Hugging Face
    BERT checkpoint, whose config may set `do_lower_case`) opens as WordPiece, and one with `spm.model` as
    SentencePiece.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise InputError(f"{directory} {what}; give the directory a tokenizer was saved to")
    kind = read_config(directory).get("kind")
    if kind is not None:
        if kind not in KINDS:
            raise InputError(f"{directory / CONFIG_NAME} names an unknown tokenizer kind {kind!r}; expected one of "
                             f"{', '.join(KINDS)}")
        return KINDS[kind].load(directory)
    if (directory / VOCAB_NAME).is_file():
        return WordPieceTokenizer.load(directory)
    if (directory / MODEL_NAME).is_file():
        return SentencePieceTokenizer.load(directory)
    raise InputError(f"{directory} holds no tokenizer: expected {CONFIG_NAME}, {VOCAB_NAME} or {MODEL_NAME}")
