"""Task heads on top of BertModel: the masked-language-model head, the sequence classifier and the token classifier.

Shapes: B batch, T tokens, C hidden size, V vocabulary size, M labelled (masked) positions, K classes, N real
(non-padding) tokens of a batch.

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
from .trace import BertTrace

IGNORE_INDEX = -100  # label of a position that carries no loss (Hugging Face's convention)


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None  # scalar mean cross-entropy over labelled positions
    logits: torch.Tensor  # (B, T, V); with sparse prediction (M, V), the labelled positions in row-major order
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None
    trace: BertTrace | None = None  # with output_trace=True (minibert/trace.py)


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None  # cross-entropy (K >= 2) or mean squared error (K == 1)
    logits: torch.Tensor  # (B, K)
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None
    trace: BertTrace | None = None  # with output_trace=True (minibert/trace.py)


@dataclass
class TokenClassifierOutput:
    loss: torch.Tensor | None  # scalar mean cross-entropy over labelled positions
    logits: torch.Tensor  # (B, T, K); unpadded (config.unpad with a mask): zeros at the pads
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None
    trace: BertTrace | None = None  # with output_trace=True (minibert/trace.py)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss = -(1/M) Σ_{i: label_i != -100} log softmax(logits_i)[label_i]

    《预训练与微调的详细方法》 (section 4.1.2, formula 5) writes the loss as

        loss = -Σ_{i=1}^{N} log(softmax(W_output · activation(attention · V)))_label

    summed over all N positions of the sequence. Here it is averaged over the M positions that carry a label: the
    masked tokens. Positions labelled -100 contribute nothing, so their logits cannot change the loss.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


# --- the output layer and its loss in one, a few rows at a time (the fast path of mlm_loss(h W^T + b, labels)) ---

LOSS_CHUNK_ROWS = 256  # rows of (h, labels) per chunk: a (256, V) block of logits stays in cache (measured on the CPU)


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = -(1/M) Σ_{i: y_i != -100} log softmax(h_i W^T + b)[y_i], and its gradients, computed chunk by chunk.

    With z_i = h_i W^T + b and p_i = softmax(z_i), the gradient of the summed loss is
        dL/dz_i = p_i - onehot(y_i),    dL/dh_i = (dL/dz_i) W,    dL/dW = Σ_i (dL/dz_i)^T h_i,    dL/db = Σ_i dL/dz_i
    for a labelled row i, and 0 for a row labelled -100; so each chunk's logits are turned into their gradient in
    place, used at once, and dropped: the (N, V) logits, their log-softmax and their gradient never exist whole. The
    gradients are formed in the forward pass (when any is needed) and only scaled by the incoming gradient / M in
    the backward pass. The softmax and the sums run in fp32 whatever the dtype of h and W (as cross-entropy does
    under autocast). Every row goes through (an ignored one with its terms zeroed), so the chunks are fixed by the
    shape alone and torch.compile can trace them.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, labels):
        N = h.size(0)
        wants = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if wants[0] else None  # (N, C)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if wants[1] else None  # (V, C)
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if wants[2] else None  # (V,)
        labelled = labels != IGNORE_INDEX  # (N,)
        targets = labels.clamp(min=0)  # (N,): an ignored row reads class 0, then counts for nothing
        total = h.new_zeros((), dtype=torch.float32)
        for start in range(0, N, LOSS_CHUNK_ROWS):
            rows = slice(start, start + LOSS_CHUNK_ROWS)
            h_c, y_c, keep = h[rows], targets[rows], labelled[rows]  # (n, C), (n,), (n,)
            log_p = F.linear(h_c, weight, bias).float().log_softmax(dim=-1)  # (n, V)
            picked = log_p.gather(1, y_c[:, None]).squeeze(1)  # (n,): log p[y]
            total -= torch.where(keep, picked, 0.0).sum()  # Σ -log p[y] over labelled rows
            if not any(wants):
                continue
            g = log_p.exp_()  # (n, V): p, in place
            g[torch.arange(g.size(0), device=g.device), y_c] -= 1.0  # p - onehot(y) = dL/dz
            g = g.mul_(keep[:, None]).to(h.dtype)  # an ignored row: no gradient
            if grad_h is not None:
                grad_h[rows] = g @ weight  # (n, V) @ (V, C) -> (n, C)
            if grad_w is not None and g.dtype == grad_w.dtype:
                grad_w.addmm_(g.t(), h_c)  # += (V, n) @ (n, C), in place
            elif grad_w is not None:
                grad_w += g.t() @ h_c  # a half-precision product, summed in fp32
            if grad_b is not None:
                grad_b += g.sum(dim=0)  # (V,)
        count = labelled.sum()  # M
        ctx.save_for_backward(grad_h, grad_w, grad_b, count)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        *grads, count = ctx.saved_tensors
        scale = grad_loss / count  # d(mean)/d(sum), times what flows in
        grads = [None if g is None else (g * scale).to(dtype) for g, dtype in zip(grads, ctx.dtypes)]
        return (*grads, None)  # the labels have none


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """mlm_loss(h W^T + b, labels) without the logits: the fast path of an output layer followed by its loss.

    h: (..., C), labels: (...) with -100 where ignored, weight (V, C), bias (V,) or None. `_LinearCrossEntropy`
    projects and scores the rows LOSS_CHUNK_ROWS at a time. For GPT-2's and T5's losses, where almost every row
    carries a label (for BERT's 15%, the sparse head keeps the labelled rows first). Equal to the readable path
    within float rounding (the sums run in another order); a batch with no label gives NaN, as mlm_loss does.
    Under autocast the inputs are cast as the readable path's matmul would cast them, before the chunks run.
    """
    h = h.reshape(-1, h.size(-1))  # (N, C)
    device = h.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        h, weight = h.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, bias, labels.reshape(-1))


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
    """《预训练与微调的详细方法》 (section 4.1.2, formula 4) writes the output as
    `output = softmax(W_output · activation(attention · V))`; BERT's, with V used once, inside attention:

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

    def forward(self, h: torch.Tensor, trace: BertTrace | None = None) -> torch.Tensor:
        """(..., C) -> (..., V). `trace`: where to keep the transformed vectors (minibert/trace.py)."""
        u = self.transform(h)  # (..., C)
        if trace is not None:
            trace.mlm_transform = u
        return self.decoder(u)  # (..., C) -> (..., V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, h: torch.Tensor, trace: BertTrace | None = None) -> torch.Tensor:
        return self.predictions(h, trace)


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
        output_trace: bool = False,
    ) -> MaskedLMOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        output_trace)
        h = out.last_hidden_state  # (B, T, C)
        if self.config.sparse_prediction and labels is not None:
            keep = labels != IGNORE_INDEX  # (B, T)
            logits = self.cls(h[keep], out.trace)  # (M, C) -> (M, V)
            loss = mlm_loss(logits, labels[keep])
        else:
            logits = self.cls(h, out.trace)  # (B, T, C) -> (B, T, V)
            loss = mlm_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions, out.trace)


