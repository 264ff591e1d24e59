"""train.metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from train import metrics

# Confusion matrix (rows true, columns predicted):
#            pred 0  pred 1  pred 2
#   true 0      5       1       0      6 examples
#   true 1      2       3       1      6
#   true 2      0       0       4      4
M = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]


def arrays_from(m):
    labels, predictions = [], []
    for i, row in enumerate(m):
        for j, count in enumerate(row):
            labels += [i] * count
            predictions += [j] * count
    return np.array(labels), np.array(predictions)


def test_confusion_matrix_and_scores_by_hand():
    labels, predictions = arrays_from(M)
    report = metrics.classification_report(labels, predictions, 3, ["a", "b", "c"])
    assert report["confusion_matrix"] == M
    assert report["n"] == 16
    assert report["accuracy"] == pytest.approx(12 / 16)
    # precision = diagonal / column sum (7, 4, 5); recall = diagonal / row sum (6, 6, 4)
    p = [5 / 7, 3 / 4, 4 / 5]
    r = [5 / 6, 3 / 6, 4 / 4]
    f1 = [2 * a * b / (a + b) for a, b in zip(p, r)]  # 10/13, 3/5, 8/9
    assert f1 == pytest.approx([10 / 13, 3 / 5, 8 / 9])
    for k, name in enumerate("abc"):
        s = report["per_class"][name]
        assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((p[k], r[k], f1[k]))
        assert s["support"] == sum(M[k])
    assert report["macro_f1"] == pytest.approx((10 / 13 + 3 / 5 + 8 / 9) / 3)


def test_a_class_never_predicted_scores_zero_not_nan():
    report = metrics.classification_report([0, 0, 1, 2], [0, 0, 0, 2], 3)
    assert report["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((0.8 + 0 + 1) / 3)  # class 0: p = 2/3, r = 1, F1 = 0.8


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 4)) * 5
    labels = rng.integers(0, 4, size=10)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert metrics.cross_entropy(logits, labels) == pytest.approx(expected)
    assert metrics.cross_entropy(np.array([[1000.0, 0.0]]), [1]) == pytest.approx(1000.0)  # no overflow


def test_mean_and_sample_std():
    s = metrics.mean_and_std([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    assert metrics.mean_and_std([0.5])["std"] == 0.0


def test_summary_and_tables_print():
    labels, predictions = arrays_from(M)
    report = metrics.classification_report(labels, predictions, 3, ["neg", "neu", "pos"], np.zeros((16, 3)))
    assert report["loss"] == pytest.approx(math.log(3))
    text = metrics.format_report(report, "test")
    assert "macro-F1 0.7527" in text and "neu" in text and "confusion matrix" in text
    summary = metrics.summarize_reports([report, report])
    assert summary["accuracy"]["std"] == 0.0 and summary["f1[pos]"]["mean"] == pytest.approx(8 / 9)
    assert "accuracy" in metrics.format_summary(summary)


def test_count_parameters():
    layer = torch.nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert metrics.count_parameters(layer) == {"total": 8, "trainable": 6}


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_confusion_matrix_invariants(pairs):
    labels, predictions = zip(*pairs)
    m = metrics.confusion_matrix(labels, predictions, 4)
    assert m.sum() == len(pairs)
    assert np.trace(m) / len(pairs) == pytest.approx(metrics.accuracy(labels, predictions))
    assert list(m.sum(axis=1)) == [labels.count(k) for k in range(4)]
    f1 = metrics.per_class_scores(m)["f1"]
    assert np.all((0 <= f1) & (f1 <= 1))
