"""Fine-tuning's classifiers and the file format of a run: a BERT, GPT-2 or T5 body (`train/families.py`), a
pooling, for BERT optionally layer fusion, and the model's own classification head and loss (`minibert.heads`);
or, for named entities (`--task ner`), BERT's token classifier, a tag per token.

Shapes: B batch, T tokens, C hidden size, L encoder blocks, K classes.

    h        = body(input_ids) (B, T, C)          or, BERT with layer fusion, ScalarMix of its L+1 outputs
    pooled   = pool(h, mask, pooling) (B, C)      pooler, cls, mean, last        `minibert/pooling.py`
    logits   = Dropout(pooled) W_c + b_c (B, K)   the model's `classifier`       `minibert/heads.py`
    loss     = cross-entropy (K >= 2) or mean squared error (K == 1)            `heads.sequence_classification_loss`

The token classifier (`TokenClassifier`, BertForTokenClassification) skips the pooling:
    logits   = Dropout(h) W_c + b_c (B, T, K)     a tag score for every token
    loss     = cross-entropy over tokens whose label is not -100  `heads.token_classification_loss`

The pooler and the classifier are those of `BertForSequenceClassification` (`bert.pooler`, `classifier`), so with
pooling "pooler" and no fusion the model is exactly BERT's classifier and exports to Hugging Face unchanged. The
only extra weights are the L+1 mixing logits w and the scale gamma of layer fusion. A GPT-2 or T5 classifier
(`train.families`) gives h from its body and has the same `classifier`; pooler and fusion are BERT's.

A fine-tuned run directory holds:
    config.json, model.safetensors   BertForSequenceClassification (`minibert.checkpoint.save_pretrained`), with
                                     `id2label` in the config; or a GPT-2 / T5 classifier, its config.json with
                                     `model_type`, as the pretraining run's
    head.safetensors                 only with layer fusion: `mix.weights` (L+1,) and `mix.gamma` (1,)
    finetune.json                    {"task", "pooling", "layer_fusion", "strategy", "max_length", "text_pair", ...}
    labels.json                      {"id2label": {"0": name, ...}, "label2id": {name: 0, ...}}
    tokenizer/                       the tokenizer the model was trained with
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from minibert.checkpoint import family, save_pretrained
from minibert.files import atomic_write
from minibert.errors import InputError
from minibert.heads import sequence_classification_loss, token_classification_loss
from minibert.pooling import POOLINGS, ScalarMix, pool
from train import families
from train.cli import write_json

HEAD_NAME = "head.safetensors"
FINETUNE_NAME = "finetune.json"
LABELS_NAME = "labels.json"
FORMAT_VERSION = 1


class FineTuned(nn.Module):
    """What every fine-tuned classifier shares: the model it wraps (`self.model`), its labels, and the modules a
    strategy froze."""

    task = ""  # "classification" or "ner"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.family = family(model.config)
        self.model = model
        self.config = model.config
        self.frozen: list[nn.Module] = []  # modules kept in eval mode while training (see train())

    @property
    def num_labels(self) -> int:
        return self.model.classifier.out_features

    @property
    def id2label(self) -> dict[int, str]:
        """Class names by id: BERT keeps them in its config (which exports them), GPT-2 and T5 classifiers
        beside it."""
        id2label = self.config.id2label if self.family == "bert" else self.model.id2label
        return id2label or {i: str(i) for i in range(self.num_labels)}

    def train(self, mode: bool = True):
        """Frozen modules stay in eval mode (no dropout): a frozen encoder is a fixed feature extractor."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


class TokenClassifier(FineTuned):
    """BertForTokenClassification (`self.model`): (B, T) ids -> (B, T, K) logits, a tag score per token."""

    task = "ner"
    pooling = None  # no sentence vector
    layer_fusion = False
    mix = None
    is_plain_bert = True  # it is Hugging Face's model as it is, so it exports unchanged

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.model(input_ids, attention_mask, token_type_ids).logits  # (B, T) -> (B, T, K)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the tokens that carry a label (`minibert.heads.token_classification_loss`)."""
        return token_classification_loss(logits, labels)


