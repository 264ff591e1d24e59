"""The command line that trains a SentencePiece tokenizer with BERT's special tokens, run as

    python -m tokenizer.train --input corpus.txt more_texts/ --vocab-size 8000 --out runs/tok

(`tokenizer/train.py` only starts `main`. From Python, train with the function `tokenizer.train`, which is
`SentencePieceTokenizer.train`; import this module, not `tokenizer.train`, for `main` and `parse_args`: importing
a submodule binds its name on the package, and the package's name `train` is the function's.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import VOCAB_SIZE
from .training_text import LONG_LINES, MAX_LINE_CHARS, text_files
from .command import command_main
from .errors import InputError
from .spm_tokenizer import SentencePieceTokenizer
from .textfile import check_can_create, check_looks_like_text
from .spm_training import MODEL_TYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tokenizer.train",
        description="Train a SentencePiece tokenizer whose special tokens have BERT's ids: [PAD]=0 [UNK]=1 "
                    "[CLS]=2 [SEP]=3 [MASK]=4. Text is NFKC-normalised (full-width letters and digits become "
                    "half-width) and whitespace runs are folded to one space. The output directory gets "
                    "spm.model, spm.vocab and tokenizer_config.json, to be opened with tokenizer.load(DIR).",
        epilog="Exit status 2 and a message on stderr for bad input (missing, empty, binary or non-UTF-8 files, a "
               "vocabulary size the text cannot support, an option out of range, an output directory that already "
               "holds a tokenizer or cannot be written).",
    )
    parser.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE_OR_DIR",
                        help="UTF-8 text files, one sentence or paragraph per line (blank lines are skipped), or "
                             "directories searched recursively for .txt files")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory to write the tokenizer to (created if missing)")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, metavar="N",
                        help="number of tokens including the 5 special ones (default: %(default)s); ignored by "
                             "--model-type char, whose vocabulary is the characters kept")
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="unigram",
                        help="SentencePiece algorithm (default: %(default)s)")
    parser.add_argument("--character-coverage", type=float, default=0.9995, metavar="F",
                        help="share of character occurrences the vocabulary must cover; rarer characters become "
                             "[UNK] or, with --byte-fallback, UTF-8 bytes (default: %(default)s, suited to "
                             "Chinese; use 1.0 for small alphabets)")
    parser.add_argument("--byte-fallback", action="store_true",
                        help="spell characters outside the vocabulary as UTF-8 byte tokens instead of [UNK]; "
                             "adds 256 tokens (default: off)")
    parser.add_argument("--input-sentence-size", type=int, default=2_000_000, metavar="N",
                        help="train on a uniform random sample of at most N lines (default: %(default)s)")
    parser.add_argument("--num-threads", type=int, default=None, metavar="N",
                        help="training threads (default: all CPU cores)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed for sampling lines and for SentencePiece (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a tokenizer already in --out (default: refuse)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar while reading (default: shown for inputs of 4 MiB or more)")
    parser.add_argument("--long-lines", choices=LONG_LINES, default="split",
                        help=f"what to do with a line longer than {MAX_LINE_CHARS:,} characters, which SentencePiece "
                             "cannot train on in good time: split it after sentence punctuation (。！？!?；;), and "
                             f"every {MAX_LINE_CHARS:,} characters within a longer sentence, saying how many lines "
                             "were split; or refuse it, naming the file and line (default: %(default)s)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """The options' ranges, and that each input file looks like text, before any work; InputError names them."""
    if args.num_threads is not None and args.num_threads < 1:
        raise InputError("--num-threads must be at least 1 (leave it out for all CPU cores)")
    if not 0 <= args.seed < 2**32:
        raise InputError("--seed must be between 0 and 2**32 - 1")
    check_can_create(args.out, "--out")
    for path in text_files(args.input):  # InputError for a missing path or a directory without .txt files
        check_looks_like_text(path)


@command_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        SentencePieceTokenizer.train(
            args.input,
            args.vocab_size,
            args.out,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            byte_fallback=args.byte_fallback,
            input_sentence_size=args.input_sentence_size,
            num_threads=args.num_threads,
            seed=args.seed,
            force=args.force,
            progress=False if args.no_progress else None,
            long_lines=args.long_lines,
        )
    except OSError as err:  # an output that cannot be written (read-only, a path through a file, a full disk)
        raise InputError(f"{err.filename or args.out}: {err.strerror or err}") from None
    return 0
