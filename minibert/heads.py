"""Task heads on top of BertModel: the masked-language-model head and the sequence classifier.

Shapes: B batch, T tokens, C hidden size, V vocabulary size, M labelled (masked) positions, K classes.

The sequence classifier's head and loss (`SequenceClassificationHead`, `sequence_classification_loss`) are the
ones fine-tuning runs, whatever the body and the pooling (`minibert.pooling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .feed_forward import activation
from .model import BertModel, init_bert_weights

IGNORE_INDEX = -100  # label of a position that carries no loss (Hugging Face's convention)


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None  # scalar mean cross-entropy over labelled positions
    logits: torch.Tensor  # (B, T, V); with sparse prediction (M, V), the labelled positions in row-major order
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None  # cross-entropy (K >= 2) or mean squared error (K == 1)
    logits: torch.Tensor  # (B, K)
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss = -(1/M) Σ_{i: label_i != -100} log softmax(logits_i)[label_i]

    The document's `loss = -Σ log softmax(...)_label`, averaged over the M positions that carry a label: the masked
    tokens. Positions labelled -100 contribute nothing, so their logits cannot change the loss.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class BertPredictionHeadTransform(nn.Module):
    """t = LayerNorm(activation(h W_t + b_t))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    """The document's `output = softmax(W_output · activation(...))`, with BERT's details:

        logits = LayerNorm(GELU(h W_t + b_t)) · W^T + b      (softmax is left to the loss)

    W_output is W, the word-embedding matrix itself (tied weights: the decoder shares its (V, C) storage), so an
    output token's score is the dot product of the transformed vector with that token's input embedding. The
    head keeps its own bias b of size V.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight tied to W by BertForMaskedLM
        self.bias = self.decoder.bias  # Hugging Face saves the bias under both names

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h))  # (..., C) -> (..., V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.predictions(h)


class BertForMaskedLM(nn.Module):
    """BERT's pretraining objective without next-sentence prediction: predict each masked token from its context.

    With `config.sparse_prediction`, the head runs only at the M labelled positions: for a small model the (C -> V)
    projection is most of the arithmetic, and only ~15% of the positions carry a label.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.cls.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tie: W_output = W

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> MaskedLMOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        h = out.last_hidden_state  # (B, T, C)
        if self.config.sparse_prediction and labels is not None:
            keep = labels != IGNORE_INDEX  # (B, T)
            logits = self.cls(h[keep])  # (M, C) -> (M, V)
            loss = mlm_loss(logits, labels[keep])
        else:
            logits = self.cls(h)  # (B, T, C) -> (B, T, V)
            loss = mlm_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class SequenceClassificationHead(nn.Linear):
    """logits = Dropout(pooled) W_c + b_c: (B, C) -> (B, K), scored by `sequence_classification_loss`.

    The layer W_c (K, C), b_c (K,) itself, with the dropout in front of it: registered as `classifier`, its weights
    keep Hugging Face's names `classifier.weight` and `classifier.bias` (dropout has no weights to name). Every
    classifier ends here: BertForSequenceClassification below, and in fine-tuning `train.fusion.SequenceClassifier`
    (any pooling of `minibert.pooling`, with or without layer fusion) over a BERT, GPT-2 or T5 body.
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout_prob: float):
        super().__init__(hidden_size, num_labels)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.linear(self.dropout(pooled), self.weight, self.bias)  # (B, C) -> (B, K)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """K >= 2 classes, cross-entropy:  loss = -(1/B) Σ_b log softmax(logits_b)[label_b]
    K == 1, regression, mean squared error:  loss = (1/B) Σ_b (logits_b - label_b)²

    As Hugging Face's BertForSequenceClassification chooses by num_labels (its "single_label_classification" and
    "regression"; the multi-label form, a sigmoid per class, is not here). labels (B,): class ids, or for K == 1
    the targets, cast to the logits' dtype.
    """
    if logits.size(-1) == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))  # (B, 1) -> (B,), against (B,)
    return F.cross_entropy(logits, labels)  # (B, K), (B,) -> scalar


class BertForSequenceClassification(nn.Module):
    """BertModel, its pooler and the classification head:

        pooled = tanh(h[:, 0] W_p + b_p)          (B, C), `bert.pooler` (`minibert.pooling`'s "pooler")
        logits = Dropout(pooled) W_c + b_c        (B, K), `classifier` (SequenceClassificationHead)
        loss   = sequence_classification_loss     cross-entropy for K >= 2, mean squared error for K == 1

    (The design document's example uses `Linear(768, 1)` with a squeeze for a two-class task: that is a regression
    on the label value, not a classifier.)
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.classifier = SequenceClassificationHead(config.hidden_size, config.num_labels, p)
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        logits = self.classifier(out.pooler_output)  # (B, C) -> (B, K)
        loss = sequence_classification_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)
