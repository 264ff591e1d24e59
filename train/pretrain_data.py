"""The corpus as pretraining sees it: the texts (--corpus or the built-in text), the tokenizer (--tokenizer, the
--init run's, or one trained on the corpus), the token cache in the run's data/ directory, the packed blocks with a
fixed slice held out, and the objective that turns blocks into batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from train.builtin_data import builtin_pretraining_texts
from train.device import Dist
from train.objectives import Objective, make_objective
from train.packing import pack_blocks, split_blocks, tokenize_to_cache
from train.pretrain_options import DEFAULT_BUILTIN_CORPUS, DEFAULT_TOKENIZER_CORPUS, PretrainArgs


def load_corpus(args: PretrainArgs) -> list[str]:
    if args.corpus:
        from train.corpus_files import read_texts

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
