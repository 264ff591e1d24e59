"""minibert's tokenizers as a Hugging Face fast tokenizer: `tokenizer.json` (the `tokenizers` library's format) with
`tokenizer_config.json` and `special_tokens_map.json`, which `transformers.AutoTokenizer.from_pretrained` opens as a
`PreTrainedTokenizerFast` that gives minibert's input_ids, token_type_ids and attention_mask, single texts and
pairs, padded and truncated at `model_max_length` (the rules of `tokenizer.encoding`: `[CLS] A [SEP] (B [SEP])`,
pairs cut longest first, which are the `tokenizers` library's own).

How each kind is rebuilt from its parts:

    WordPiece      BertNormalizer (clean_text, CJK spacing, accents, lower case as configured), BertPreTokenizer,
                   WordPiece over vocab.txt with "##" continuations and max_input_chars_per_word; the five special
                   tokens are recognised in raw text, as in BERT and `tokenizer.basic`
    SentencePiece  the model's own NFKC rules (its `precompiled_charsmap`, read from the model file), whitespace runs
                   folded to one space and trimmed, "▁" before the text and for each space (`Metaspace`, no
                   split: SentencePiece segments the whole text at once), then
                     unigram   Unigram over the pieces and their scores (the best-scoring segmentation; characters
                               outside the vocabulary are [UNK], a run of them one [UNK], or UTF-8 bytes with
                               byte fallback)
                     bpe       BPE whose merges are every split of a piece into two pieces, ranked by the merged
                               piece's score (SentencePiece merges the best-scoring adjacent pair first)
                     char      Unigram over the single characters (one segmentation only)
                   and literal "[CLS]", "[MASK]", ... in a text are plain text, as SentencePiece treats its control
                   symbols (`split_special_tokens` in tokenizer_config.json)

SentencePiece never matches its special pieces or its byte pieces (<0xE4>) against text, where a `tokenizers`
model matches every entry of its vocabulary. So the characters "[" and "<" that begin those names are rewritten
after normalisation to "［" and "＜" (which NFKC never leaves in a text), in the text and in the pieces alike: the
special and byte pieces, still named "[CLS]" and "<0xE4>", can no longer match. Where "[" or "<" is no piece and
byte fallback spells it as a byte, that byte piece is the one renamed, so it keeps its id. The decoder turns them
back.

Exact, but for three cases that come from the `tokenizers` implementation and are rare in real text (with
3,000-piece models of the built-in text, 8 of its 36,847 People's Daily and review lines differ for unigram, all of
the first case, and none for bpe or char): (1) unigram: SentencePiece adds scores in float32, `tokenizers` in
float64, so of two segmentations with the same score (the same pieces in another order, "11" + "1" against
"1" + "11") or scores within float32 rounding, each may choose another; (2) bpe: when two different pairs that merge
into the same piece are both present in one text, SentencePiece merges the leftmost and `tokenizers` the one ranked
first; (3) the `tokenizers` port of the NFKC rules works per grapheme, so a character the rules change followed by
a combining mark (the circled "Ⓣ" then U+06DF) loses the mark. A SentencePiece "word" model, and models built with
options minibert's trainer does not use (no dummy prefix, whitespace kept or as a suffix, user-defined or unused
pieces), have no such form: `unsupported_reason` says why, and the export writes `save_placeholder`'s file instead.

Needs the `tokenizers` package (imported only when exporting); imports nothing of the model.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .base import Tokenizer
from .config import SPECIAL_TOKENS
from .errors import InputError
from .spm_proto import fields
from .spm_tokenizer import WORD_BOUNDARY, SentencePieceTokenizer
from .wordpiece import CONTINUATION, WordPieceTokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
#: What `save_for_transformers` writes, and the one file `save_placeholder` writes when there is no exact form.
TRANSFORMERS_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
PLACEHOLDER_FILES = (TOKENIZER_CONFIG,)

# Characters that begin the names of the pieces SentencePiece never matches against text ([CLS], <0xE4>), and
# what they become in the exported tokenizer: their full-width forms, which NFKC maps back to them.
RENAMED = {"[": "\uff3b", "<": "\uff1c"}

# The field numbers read below are listed in `tokenizer/spm_proto.py`.
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# -- reading a SentencePiece model file --------------------------------------------------------------------------


@dataclass(frozen=True)
class SentencePieceModel:
    """What the export needs of a SentencePiece `.model` file (a serialized ModelProto)."""

    pieces: list[tuple[str, float, int]]  # (piece, score, type) in id order
    model_type: str  # unigram, bpe, word or char
    byte_fallback: bool
    charsmap: bytes  # the normalisation rules, compiled; empty for the identity
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool
    escape_whitespaces: bool
    whitespace_as_suffix: bool

    @classmethod
    def parse(cls, proto: bytes) -> SentencePieceModel:
        pieces, trainer, normalizer = [], {}, {}
        for number, value in fields(proto):
            if number == 1:
                piece = {1: b"", 2: b"\0\0\0\0", 3: NORMAL} | dict(fields(value))
                pieces.append((bytes(piece[1]).decode("utf-8"), struct.unpack("<f", piece[2])[0], piece[3]))
            elif number == 2:
                trainer = dict(fields(value))
            elif number == 3:
                normalizer = dict(fields(value))
        return cls(
            pieces=pieces,
            model_type=MODEL_TYPES.get(trainer.get(3, 1), "unknown"),
            byte_fallback=bool(trainer.get(35, 0)),
            charsmap=bytes(normalizer.get(2, b"")),
            add_dummy_prefix=bool(normalizer.get(3, 1)),
            remove_extra_whitespaces=bool(normalizer.get(4, 1)),
            escape_whitespaces=bool(normalizer.get(5, 1)),
            whitespace_as_suffix=bool(trainer.get(24, 0)),
        )


def _spm_model(tok: SentencePieceTokenizer) -> SentencePieceModel:
    # The model's bytes, as the tokenizer was given them (the same package: read, not changed).
    try:
        return SentencePieceModel.parse(tok._proto)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as err:
        raise InputError(f"the SentencePiece model cannot be read for export ({err})") from None


# -- can it be exported exactly ----------------------------------------------------------------------------------


def require_tokenizers() -> None:
    """InputError unless the `tokenizers` package, which writes tokenizer.json, can be imported."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise InputError("exporting a tokenizer for transformers needs the tokenizers package; install it with "
                         "`pip install tokenizers` (transformers installs it too)") from None


