"""The corpus as pretraining sees it: the corpus (--corpus files, read as a stream, or the built-in text), the
tokenizer (--tokenizer, the --init run's, or one trained on a sample of the corpus), the token shards
(`train.shards`, in the run's data/ or --data-cache), the packed blocks with a fixed share held out
(`train.packing`), and the objective that turns blocks into batches.

Nothing holds the corpus in memory: the tokenizer's sample is at most --tokenizer-sample lines, the shards are read
through memory maps, and the blocks are index arithmetic over them. Also here: how the run directory is claimed
and given up around the shards, so that a tokenization interrupted by a signal continues where it stopped.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from minibert.files import remove_leftovers
from minibert.rundir import OutDir, OutState, RunDir, claim
from tokenizer.training_text import Reservoir
from train.builtin_data import builtin_pretraining_texts
from train.checkpoints import PRETRAIN_ENTRIES, PRETRAIN_RUN
from train.corpus_files import BadFiles, corpus_files, stream_documents
from train.device import Dist
from train.objectives import Objective, make_objective
from train.packing import PackedBlocks, split_blocks, write_layout
from train.pretrain_options import DEFAULT_BUILTIN_CORPUS, DEFAULT_TOKENIZER_CORPUS, PretrainArgs
from train.shards import Tokenization, default_workers, tokenize_files, tokenize_texts


@dataclass
class CorpusSource:
    """What a run pretrains on: the --corpus files (read as a stream, by worker processes), or the built-in texts
    (7 MB, held in memory as the built-in tasks hold them)."""

    files: list[Path] | None = None
    texts: list[str] | None = None


def open_corpus(args: PretrainArgs) -> CorpusSource:
    """The corpus, before any work: the files --corpus stands for (InputError for a path that is not there), or the
    built-in text."""
    if args.corpus:
        return CorpusSource(files=corpus_files(args.corpus))
    return CorpusSource(texts=builtin_pretraining_texts(part=args.builtin_corpus or DEFAULT_BUILTIN_CORPUS))


def auto_model_type(texts: list[str], sample: int = 2000) -> str:
    """"char" when most letters of a sample are CJK (Chinese BERT tokenizes those one character each), else "unigram"."""
    from tokenizer.chars import is_cjk

    step = max(1, len(texts) // sample)
    letters = [c for t in texts[::step] for c in t if c.isalpha()]
    cjk = sum(map(is_cjk, letters))
    return "char" if letters and cjk > 0.5 * len(letters) else "unigram"


def tokenizer_text(args: PretrainArgs, source: CorpusSource, bad: BadFiles) -> list[str]:
    """The lines a new tokenizer learns from: the built-in --tokenizer-corpus; or all the lines of --corpus, in
    order, when there are at most --tokenizer-sample, else a uniform sample of that many, read as a stream (a file
    found bad half-way is taken back out of the sample)."""
    if source.files is None:
        return builtin_pretraining_texts(part=args.tokenizer_corpus or DEFAULT_TOKENIZER_CORPUS)
    sample = Reservoir(args.tokenizer_sample, seed=0)
    total = sum(f.stat().st_size for f in source.files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="reading lines for the tokenizer", dynamic_ncols=True,
              disable=not args.progress) as bar:
        for text in stream_documents(source.files, bad, bar, sample.mark, sample.back_to):
            sample.add_text(text)
    if sample.seen > len(sample.kept):
        print(f"the tokenizer learns from a sample of {len(sample.kept):,} of the corpus's {sample.seen:,} lines "
              "(--tokenizer-sample)", flush=True)
    return sample.kept


def get_tokenizer(args: PretrainArgs, out: Path, source: CorpusSource, d: Dist, resumed: bool, bad: BadFiles):
    """A resumed run's own tokenizer (out/tokenizer); for a new run the one --tokenizer names, or one trained on
    the corpus, saved to out/tokenizer. A new run's directory holds no tokenizer (`claim_run` cleared it), so a
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
    if d.main:
        texts = tokenizer_text(args, source, bad)
        model_type = args.tokenizer_model if args.tokenizer_model != "auto" else auto_model_type(texts)
        print(f"training a {model_type} SentencePiece tokenizer (at most {args.vocab_size} pieces) ...", flush=True)
        tok_pkg.SentencePieceTokenizer.train(texts, args.vocab_size, tok_dir, model_type=model_type,
                                             input_sentence_size=args.tokenizer_sample)
        del texts
    if d.world > 1:
        dist.barrier()
    return tok_pkg.load(tok_dir)