class SequenceClassificationHead(nn.Linear):
    """logits = Dropout(pooled) W_c + b_c: (B, C) -> (B, K), scored by `sequence_classification_loss`; the token
    classifier applies it to every token's vector, (B, T, C) -> (B, T, K).

    The layer W_c (K, C), b_c (K,) itself, with the dropout in front of it: registered as `classifier`, its weights
    keep Hugging Face's names `classifier.weight` and `classifier.bias` (dropout has no weights to name). Every
    classifier ends here: BertForSequenceClassification below, and in fine-tuning `train.classifier.SequenceClassifier`
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


class _BertWithClassifier(nn.Module):
    """BertModel (`bert`, with or without its pooler) and a classification head (`classifier`, dropout in front):
    what the sequence and the token classifier share."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.classifier = SequenceClassificationHead(config.hidden_size, config.num_labels, p)  # W_c (K, C), b_c (K,)
        init_bert_weights(self.classifier, config.initializer_range)


class BertForSequenceClassification(_BertWithClassifier):
    """BertModel, its pooler and the classification head:

        pooled = tanh(h[:, 0] W_p + b_p)          (B, C), `bert.pooler` (`minibert.pooling`'s "pooler")
        logits = Dropout(pooled) W_c + b_c        (B, K), `classifier` (SequenceClassificationHead)
        loss   = sequence_classification_loss     cross-entropy for K >= 2, mean squared error for K == 1

    (The fine-tuning example of 《预训练与微调的详细方法》 (section 5.2.3) classifies with `nn.Linear(768, 1)` and
    `logits.squeeze(-1)`: one output per text is a regression on the label value, not a two-class classifier.)
    """

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_trace: bool = False,
    ) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        output_trace)
        logits = self.classifier(out.pooler_output)  # (B, C) -> (B, K)
        loss = sequence_classification_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions, out.trace)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss = -(1/M) Σ_{(b, t): y_bt != -100} log softmax(logits_bt)[y_bt]

    The mean cross-entropy over the M positions that carry a tag; a position labelled -100 (a special token, a
    [PAD], a word's second piece) contributes nothing, so its logits cannot change the loss. logits (B, T, K) with
    labels (B, T), or the N real tokens' (N, K) with (N,). As Hugging Face's BertForTokenClassification computes it;
    a batch with no tag at all gives NaN, as there.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class BertForTokenClassification(_BertWithClassifier):
    """BertModel without its pooler, and one classifier applied to every token (named-entity tagging):

        logits_t = Dropout(h_t) W_c + b_c          (B, T, K): a tag score vector per token, `classifier`
        loss     = token_classification_loss       cross-entropy over the tagged positions

    The fast path (`config.unpad` with an attention mask): the blocks run on the N real tokens alone
    (minibert/unpad.py), and the classifier and the loss take their (N, C) rows straight from the last block, so
    nothing per-token ever touches a [PAD] and the (B, T, C) scatter back is never made; only the (N, K) logits are
    put back in place, with zeros at the pads. (Gathering the rows again from a padded (B, T, C) output would cost
    more than classifying the pads: with K = 9 the head is about one read of its input.) The loss then scores real
    tokens only: a pad must be labelled -100 (as any data loader labels it) for the two paths to agree, since the
    padded path would score it.
    """

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=False)

    @property
    def dropout(self) -> nn.Dropout:
        """The dropout before the classifier (Hugging Face's `dropout`; it has no weights, so it lives in the head)."""
        return self.classifier.dropout

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_trace: bool = False,
    ) -> TokenClassifierOutput:
        """input_ids, attention_mask, token_type_ids, labels: (B, T); labels hold tag ids, -100 where untagged."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                        output_trace, keep_unpadded=True)
        unpadding = out.unpadding  # None on the readable path
        logits = self.classifier(out.last_hidden_state)  # (B, T, C) -> (B, T, K), or (N, C) -> (N, K)
        loss = None
        if labels is not None:
            labels = labels if unpadding is None else unpadding.unpad(labels)  # (B, T), or (B, T) -> (N,)
            loss = token_classification_loss(logits, labels)
        if unpadding is not None:
            logits = unpadding.pad(logits)  # (N, K) -> (B, T, K), zeros at the pads
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions, out.trace)
