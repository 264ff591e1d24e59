"""Entity-level scores of a named-entity tagger, as pure functions of BIO tag sequences.

A tag is "O", "B-X" or "I-X" for an entity type X. The entities of a sequence follow the CoNLL rule (the conlleval
script's, which seqeval's default mode also follows): an entity of type X starts at B-X, or at an I-X that follows O
or a tag of another type (a tagger's I-X after O is read as an entity, not thrown away); it continues over the I-X
tags of the same type right after it. An entity is an exact (type, start, end) triple, so a predicted entity is
correct only with the gold entity's exact span and type:

    G = gold entities, P = predicted entities (of every sentence), C = G ∩ P
    precision = |C| / |P|        recall = |C| / |G|        F1 = 2 precision recall / (precision + recall)

micro-averaged: every entity counts the same, whatever its type; per type, the same over the entities of that type.
A ratio whose denominator is 0 (nothing predicted, nothing to find) is 0, as in `train.metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from train.metrics import mean_and_std

SCORES = ("precision", "recall", "f1")


def _split_tag(tag: str) -> tuple[str, str | None]:
    """("O", None), ("B", X) or ("I", X); ValueError for anything else."""
    if tag == "O":
        return "O", None
    prefix, dash, kind = tag.partition("-")
    if prefix not in ("B", "I") or not dash or not kind:
        raise ValueError(f"{tag!r} is not a BIO tag (O, B-X or I-X)")
    return prefix, kind


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as (type, start, end exclusive), in order, by the CoNLL rule."""
    found: list[tuple[str, int, int]] = []
    kind, start = None, 0  # the open entity's type (None: none open) and first position
    for i, tag in enumerate(tags):
        prefix, tag_kind = _split_tag(tag)
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            found.append((kind, start, i))
            kind = None
        if prefix != "O" and not continues:
            kind, start = tag_kind, i
    if kind is not None:
        found.append((kind, start, len(tags)))
    return found


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _scores(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def ner_report(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro precision, recall and F1 over entities, the same per entity type (with its number of gold entities,
    "support"), the fraction of tokens tagged right, and the entity counts; one sentence per item of `gold` and
    `predicted`, whose lengths must agree. Entities never cross sentences."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    gold_counts, predicted_counts, correct_counts = Counter(), Counter(), Counter()
    tokens = right_tokens = 0
    for g, p in zip(gold, predicted):
        if len(g) != len(p):
            raise ValueError(f"a sentence of {len(g)} gold tags has {len(p)} predicted tags")
        g_entities, p_entities = set(entities(g)), set(entities(p))
        gold_counts.update(e[0] for e in g_entities)
        predicted_counts.update(e[0] for e in p_entities)
        correct_counts.update(e[0] for e in g_entities & p_entities)
        tokens += len(g)
        right_tokens += sum(a == b for a, b in zip(g, p))
    n_gold, n_predicted, n_correct = (sum(c.values()) for c in (gold_counts, predicted_counts, correct_counts))
    return {
        **_scores(n_correct, n_predicted, n_gold),
        # every type either side has: a type the tagger invents scores 0 with support 0, as in seqeval
        "per_type": {kind: {**_scores(correct_counts[kind], predicted_counts[kind], gold_counts[kind]),
                            "support": gold_counts[kind]}
                     for kind in sorted(gold_counts.keys() | predicted_counts.keys())},
        "token_accuracy": _ratio(right_tokens, tokens),
        "entities": {"gold": n_gold, "predicted": n_predicted, "correct": n_correct},
    }


def format_ner_report(report: dict, title: str = "") -> str:
    """A plain-text table: precision, recall and F1 in % per entity type and micro-averaged, with the number of
    gold entities; then the token accuracy and the entity counts."""
    names = list(report["per_type"])
    width = max(8, *(len(n) for n in names)) + 2 if names else 10
    lines = [title] if title else []
    lines.append(f"{'type':<{width}}{'P %':>9}{'R %':>9}{'F1 %':>9}{'gold':>9}")
    rows = [(name, s, s["support"]) for name, s in report["per_type"].items()]
    rows.append(("micro", report, report["entities"]["gold"]))
    for name, s, support in rows:
        lines.append(f"{name:<{width}}" + "".join(f"{100 * s[k]:>9.2f}" for k in SCORES) + f"{support:>9d}")
    e = report["entities"]
    lines.append(f"token accuracy {100 * report['token_accuracy']:.2f}%  entities: {e['gold']} gold, "
                 f"{e['predicted']} predicted, {e['correct']} correct")
    return "\n".join(lines)


def summarize_ner_reports(reports: Sequence[dict]) -> dict:
    """Mean and sample std over runs of the micro scores, the token accuracy and each type's F1 (a type absent from
    a run's report counts as 0 there)."""
    summary = {k: mean_and_std([r[k] for r in reports]) for k in (*SCORES, "token_accuracy")}
    for kind in sorted({t for r in reports for t in r["per_type"]}):
        summary[f"f1[{kind}]"] = mean_and_std([r["per_type"].get(kind, {"f1": 0.0})["f1"] for r in reports])
    return summary