@dataclass
class Data:
    """The corpus as the loop sees it: the tokenizer, the packed blocks (a fixed share held out; views that read
    the blocks asked for from the shards) and the objective that turns blocks into batches (`eval_objective`: the
    same, masking token by token, so held-out losses compare across runs)."""

    tok: object
    n_blocks: int
    train_blocks: object
    eval_blocks: object
    objective: Objective
    eval_objective: Objective
    n_texts: int = 0


def tokenize(t: Tokenization, source: CorpusSource, build: bool = True):
    return tokenize_files(t, source.files, build) if source.files is not None else tokenize_texts(t, source.texts,
                                                                                                   build)


def prepare_data(args: PretrainArgs, out: Path, source: CorpusSource, d: Dist, resumed: bool) -> Data:
    """Corpus -> tokenizer -> token shards and the block layout (rank 0 writes them, the others read them) ->
    the training and held-out blocks, and the objective."""
    bad = BadFiles(args.bad_files, warn=None if d.main else (lambda line: None))
    tok = get_tokenizer(args, out, source, d, resumed, bad)
    t = Tokenization(tok, out / "tokenizer", Path(args.data_cache) if args.data_cache else out / "data",
                     args.workers or default_workers(), bad, progress=args.progress and d.main,
                     log=print if d.main else (lambda line: None), own_cache=args.data_cache is None)
    if d.main:
        write_layout(tokenize(t, source), args.max_seq_length)
        if (note := bad.summary(len(source.files or []))) is not None:
            print(note, flush=True)
    if d.world > 1:
        dist.barrier()
    stream = tokenize(t, source, build=False)
    blocks = PackedBlocks(stream, args.max_seq_length, tok.cls_token_id, tok.sep_token_id)
    train_blocks, eval_blocks = split_blocks(blocks, args.eval_fraction, args.seed)
    word_start = torch.from_numpy(tok.word_start) if args.whole_word_mask else None
    settings = dict(mlm_probability=args.mlm_probability, generator_size=args.generator_size,
                    discriminator_weight=args.discriminator_weight, share_embeddings=args.share_embeddings)
    return Data(tok, len(blocks), train_blocks, eval_blocks,
                make_objective(args.objective, tok, word_start=word_start, **settings),
                make_objective(args.objective, tok, word_start=None, **settings), stream.n_docs)


# ----------------------------------------------------------------------------------------------------------------
# the run directory around the shards


def claim_run(out: OutDir, args: PretrainArgs, resumed: bool) -> RunDir:
    """`claim` the run directory. A new run where a run stopped before its first checkpoint clears what that run
    wrote, as `claim` does, except its token shards (data/): they are named by what they were made from, so only
    what this run's corpus and tokenizer need is read, and the rest is tokenized. --force clears them too."""
    keep = not resumed and not args.force and out.state is OutState.RUN and (out.path / "data").is_dir()
    owned = claim(out, PRETRAIN_RUN, PRETRAIN_ENTRIES, clear=not resumed and not keep)
    if keep:
        stale = [name for name in owned.entries if name != "data"]
        remove_leftovers(out.path, stale)
        for name in stale:
            path = out.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        print(f"note: keeping the token shards in {out.path / 'data'}", flush=True)
    return owned


def give_up(owned: RunDir, interrupted: bool) -> None:
    """A new run that ends before its first checkpoint removes what it wrote (and its directory, if it made it);
    but one stopped by a signal keeps the token shards it wrote, so that the same command continues the
    tokenization where it stopped."""
    data = owned.path / "data"
    if interrupted and data.is_dir() and any(data.glob("tokens-*/*.json")):
        owned.close()
        print(f"note: the token shards written so far are kept in {data}; the same command continues from them",
              file=sys.stderr, flush=True)
    else:
        owned.release()
