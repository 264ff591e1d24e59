"""What fine-tuning does differently for each task, and nothing else: `train.finetune`'s loop is the same for both.

    task            data (built-in)                    the model predicts          scored by (validation picks)
    classification  review sentiment, or a table      a label per text (B, K)     accuracy, macro F1 (macro_f1)
    ner             People's Daily 1998, or CoNLL /   a BIO tag per word (B,T,K)  entity-level P / R / F1 (f1)
                    JSON lines

Each task loads its data (`load`), turns a split into model inputs (`encode`), builds its classifier (`build`),
scores a split (`evaluate`) and says how to print and summarise its scores.
"""

from __future__ import annotations

import numpy as np

from minibert.errors import InputError
from minibert.heads import IGNORE_INDEX
from train import metrics, ner_metrics
from train.batches import EncodedSet, encode_examples
from train.classifier import SequenceClassifier, TokenClassifier
from train.finetune_data import Columns, label_counts, load_task, subsample_train
from train.ner_data import entity_counts, load_ner_task, subsample_ner_train
from train.ner_encoding import TokenWindows, encode_sentences, word_tags
from train.predict import predict_logits, window_logits


class Classification:
    """A label per text: the pooled body and a linear head (`train.classifier.SequenceClassifier`)."""

    name = "classification"
    metric_choices = ("macro_f1", "accuracy")

    def load(self, o):
        task = load_task(o.train, o.validation, o.test, Columns(o.text_column, o.text_pair_column, o.label_column),
                         o.split_seed)
        return task if o.train_examples is None else subsample_train(task, o.train_examples, o.split_seed)

    def encode(self, tok, task, examples, max_length: int) -> EncodedSet:
        return encode_examples(tok, examples, max_length)

    def build(self, model, o) -> SequenceClassifier:
        return SequenceClassifier(model, o.pooling, layer_fusion=o.strategy == "layer-fusion")

    def evaluate(self, classifier, data: EncodedSet, batch_size: int, pad_id: int, label_names) -> dict:
        logits = predict_logits(classifier, data, batch_size, pad_id)
        return metrics.classification_report(data.labels, logits.argmax(axis=1), len(label_names), label_names,
                                              logits)

    def epoch_line(self, report: dict) -> str:
        return (f"validation loss {report['loss']:.4f}  accuracy {report['accuracy']:.4f}  "
                f"macro-F1 {report['macro_f1']:.4f}")

    def headline(self, report: dict) -> dict:
        return {k: report[k] for k in ("loss", "accuracy", "macro_f1")}

    def counts(self, task) -> dict:
        return {split: label_counts(getattr(task, split), task.label_names)
                for split in ("train", "validation", "test")}

    format_report = staticmethod(metrics.format_report)
    summarize = staticmethod(metrics.summarize_reports)


class NamedEntities:
    """A BIO tag per word: BERT's token classifier (`train.classifier.TokenClassifier`) over token windows
    (`train.ner_encoding`), scored on whole sentences by the CoNLL entity rule (`train.ner_metrics`)."""

    name = "ner"
    metric_choices = ("f1",)

    def load(self, o):
        task = load_ner_task(o.train, o.validation, o.test, o.split_seed)
        return task if o.train_examples is None else subsample_ner_train(task, o.train_examples, o.split_seed)

    def encode(self, tok, task, sentences, max_length: int) -> TokenWindows:
        label_ids = {name: i for i, name in enumerate(task.label_names)}
        return encode_sentences(tok, [s.tokens for s in sentences], [s.tags for s in sentences], label_ids,
                                max_length, task.joiner)

    def build(self, model, o) -> TokenClassifier:
        return TokenClassifier(model)

    def evaluate(self, classifier, data: TokenWindows, batch_size: int, pad_id: int, label_names) -> dict:
        logits = window_logits(classifier, data, batch_size, pad_id)
        report = ner_metrics.ner_report(data.gold, word_tags(logits, data, label_names))
        return {"loss": token_loss(logits, data.labels), **report}

    def epoch_line(self, report: dict) -> str:
        return (f"validation loss {report['loss']:.4f}  precision {report['precision']:.4f}  "
                f"recall {report['recall']:.4f}  F1 {report['f1']:.4f}")

    def headline(self, report: dict) -> dict:
        return {k: report[k] for k in ("loss", "precision", "recall", "f1")}

    def counts(self, task) -> dict:
        return {split: entity_counts(getattr(task, split)) for split in ("train", "validation", "test")}

    format_report = staticmethod(ner_metrics.format_ner_report)
    summarize = staticmethod(ner_metrics.summarize_ner_reports)


TASKS = {"classification": Classification(), "ner": NamedEntities()}


def check_task_options(o) -> None:
    """InputError for an option the task has no use for."""
    if o.task != "ner":
        return
    refused = [(o.token_dropout > 0, "--token-dropout (it deletes tokens, and their tags with them)"),
               (o.strategy == "layer-fusion", "--strategy layer-fusion"),
               (o.text_pair_column is not None, "--text-pair-column")]
    for bad, what in refused:
        if bad:
            raise InputError(f"{what} is not for --task ner")


def token_loss(logits: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Mean cross-entropy over the labelled tokens of every window (the loss the model trains on)."""
    rows = np.concatenate([lg[lb != IGNORE_INDEX] for lg, lb in zip(logits, labels)])  # (M, K)
    targets = np.concatenate([lb[lb != IGNORE_INDEX] for lb in labels])  # (M,)
    return metrics.cross_entropy(rows, targets) if len(targets) else 0.0
