"""Tokenizer throughput: minibert's SentencePiece batch encoding against the `tokenizers` fast BERT tokenizer.

Both encode the same review texts. The SentencePiece model is trained on those texts by the project's `tokenizer`
package (`SentencePieceTokenizer.train`), or by `sentencepiece` directly if that package is not importable. The
fast BERT tokenizer (`transformers.BertTokenizerFast`, Rust `tokenizers` underneath) gets a WordPiece vocabulary
built in memory from the texts' characters: the five special tokens, each character, and "##c" continuations
for ASCII letters and digits, so it tokenizes Chinese per character as Chinese BERT does. No download.

Two comparisons, each alternated A B A B over repeated runs:
    plain   ids of each text, no special tokens (minibert `encode_plain`; transformers add_special_tokens=False)
    batch   [CLS] text [SEP], cut to max_length and padded to tensors (minibert `encode_batch`; transformers
            padding="longest", truncation=True, return_tensors="pt")
Figures: texts/s, characters/s, and tokens/s (tokens produced; the two vocabularies cut text differently).
Before timing, the WordPiece tokenizer must reproduce the character map's ids on the texts' CJK characters.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable

from .data import SPECIAL_TOKENS, CharVocab
from .timing import alternate

MINIBERT = "minibert-sentencepiece"
HF = "tokenizers-wordpiece"


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


class _SentencePieceFallback:
    """`sentencepiece` trained directly, for when the project's tokenizer package is not importable."""

    def __init__(self, texts: list[str], vocab_size: int, threads: int):
        import sentencepiece as spm

        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
            character_coverage=0.9995, pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2,
        )
        self._sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
        self.num_threads = threads
        self.vocab_size = self._sp.get_piece_size()

    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts, out_type=int, num_threads=self.num_threads)


def sentencepiece_tokenizer(texts: list[str], vocab_size: int, threads: int):
    """(tokenizer, description): the project's SentencePieceTokenizer if available, else the fallback."""
    try:
        from tokenizer import SentencePieceTokenizer
    except ImportError:
        SentencePieceTokenizer = None
    if SentencePieceTokenizer is not None:
        try:
            with tempfile.TemporaryDirectory() as out_dir:
                tok = SentencePieceTokenizer.train(texts, vocab_size, os.path.join(out_dir, "spm"),
                                                   num_threads=threads, verbose=False)
        except TypeError:  # a train() without these options: the package's interface has moved on
            tok = None
        if tok is not None:
            tok.num_threads = threads
            return tok, "tokenizer.SentencePieceTokenizer (project package)"
    return _SentencePieceFallback(texts, vocab_size, threads), "sentencepiece (trained directly; no tokenizer package)"


def wordpiece_tokenizer(texts: list[str]):
    """transformers' fast BERT tokenizer over an in-memory vocabulary of the texts' characters."""
    from transformers import BertTokenizerFast

    vocab = CharVocab(texts, vocab_size=10**9).token_map()
    for ch in sorted({ch for text in texts for ch in text.lower() if ch.isascii() and ch.isalnum()}):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("##" + ch, len(vocab))
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True), vocab


def check_wordpiece(tok, vocab: dict[str, int], texts: list[str]) -> None:
    """The WordPiece tokenizer must give each CJK character its own id from `vocab`."""
    for text in texts[:200]:
        cjk = "".join(ch for ch in text if _is_cjk(ch))[:64]
        if not cjk:
            continue
        got = tok(cjk, add_special_tokens=False)["input_ids"]
        want = [vocab.get(ch, vocab[SPECIAL_TOKENS[1]]) for ch in cjk]
        if got != want:
            raise RuntimeError(f"the WordPiece tokenizer does not split {cjk[:20]!r}... per character: {got[:10]}")


def _token_count(result) -> int:
    """Tokens produced: real (unpadded) ids of a padded batch, or the summed lengths of id lists."""
    if hasattr(result, "keys"):
        mask = result.get("attention_mask")
        if hasattr(mask, "sum"):
            return int(mask.sum())
        result = result["input_ids"]
    return sum(map(len, result))


def benchmark(texts: list[str], vocab_size: int, repeats: int, threads: int, max_length: int,
              timer: Callable[[Callable[[], None]], float]) -> dict:
    """Train both tokenizers on `texts`, check the WordPiece one, time both comparisons; a dict for the report."""
    sp, sp_source = sentencepiece_tokenizer(texts, vocab_size, threads)
    wp, wp_vocab = wordpiece_tokenizer(texts)
    check_wordpiece(wp, wp_vocab, texts)
    n_chars = sum(map(len, texts))
    comparisons = {
        "plain": {
            MINIBERT: lambda: sp.encode_plain(texts),
            HF: lambda: wp(texts, add_special_tokens=False),
        },
    }
    if hasattr(sp, "encode_batch"):
        comparisons["batch"] = {
            MINIBERT: lambda: sp.encode_batch(texts, max_length=max_length),
            HF: lambda: wp(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"),
        }
    results = {}
    for mode, fns in comparisons.items():
        tokens = {name: _token_count(fn()) for name, fn in fns.items()}
        stats = alternate(fns, 1, repeats, timer)
        rows = {}
        for name, s in stats.items():
            rows[name] = {
                "seconds": s.scaled(1.0),
                "texts_per_s": len(texts) / s.median,
                "chars_per_s": n_chars / s.median,
                "tokens_per_s": tokens[name] / s.median,
                "tokens": tokens[name],
            }
        for name in rows:
            rows[name]["speed_vs_tokenizers"] = stats[HF].median / stats[name].median
        results[mode] = rows
    return {
        "texts": len(texts),
        "chars": n_chars,
        "max_length": max_length,
        "threads": threads,
        "rayon_threads": os.environ.get("RAYON_NUM_THREADS", "default (all cores)"),
        "sentencepiece": {"source": sp_source, "vocab_size": sp.vocab_size},
        "wordpiece": {"source": "transformers.BertTokenizerFast, in-memory character vocabulary",
                      "vocab_size": len(wp_vocab)},
        "comparisons": results,
    }
