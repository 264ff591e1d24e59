"""train.ner_metrics: entities by the CoNLL rule, entity-level scores, checked by hand and against seqeval."""

from __future__ import annotations

import random
import warnings

import pytest

from train.ner_metrics import entities, format_ner_report, ner_report, summarize_ner_reports

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")


@pytest.mark.parametrize("tags, expected", [
    ([], []),
    (["O", "O"], []),
    (["B-PER", "I-PER", "O"], [("PER", 0, 2)]),
    # I- after O starts an entity, as does I- at the very start
    (["O", "I-LOC", "I-LOC", "O"], [("LOC", 1, 3)]),
    (["I-ORG", "O"], [("ORG", 0, 1)]),
    # a type change inside: the I- of another type ends the first entity and starts its own
    (["B-PER", "I-PER", "I-LOC", "I-LOC"], [("PER", 0, 2), ("LOC", 2, 4)]),
    (["B-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
    # B- right after an entity of the same type starts a new one
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    # an entity at the end, and a one-token one
    (["O", "O", "B-ORG", "I-ORG"], [("ORG", 2, 4)]),
    (["B-LOC"], [("LOC", 0, 1)]),
])
def test_entities_by_the_conll_rule(tags, expected):
    assert entities(tags) == expected


def test_a_malformed_tag_is_refused():
    with pytest.raises(ValueError, match="'PER'"):
        entities(["O", "PER"])
    with pytest.raises(ValueError, match="'B-'"):
        entities(["B-"])


def test_report_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-ORG", "I-ORG", "O"]]
    r = ner_report(gold, pred)
    # gold: PER 0-2, LOC 3-4, ORG 1-4; predicted: PER 0-2, PER 3-4, ORG 1-3; correct: PER 0-2 only
    assert r["entities"] == {"gold": 3, "predicted": 3, "correct": 1}
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(1 / 3)
    assert r["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert r["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_type"]["ORG"]["support"] == 1 and r["per_type"]["ORG"]["f1"] == 0.0  # a span one token short
    assert r["token_accuracy"] == pytest.approx(6 / 8)


def test_entities_do_not_cross_sentences():
    r = ner_report([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
    assert r["entities"] == {"gold": 2, "predicted": 2, "correct": 2} and r["f1"] == 1.0


@pytest.mark.parametrize("gold, pred", [
    ([], []),  # no sentences
    ([[]], [[]]),  # an empty sentence
    ([["O", "O"]], [["O", "O"]]),  # no entities at all
    ([["O", "O"]], [["B-PER", "O"]]),  # nothing to find, one false alarm
    ([["B-PER", "O"]], [["O", "O"]]),  # nothing predicted
])
def test_no_entities_score_zero_without_dividing_by_zero(gold, pred):
    r = ner_report(gold, pred)
    assert (r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0)
    assert r["entities"]["correct"] == 0
    assert r["token_accuracy"] == (1.0 if gold and gold[0] and gold == pred else
                                   0.5 if gold and gold[0] else 0.0)
    format_ner_report(r, "empty")  # prints without dividing by zero either


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        ner_report([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="3 predicted tags"):
        ner_report([["O", "O"]], [["O", "O", "O"]])


def test_format_shows_percent_per_type_and_micro():
    r = ner_report([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
    text = format_ner_report(r, "validation")
    lines = text.splitlines()
    assert lines[0] == "validation"
    assert lines[1].split() == ["type", "P", "%", "R", "%", "F1", "%", "gold"]
    assert lines[2].split() == ["LOC", "0.00", "0.00", "0.00", "1"]
    assert lines[3].split() == ["PER", "100.00", "100.00", "100.00", "1"]
    assert lines[4].split() == ["micro", "100.00", "50.00", "66.67", "2"]
    assert "token accuracy 75.00%" in lines[5] and "2 gold, 1 predicted, 1 correct" in lines[5]


def test_summary_over_runs():
    a = ner_report([["B-PER", "O"]], [["B-PER", "O"]])  # f1 1
    b = ner_report([["B-PER", "B-LOC"]], [["O", "B-LOC"]])  # f1 2/3, PER 0, LOC 1
    s = summarize_ner_reports([a, b])
    assert s["f1"]["mean"] == pytest.approx(5 / 6) and s["f1"]["n"] == 2
    assert s["f1[PER]"]["values"] == [1.0, 0.0]
    assert s["f1[LOC]"]["values"] == [0.0, 1.0]  # absent from the first run: 0 there


# -- against seqeval -----------------------------------------------------------------------------------------


def random_sentences(rng: random.Random, n: int) -> list[list[str]]:
    """Tag sequences of every kind, broken BIO included (I- after O, type changes), and some empty ones."""
    return [[rng.choice(TAGS) if rng.random() < 0.6 else "O" for _ in range(rng.randint(0, 12))] for _ in range(n)]


def perturbed(rng: random.Random, sentences: list[list[str]]) -> list[list[str]]:
    """A prediction close to `sentences`: each tag kept with probability 0.8, so that many entities are right."""
    return [[t if rng.random() < 0.8 else rng.choice(TAGS) for t in s] for s in sentences]


@pytest.mark.parametrize("seed", range(300))
def test_equal_to_seqeval_default_mode(seed):
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(seed)
    gold = random_sentences(rng, rng.randint(1, 8))
    pred = perturbed(rng, gold)
    for sentence in gold + pred:  # seqeval's spans end inclusive
        assert entities(sentence) == [(k, s, e + 1) for k, s, e in get_entities(sentence)]
    r = ner_report(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns where a ratio's denominator is 0 (and scores it 0)
        assert r["precision"] == pytest.approx(precision_score(gold, pred, zero_division=0), abs=1e-12)
        assert r["recall"] == pytest.approx(recall_score(gold, pred, zero_division=0), abs=1e-12)
        assert r["f1"] == pytest.approx(f1_score(gold, pred, zero_division=0), abs=1e-12)
        n_tokens = sum(map(len, gold))
        if n_tokens:
            assert r["token_accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
        reference = classification_report(gold, pred, output_dict=True, zero_division=0)
    types = {k: v for k, v in reference.items() if not k.endswith(" avg")}
    assert set(r["per_type"]) == set(types)
    for kind, scores in types.items():
        ours = r["per_type"][kind]
        assert ours["support"] == scores["support"]
        for ours_key, their_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[ours_key] == pytest.approx(float(scores[their_key]), abs=1e-12), (kind, ours_key)
    micro = reference["micro avg"]
    assert r["entities"]["gold"] == micro["support"]
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx(
        (float(micro["precision"]), float(micro["recall"]), float(micro["f1-score"])), abs=1e-12)