class SequenceClassifier(FineTuned):
    """BertForSequenceClassification, or a GPT-2 / T5 classifier (`self.model`, `train.families`), with a choice
    of pooling and, for BERT, optional layer fusion: body -> (fusion) -> pooling -> the model's head and loss."""

    task = "classification"

    def __init__(self, model: nn.Module, pooling: str = "pooler", layer_fusion: bool = False):
        super().__init__(model)
        if pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        families.check_choices(self.family, pooling, "layer-fusion" if layer_fusion else "full")
        self.pooling = pooling
        self.layer_fusion = layer_fusion
        self.mix = ScalarMix(model.config.num_hidden_layers + 1) if layer_fusion else None

    @property
    def is_plain_bert(self) -> bool:
        """True when this is exactly Hugging Face's BertForSequenceClassification (exportable)."""
        return self.family == "bert" and self.pooling == "pooler" and not self.layer_fusion

    def token_states(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """h (B, T, C): the body's last output, or with layer fusion gamma · Σ_j softmax(w)_j h_j over BERT's L+1
        hidden states (the embeddings and each block's output)."""
        if self.family != "bert":
            return self.model.token_states(input_ids, attention_mask)  # (B, T) -> (B, T, C)
        fused = self.mix is not None
        out = self.model.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=fused)
        if self.mix is None:
            return out.last_hidden_state  # (B, T, C)
        return self.mix(out.hidden_states)  # L+1 x (B, T, C) -> (B, T, C)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """(B, T) ids -> (B, K) logits. token_type_ids: BERT's segments; GPT-2 and T5 have none."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)  # (B, T)
        h = self.token_states(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        pooler = self.model.bert.pooler if self.family == "bert" else None
        pooled = pool(h, mask, self.pooling, pooler)  # (B, T, C) -> (B, C)
        return self.model.classifier(pooled)  # (B, C) -> (B, K)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's own loss (`minibert.heads.sequence_classification_loss`): cross-entropy for K >= 2, mean
        squared error for K == 1."""
        return sequence_classification_loss(logits, labels)


# -- the run directory --------------------------------------------------------------------------------------


def save_classifier(classifier: FineTuned, directory: str | Path, tok, meta: dict) -> None:
    """Write the fine-tuned model, its head, its tokenizer and its labels to `directory` (see the module doc)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    save_pretrained(classifier.model, directory)
    if classifier.mix is not None:
        state = {f"mix.{k}": v.detach().contiguous().cpu() for k, v in classifier.mix.state_dict().items()}
        atomic_write(directory / HEAD_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    info = {"format_version": FORMAT_VERSION, "task": classifier.task, "pooling": classifier.pooling,
            "layer_fusion": classifier.layer_fusion, **meta}
    write_json(directory / FINETUNE_NAME, info)
    id2label = classifier.id2label
    labels = {"id2label": {str(k): v for k, v in id2label.items()}, "label2id": {v: k for k, v in id2label.items()}}
    write_json(directory / LABELS_NAME, labels)
    tok.save(directory / "tokenizer")


def load_classifier(directory: str | Path) -> tuple[FineTuned, dict]:
    """The classifier of a fine-tuned run directory (in eval mode) and its finetune.json."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / FINETUNE_NAME).is_file():
        seeds = sorted(p.name for p in directory.glob("seed-*") if (p / FINETUNE_NAME).is_file())
        hint = f"; it holds one run per seed: {', '.join(seeds)}" if seeds else ""
        raise InputError(f"{directory}: no {FINETUNE_NAME}; is this a directory written by train.finetune?{hint}")
    meta = json.loads((directory / FINETUNE_NAME).read_text(encoding="utf-8"))
    task = meta.get("task", "classification")
    model = families.load_classifier_model(directory, directory / LABELS_NAME, task)
    if task == "ner":
        return TokenClassifier(model).eval(), meta
    classifier = SequenceClassifier(model, meta.get("pooling", "pooler"), bool(meta.get("layer_fusion", False)))
    if classifier.mix is not None:
        if not (directory / HEAD_NAME).is_file():
            raise InputError(f"{directory}: layer fusion needs {HEAD_NAME}, which is missing")
        state = load_file(str(directory / HEAD_NAME))
        classifier.mix.load_state_dict({k.removeprefix("mix."): v for k, v in state.items()})
    return classifier.eval(), meta