def unsupported_reason(tok: Tokenizer) -> str | None:
    """Why `tok` has no exact transformers form, as one clause ("a SentencePiece word model ..."), or None.
    InputError when the `tokenizers` package is missing."""
    require_tokenizers()
    if isinstance(tok, WordPieceTokenizer):
        return None
    if not isinstance(tok, SentencePieceTokenizer):
        return f"a {tok.kind or type(tok).__name__} tokenizer has no transformers form"
    model = _spm_model(tok)
    if model.model_type not in ("unigram", "bpe", "char"):
        return (f"a SentencePiece {model.model_type} model has no exact transformers form (SentencePiece splits "
                "its words in a way `tokenizers` cannot reproduce); train the tokenizer with --model-type unigram, "
                "bpe or char for one")
    options = [name for name, wrong in (
        ("no dummy prefix", not model.add_dummy_prefix),
        ("whitespace kept as it is", not model.remove_extra_whitespaces),
        ("spaces not escaped", not model.escape_whitespaces),
        ("whitespace as a suffix", model.whitespace_as_suffix),
        ("user-defined or unused pieces", any(t in (USER_DEFINED, UNUSED) for _, _, t in model.pieces)),
    ) if wrong]
    if options:
        return (f"this SentencePiece model was trained with options minibert's trainer does not use "
                f"({', '.join(options)}), which the exported tokenizer does not reproduce")
    normal = {p for p, _, t in model.pieces if t == NORMAL}
    for char, stand_in in RENAMED.items():
        if any(stand_in in p for p in normal):
            return f"a piece of this SentencePiece model holds {stand_in!r}, which the export uses as a stand-in"
        if model.byte_fallback and char not in normal and any(char in p for p in normal):
            return (f"this SentencePiece model spells {char!r} as a byte but has longer pieces holding it, which "
                    "the exported tokenizer cannot score the same way")
    if any(_normalizer(model).normalize_str(c) == c for c in RENAMED.values()):
        return "this SentencePiece model's normalisation keeps full-width brackets, which the export relies on"
    return None


# -- the tokenizers.Tokenizer ------------------------------------------------------------------------------------


def _normalizer(model: SentencePieceModel):
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([
        *([normalizers.Precompiled(model.charsmap)] if model.charsmap else []),
        normalizers.Replace(Regex(" {2,}"), " "),  # SentencePiece's remove_extra_whitespaces
        normalizers.Strip(left=True, right=True),
    ])


