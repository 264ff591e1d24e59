"""Classification metrics as pure functions of label and prediction arrays (no scikit-learn).

Notation: K classes, N examples, `labels` and `predictions` are integer arrays of shape (N,) with values in
0..K-1, `logits` is a float array of shape (N, K). The confusion matrix M has one row per true class and one
column per predicted class: M[i, j] = #{n : labels[n] = i and predictions[n] = j}.

    precision_k = M[k, k] / Σ_i M[i, k]     (of the examples predicted k, the fraction that are k)
    recall_k    = M[k, k] / Σ_j M[k, j]     (of the examples that are k, the fraction predicted k)
    F1_k        = 2 precision_k recall_k / (precision_k + recall_k)
    macro F1    = (1/K) Σ_k F1_k            (every class counts the same, however rare)
    accuracy    = Σ_k M[k, k] / N

A ratio whose denominator is 0 (a class never predicted, or never present) is defined as 0, as in scikit-learn's
`zero_division=0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """M of shape (K, K): rows are true classes, columns predicted classes."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.shape[0]} labels but {predictions.shape[0]} predictions")
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels, predictions), 1)
    return m


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0 where the denominator is 0."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def per_class_scores(m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support (number of true examples) from a confusion matrix."""
    true_positives = np.diag(m)
    precision = _ratio(true_positives, m.sum(axis=0))
    recall = _ratio(true_positives, m.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": m.sum(axis=1)}


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    labels = np.asarray(labels)
    return float((labels == np.asarray(predictions)).mean()) if labels.size else 0.0


def macro_f1(m: np.ndarray) -> float:
    return float(per_class_scores(m)["f1"].mean())


def cross_entropy(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Mean over examples of -log softmax(logits_n)[label_n], computed stably (log-sum-exp)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return 0.0
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float((log_z - shifted[np.arange(labels.size), labels]).mean())


def classification_report(
    labels: Sequence[int],
    predictions: Sequence[int],
    num_classes: int,
    label_names: Sequence[str] | None = None,
    logits: np.ndarray | None = None,
) -> dict:
    """Every metric in one JSON-ready dict: loss (if logits are given), accuracy, macro F1, per-class precision,
    recall, F1 and support keyed by class name, the confusion matrix (rows true, columns predicted), N."""
    names = list(label_names) if label_names is not None else [str(k) for k in range(num_classes)]
    m = confusion_matrix(labels, predictions, num_classes)
    scores = per_class_scores(m)
    report = {
        "loss": cross_entropy(logits, labels) if logits is not None else None,
        "accuracy": accuracy(labels, predictions),
        "macro_f1": float(scores["f1"].mean()),
        "per_class": {
            name: {
                "precision": float(scores["precision"][k]),
                "recall": float(scores["recall"][k]),
                "f1": float(scores["f1"][k]),
                "support": int(scores["support"][k]),
            }
            for k, name in enumerate(names)
        },
        "confusion_matrix": m.tolist(),
        "n": int(m.sum()),
    }
    if report["loss"] is None:
        del report["loss"]
    return report


def count_parameters(model) -> dict[str, int]:
    """{"total": every parameter, "trainable": those with requires_grad} of a torch module."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


# -- summaries over seeds -----------------------------------------------------------------------------------

SCALAR_METRICS = ("loss", "accuracy", "macro_f1")


def mean_and_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": values}


def summarize_reports(reports: Sequence[dict]) -> dict:
    """Mean and spread over seeds of the scalar metrics and of each class's precision, recall and F1."""
    summary = {k: mean_and_std([r[k] for r in reports]) for k in SCALAR_METRICS if all(k in r for r in reports)}
    for name in reports[0]["per_class"]:
        for score in ("precision", "recall", "f1"):
            summary[f"{score}[{name}]"] = mean_and_std([r["per_class"][name][score] for r in reports])
    return summary


# -- printing -----------------------------------------------------------------------------------------------


def format_report(report: dict, title: str = "") -> str:
    """A plain-text table: the headline metrics, per-class precision/recall/F1/support, the confusion matrix."""
    names = list(report["per_class"])
    width = max(10, *(len(n) for n in names)) + 2
    lines = [title] if title else []
    head = [f"accuracy {report['accuracy']:.4f}", f"macro-F1 {report['macro_f1']:.4f}"]
    if "loss" in report:
        head.insert(0, f"loss {report['loss']:.4f}")
    lines.append("  ".join(head) + f"  (n={report['n']})")
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}")
    for name, s in report["per_class"].items():
        lines.append(f"{name:<{width}}{s['precision']:>10.4f}{s['recall']:>10.4f}{s['f1']:>10.4f}{s['support']:>10d}")
    cell = max(8, *(len(n) + 1 for n in names))
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)


def format_summary(summary: dict, title: str = "") -> str:
    """mean ± std (over n seeds) for each summarised metric."""
    lines = [title] if title else []
    width = max(len(k) for k in summary) + 2
    for key, s in summary.items():
        lines.append(f"{key:<{width}}{s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']})")
    return "\n".join(lines)


def report_seeds(results: dict, runs: dict, validation_title: str, test_title: str, format_report=format_report,
                 summarize_reports=summarize_reports) -> None:
    """Put the runs of each seed into `results` and print their tables: one seed's reports as they are (titled
    `validation_title`, `test_title`), several seeds as `runs` plus the mean ± sample std of every metric. The
    table and the summary are a classification's unless the task gives its own."""
    if len(runs) == 1:
        results.update(next(iter(runs.values())))
        print(format_report(results["validation"], validation_title))
        print(format_report(results["test"], test_title))
        return
    results["runs"] = {str(s): r for s, r in runs.items()}
    results["summary"] = {split: summarize_reports([r[split] for r in runs.values()]) for split in ("validation", "test")}
    print(format_summary(results["summary"]["validation"], f"validation, {len(runs)} seeds (mean ± std)"))
    print(format_summary(results["summary"]["test"], f"test, {len(runs)} seeds (mean ± std)"))
