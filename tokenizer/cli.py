"""The command line that trains a SentencePiece tokenizer with BERT's special tokens, run as

    python -m tokenizer.train --input corpus.txt more_texts/ --vocab-size 8000 --out runs/tok

(`tokenizer/train.py` only starts `main`. From Python, train with the function `tokenizer.train`, which is
`SentencePieceTokenizer.train`; import this module, not `tokenizer.train`, for `main`, `parse_args` and the
options, `TrainOptions`: importing a submodule binds its name on the package, and the package's name `train` is the
function's.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import VOCAB_SIZE
from .training_text import LONG_LINES, MAX_LINE_CHARS, text_files
from .command import command_main, opt, parse_options
from .errors import InputError
from .spm_tokenizer import SentencePieceTokenizer
from .textfile import check_can_create, check_looks_like_text
from .spm_training import MODEL_TYPES


DESCRIPTION = ("Train a SentencePiece tokenizer whose special tokens have BERT's ids: [PAD]=0 [UNK]=1 [CLS]=2 "
               "[SEP]=3 [MASK]=4. Text is NFKC-normalised (full-width letters and digits become half-width) and "
               "whitespace runs are folded to one space. The output directory gets spm.model, spm.vocab and "
               "tokenizer_config.json, to be opened with tokenizer.load(DIR).")
EPILOG = ("Exit status 2 and a message on stderr for bad input (missing, empty, binary or non-UTF-8 files, a "
          "vocabulary size the text cannot support, an option out of range, an output directory that already holds "
          "a tokenizer or cannot be written).")


@dataclass
class TrainOptions:
    """The options of `python -m tokenizer.train`."""

    input: list[Path] = opt(None, "UTF-8 text files, one sentence or paragraph per line (blank lines are skipped), "
                            "or directories searched recursively for .txt files", required=True, nargs="+",
                            metavar="FILE_OR_DIR")
    out: Path = opt(None, "directory to write the tokenizer to (created if missing)", required=True, metavar="DIR")
    vocab_size: int = opt(VOCAB_SIZE, "number of tokens including the 5 special ones; ignored by --model-type char, "
                          "whose vocabulary is the characters kept", metavar="N")
    model_type: str = opt("unigram", "SentencePiece algorithm", choices=MODEL_TYPES)
    character_coverage: float = opt(0.9995, "share of character occurrences the vocabulary must cover; rarer "
                                    "characters become [UNK] or, with --byte-fallback, UTF-8 bytes (the default "
                                    "suits Chinese; use 1.0 for small alphabets)", metavar="F")
    byte_fallback: bool = opt(False, "spell characters outside the vocabulary as UTF-8 byte tokens instead of "
                              "[UNK]; adds 256 tokens", action="store_true")
    input_sentence_size: int = opt(2_000_000, "train on a uniform random sample of at most N lines", metavar="N")
    num_threads: int | None = opt(None, "training threads; none: all CPU cores", metavar="N")
    seed: int = opt(0, "random seed for sampling lines and for SentencePiece")
    force: bool = opt(False, "overwrite a tokenizer already in --out (without it: refuse)", action="store_true")
    no_progress: bool = opt(False, "no progress bar while reading (shown for inputs of 4 MiB or more)",
                            action="store_true")
    long_lines: str = opt("split", f"what to do with a line longer than {MAX_LINE_CHARS:,} characters, which "
                          "SentencePiece cannot train on in good time: split it after sentence punctuation "
                          f"(。！？!?；;), and every {MAX_LINE_CHARS:,} characters within a longer sentence, saying how "
                          "many lines were split; or refuse it, naming the file and line", choices=LONG_LINES)


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    return parse_options(TrainOptions, argv, DESCRIPTION, "python -m tokenizer.train", EPILOG)[0]


def check_args(args: TrainOptions) -> None:
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