def _spm_backend(model: SentencePieceModel, tok: SentencePieceTokenizer):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE, Unigram

    names = [p for p, _, _ in model.pieces]
    normal = {p for p, _, t in model.pieces if t == NORMAL}
    byte_ids = {p: i for i, (p, _, t) in enumerate(model.pieces) if t == BYTE}
    lowest = min((s for _, s, t in model.pieces if t == NORMAL), default=0.0)
    scores = [s for _, s, _ in model.pieces]
    for i, (piece, _, kind) in enumerate(model.pieces):
        if kind == NORMAL:
            names[i] = _renamed(piece)
    if model.byte_fallback:
        for char, stand_in in RENAMED.items():
            if char not in normal:
                # SentencePiece spells the character as this byte piece, which takes the stand-in's name. It is
                # the only piece covering the character, so its score shifts every segmentation alike; the lowest
                # normal score leaves the minimum, from which both libraries derive the [UNK] score, unchanged.
                i = byte_ids[f"<0x{ord(char):02X}>"]
                names[i], scores[i] = stand_in, lowest
    if model.model_type == "bpe":
        backend = HFTokenizer(BPE({name: i for i, name in enumerate(names)}, _bpe_merges(model, names),
                                  unk_token=SPECIAL_TOKENS["unk"], fuse_unk=True, byte_fallback=model.byte_fallback))
    else:
        backend = HFTokenizer(Unigram(list(zip(names, scores)), tok.unk_token_id, model.byte_fallback))
    backend.normalizer = normalizers.Sequence([
        _normalizer(model), *(normalizers.Replace(char, stand_in) for char, stand_in in RENAMED.items()),
    ])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always", split=False)
    backend.decoder = decoders.Sequence([
        *(decoders.Replace(stand_in, char) for char, stand_in in RENAMED.items()),
        decoders.ByteFallback(), decoders.Fuse(),
        decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always", split=False),
    ])
    return backend


def _renamed(piece: str) -> str:
    for char, stand_in in RENAMED.items():
        piece = piece.replace(char, stand_in)
    return piece


def _bpe_merges(model: SentencePieceModel, names: list[str]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two normal pieces, the merges of the best-scoring pieces first."""
    normal = {names[i] for i, (_, _, t) in enumerate(model.pieces) if t == NORMAL}
    ranked = sorted((-score, i) for i, (_, score, t) in enumerate(model.pieces) if t == NORMAL)
    merges = []
    for _, i in ranked:
        piece = names[i]
        merges.extend((piece[:k], piece[k:]) for k in range(1, len(piece))
                      if piece[:k] in normal and piece[k:] in normal)
    return merges


def _wordpiece_backend(tok: WordPieceTokenizer):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}  # a duplicated line keeps its last id, as ours
    backend = HFTokenizer(WordPiece(vocab, unk_token=SPECIAL_TOKENS["unk"],
                                    max_input_chars_per_word=tok.max_input_chars_per_word,
                                    continuing_subword_prefix=CONTINUATION))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=tok.tokenize_chinese_chars, strip_accents=tok.strip_accents,
        lowercase=tok.do_lower_case)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return backend


def backend_tokenizer(tok: Tokenizer):
    """The `tokenizers.Tokenizer` that gives `tok`'s ids (the module doc); InputError where there is none."""
    from tokenizers import AddedToken, processors

    reason = unsupported_reason(tok)
    if reason is not None:
        raise InputError(reason)
    if isinstance(tok, WordPieceTokenizer):
        backend = _wordpiece_backend(tok)
    else:
        backend = _spm_backend(_spm_model(tok), tok)
    cls, sep = SPECIAL_TOKENS["cls"], SPECIAL_TOKENS["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.cls_token_id), (sep, tok.sep_token_id)])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS.values()])
    return backend


# -- the files ---------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_for_transformers(tok: Tokenizer, directory: str | Path, model_max_length: int) -> tuple[str, ...]:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `directory` (which must
    exist) for `AutoTokenizer.from_pretrained`; truncation=True cuts at `model_max_length`. Returns the names
    written. InputError, before anything is written, where `tok` has no exact form (`unsupported_reason`)."""
    backend = backend_tokenizer(tok)
    directory = Path(directory)
    backend.save(str(directory / TOKENIZER_JSON))
    specials = {f"{name}_token": token for name, token in SPECIAL_TOKENS.items()}
    _write_json(directory / TOKENIZER_CONFIG, {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(model_max_length),
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "padding_side": "right",
        "truncation_side": "right",
        # SentencePiece reads "[MASK]" in a text as text; BERT's WordPiece as the token.
        "split_special_tokens": isinstance(tok, SentencePieceTokenizer),
        "clean_up_tokenization_spaces": False,
        **specials,
    })
    _write_json(directory / SPECIAL_TOKENS_MAP, specials)
    return TRANSFORMERS_FILES


def save_placeholder(directory: str | Path, reason: str, instead: str) -> tuple[str, ...]:
    """Where there is no exact form: a `tokenizer_config.json` that names no tokenizer, so that
    `AutoTokenizer.from_pretrained(directory)` fails instead of making one up from the model's config (a BERT
    tokenizer with no vocabulary reads every character as [UNK]); it says why and what to use instead."""
    _write_json(Path(directory) / TOKENIZER_CONFIG, {
        "tokenizer_class": "TokenizersBackend",
        "minibert_note": f"no transformers tokenizer: {reason}; {instead}",
    })
    return PLACEHOLDER_FILES
