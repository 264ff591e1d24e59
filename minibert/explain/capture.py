"""Capture: one sequence through BertForMaskedLM and one SGD step, every intermediate tensor kept.

Shapes: T tokens, C hidden size, H heads, D head size (C = H * D), I feed-forward size, V vocabulary size, L layers
(batch row 0 only, so no B axis in what is kept).

Nothing here is a second copy of the model. The model's trace (`output_trace=True`, minibert/trace.py) hands over
the tensors of one forward pass; the values recomputed for display (one_hot @ W, Q K^T / sqrt(D), the softmax,
the projections and residual sums, with the parameters read by their checkpoint names) are compared with the
tensors the model produced, each comparison a `Check`. Nothing here knows the model's submodules.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import additive_mask
from ..config import BertConfig
from ..errors import InputError
from ..feed_forward import activation
from ..heads import IGNORE_INDEX, BertForMaskedLM
from ..rotary import rotate_padded, rotation_angles
from .toy import TOY_MASK_ID

TOP_K = 5  # predictions kept at the masked position


@dataclass
class Check:
    """A value recomputed for display, compared with the model's own tensor."""

    what: str
    max_diff: float
    ok: bool


@dataclass
class Explanation:
    """Every intermediate tensor of one explained forward pass (batch row 0, so no B axis) and one SGD step."""

    config: BertConfig
    # --- the input
    input_ids: list[int]  # (T,) as given
    model_ids: list[int]  # (T,) what the model reads: input_ids with mask_token_id at mask_position
    tokens: list[str]  # (T,) text of input_ids
    model_tokens: list[str]  # (T,) text of model_ids ("[MASK]" at mask_position)
    mask_position: int
    mask_token_id: int
    label: int  # the id the loss asks for at mask_position
    label_text: str
    layer: int
    head: int
    lr: float
    # --- embeddings
    W: torch.Tensor  # (V, C) word-embedding matrix
    one_hot: torch.Tensor  # (T, V)
    word: torch.Tensor  # (T, C) W[input_ids], from the embedding module
    position: torch.Tensor  # (T, C) rows 0..T-1 of the position table (zeros with rotary positions: none is added)
    segment_ids: torch.Tensor  # (T,)
    segment: torch.Tensor  # (T, C)
    embedding_sum: torch.Tensor  # (T, C) word + segment + position, LayerNorm's input
    embeddings: torch.Tensor  # (T, C) LayerNorm's output: the input of layer 0
    # --- the chosen layer
    layer_input: torch.Tensor  # (T, C)
    attention_input: torch.Tensor  # (T, C) what Q, K, V are computed from (LayerNorm(layer_input) when pre-LN)
    q_projected: torch.Tensor  # (H, T, D) x W_q + b_q, split into heads
    k_projected: torch.Tensor  # (H, T, D) x W_k + b_k, split into heads
    angles: torch.Tensor | None  # (T, D/2) t * theta_i, the rotary angles; None without rotary positions
    q: torch.Tensor  # (H, T, D) the queries the scores use: q_projected, turned by position with rotary positions
    k: torch.Tensor  # (H, T, D) likewise the keys
    v: torch.Tensor  # (H, T, D)
    scores: torch.Tensor  # (T, T) Q_h K_h^T / sqrt(D) for the chosen head
    mask: torch.Tensor  # (T,) additive key mask M
    probs: torch.Tensor  # (T, T) softmax(scores + M) for the chosen head
    layer_probs: torch.Tensor  # (H, T, T) the model's attention probabilities, every head of the chosen layer
    head_context: torch.Tensor  # (T, D) probs @ V_h
    context: torch.Tensor  # (T, C) all heads concatenated: the self-attention module's output
    attention_projection: torch.Tensor  # (T, C) context W_o + b_o
    attention_output: torch.Tensor  # (T, C) after the residual (and LayerNorm when post-LN)
    ffn_input: torch.Tensor  # (T, C)
    ffn_pre: torch.Tensor  # (T, I) x W_1 + b_1
    ffn_hidden: torch.Tensor  # (T, I) GELU(...)
    ffn_out: torch.Tensor  # (T, C) h W_2 + b_2
    layer_output: torch.Tensor  # (T, C)
    hidden_states: torch.Tensor  # (L+1, T, C) the embeddings, then every layer's output
    # --- the MLM head at mask_position
    transformed: torch.Tensor  # (C,) LayerNorm(GELU(h W_t + b_t))
    logits: torch.Tensor  # (V,)
    vocab_probs: torch.Tensor  # (V,) softmax(logits)
    top: list[tuple[int, str, float]]  # (id, text, probability), most probable first
    loss_before: float
    # --- one SGD step
    num_parameters: int
    grad_norm: float  # ||grad|| over all parameters
    param_name: str
    param_before: torch.Tensor  # (C,)
    param_grad: torch.Tensor  # (C,)
    param_after: torch.Tensor  # (C,)
    loss_after: float
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def all_checks_pass(self) -> bool:
        return all(c.ok for c in self.checks.values())


def _ids_list(input_ids) -> list[int]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 2 and input_ids.size(0) == 1:
            input_ids = input_ids[0]
        if input_ids.dim() != 1:
            raise InputError(f"input_ids must be one sequence of shape (T,), not {tuple(input_ids.shape)}")
        input_ids = input_ids.tolist()
    ids = []
    for i in input_ids:
        try:
            ids.append(operator.index(i))  # int, or a NumPy integer; not a float
        except TypeError:
            raise InputError(f"token ids must be integers, not {i!r}") from None
    if not ids:
        raise InputError("input_ids is empty: give at least one token id")
    return ids


def _in_range(name: str, value: int, size: int, has: str) -> None:
    """Raise InputError unless 0 <= value < size; `has` says what there is, e.g. "the model has {n} layers"."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise InputError(f"{name} {value!r} is out of range: {has.format(n=size)}, numbered 0..{size - 1}")


def _compare(what: str, mine: torch.Tensor, theirs: torch.Tensor) -> Check:
    """Is a display recomputation the model's value? Tolerance by dtype: only the summation order may differ."""
    mine, theirs = mine.detach(), theirs.detach()
    if mine.shape != theirs.shape:
        return Check(what, math.inf, False)
    tol = 1e-9 if mine.dtype == torch.float64 else 1e-4
    diff = (mine - theirs).abs().max().item() if mine.numel() else 0.0
    return Check(what, diff, torch.allclose(mine, theirs, rtol=tol, atol=tol))


def linear(x: torch.Tensor, param: Callable[[str], torch.Tensor], name: str) -> torch.Tensor:
    """x W^T + b with the weight and bias stored under the checkpoint name `name` (`nn.Linear`'s layout)."""
    return F.linear(x, param(f"{name}.weight"), param(f"{name}.bias"))


def layer_norm(x: torch.Tensor, param: Callable[[str], torch.Tensor], name: str, eps: float) -> torch.Tensor:
    """gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta over the last dimension, gamma and beta stored as `name`."""
    return F.layer_norm(x, (x.size(-1),), param(f"{name}.weight"), param(f"{name}.bias"), eps)


def explain(
    model: BertForMaskedLM,
    input_ids: Sequence[int] | torch.Tensor,
    *,
    layer: int = 0,
    head: int = 0,
    mask_position: int | None = None,
    label: int | None = None,
    lr: float = 0.01,
    tokens: Sequence[str] | None = None,
    mask_token_id: int | None = None,
    id_to_text: Callable[[int], str] | None = None,
) -> Explanation:
    """Run `input_ids` (with [MASK] at `mask_position`, default the middle) through `model` once, keeping every
    stage (the model's trace); compute the MLM loss against `label` (default: the id that was masked), its gradient
    for every parameter, and the loss after one plain SGD step `param - lr * grad`.

    The SGD step runs on a copy: `model` itself is left unchanged (weights, .grad and train/eval mode).
    `tokens` are the texts of `input_ids`; `id_to_text` names any id (the predictions); both default to "#id".
    `mask_token_id` defaults to the toy model's (15).
    """
    if not isinstance(model, BertForMaskedLM):
        raise InputError(f"explain needs a BertForMaskedLM, not {type(model).__name__}")
    config = model.config
    V, L, H = config.vocab_size, config.num_hidden_layers, config.num_attention_heads
    ids = _ids_list(input_ids)
    T = len(ids)
    for t, i in enumerate(ids):
        if not 0 <= i < V:
            raise InputError(f"token id {i} at position {t} is out of range: the vocabulary has {V} ids, numbered "
                             f"0..{V - 1}")
    max_t = config.max_position_embeddings
    if T > max_t:
        raise InputError(f"{T} tokens is more than the model's max_position_embeddings ({max_t})")
    _in_range("layer", layer, L, "the model has {n} layers")
    _in_range("head", head, H, "each layer has {n} heads")
    mask_position = T // 2 if mask_position is None else mask_position
    _in_range("mask position", mask_position, T, "the sequence has {n} positions")
    mask_token_id = TOY_MASK_ID if mask_token_id is None else mask_token_id
    _in_range("mask token id", mask_token_id, V, "the vocabulary has {n} ids")
    label = ids[mask_position] if label is None else label
    _in_range("label", label, V, "the vocabulary has {n} ids")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InputError(f"learning rate {lr!r} must be a positive number")
    id_to_text = id_to_text or (lambda i: f"#{i}")
    tokens = [id_to_text(i) for i in ids] if tokens is None else list(tokens)
    if len(tokens) != T:
        raise InputError(f"{len(tokens)} tokens for {T} input ids")

    model_ids = list(ids)
    model_ids[mask_position] = mask_token_id
    model_tokens = list(tokens)
    model_tokens[mask_position] = "[MASK]"

    was_training = model.training
    model.eval()  # dropout off: the pass is deterministic, and the traced tensors are exactly what the model used
    try:
        return _explain(model, ids, model_ids, tokens, model_tokens, layer, head, mask_position, mask_token_id,
                        label, float(lr), id_to_text)
    finally:
        model.train(was_training)



def residual_step(x: torch.Tensor, sublayer_out: torch.Tensor, param, norm_name: str, config) -> torch.Tensor:
    """x + sublayer(x) (pre-LN, whose LayerNorm came before the sub-layer), or LayerNorm(x + sublayer(x)) (post-LN,
    BERT's), with the LayerNorm of checkpoint name `norm_name`."""
    total = x + sublayer_out
    return total if config.norm_first else layer_norm(total, param, norm_name, config.layer_norm_eps)


def _explain(model, ids, model_ids, tokens, model_tokens, layer, head, pos, mask_token_id, label, lr, id_to_text):
    config = model.config
    T, V, C, H = len(ids), config.vocab_size, config.hidden_size, config.num_attention_heads
    D = C // H
    W = model.get_parameter("bert.embeddings.word_embeddings.weight")  # (V, C)
    device, dtype = W.device, W.dtype
    block = f"bert.encoder.layer.{layer}"  # the chosen block's parameters, by their checkpoint names

    def param(name: str) -> torch.Tensor:
        return model.get_parameter(name).detach()

    input_tensor = torch.tensor([model_ids], device=device)  # (B, T) = (1, T)
    labels = torch.full((1, T), IGNORE_INDEX, device=device)
    labels[0, pos] = label  # only the masked position carries a label
    with torch.enable_grad():
        out = model(input_tensor, labels=labels, output_hidden_states=True, output_attentions=True, output_trace=True)
    embedded, block_trace = out.trace.embeddings, out.trace.layers[layer]

    def row0(x: torch.Tensor) -> torch.Tensor:
        """(1, T, X) -> (T, X), detached."""
        return x.detach().reshape(T, -1)

    checks: dict[str, Check] = {}

    # --- embeddings: x = LayerNorm(W[ids] + S[segments] + P[positions])
    W = W.detach()
    word = row0(embedded.word)  # (T, C)
    one_hot = torch.nn.functional.one_hot(torch.tensor(model_ids, device=device), V).to(dtype)  # (T, V)
    checks["one_hot"] = _compare("one_hot(ids) @ W equals the lookup W[ids]", one_hot @ W, word)
    segment_ids = embedded.token_type_ids.detach().reshape(T)  # (T,)
    segment = row0(embedded.segment)  # (T, C)
    rotary = embedded.position is None  # rotary positions add no vector: they turn Q and K instead
    position = torch.zeros(T, C, dtype=dtype, device=device) if rotary else embedded.position.detach()  # (T, C)
    embedding_sum = row0(embedded.sum)  # (T, C) LayerNorm's input
    what = ("word + segment equals LayerNorm's input (rotary positions add no vector)" if rotary
            else "word + segment + position equals LayerNorm's input")
    checks["sum"] = _compare(what, word + segment + position, embedding_sum)
    embeddings = row0(embedded.normalised)
    hidden_states = torch.stack([row0(h) for h in out.hidden_states])  # (L+1, T, C)
    checks["embeddings"] = _compare("LayerNorm's output is the input of layer 0", embeddings, hidden_states[0])

    # --- the chosen layer: attention
    layer_input = row0(block_trace.input)  # the residual stream the block reads
    checks["layer_input"] = _compare(f"the residual stream entering layer {layer}", layer_input,
                                     hidden_states[layer])
    attention_input = row0(block_trace.attention_input)

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.detach().reshape(T, H, D).transpose(0, 1)  # (T, C) -> (H, T, D)

    q_projected, k_projected, v = (split_heads(x) for x in (block_trace.query, block_trace.key, block_trace.value))
    q, k, angles = q_projected, k_projected, None
    if rotary:  # RoPE turns each query and key by its position before the dot product
        angles = rotation_angles(torch.arange(T, device=device), D)  # (T, D/2): t * theta_i
        q, k = rotate_padded(q_projected[None], k_projected[None])  # (1, H, T, D) each
        q, k = q[0], k[0]  # (H, T, D) each
    qh, kh, vh = q[head], k[head], v[head]  # (T, D)
    scores = qh @ kh.T / math.sqrt(D)  # (T, T)
    mask = additive_mask(torch.ones(1, T, device=device), dtype).reshape(T)  # (T,) every key is a real token: all 0
    probs = (scores + mask).softmax(dim=-1)  # (T, T)
    layer_probs = out.attentions[layer][0].detach()  # (H, T, T) the model's own
    checks["probs"] = _compare("softmax(Q K^T / sqrt(D) + M) equals the model's attention probabilities", probs,
                               layer_probs[head])
    head_context = probs @ vh  # (T, D)
    context = row0(block_trace.context)  # (T, C) heads concatenated
    checks["context"] = _compare(f"probs @ V equals head {head}'s slice of the self-attention output", head_context,
                                 context[:, head * D : (head + 1) * D])
    attention_projection = linear(context, param, f"{block}.attention.output.dense")  # (T, C) context W_o + b_o
    # x1, the stream between the sub-layers: x + the projection (pre-LN), or LayerNorm of that sum (post-LN)
    attention_output = row0(block_trace.after_attention)
    residual_sum = residual_step(layer_input, attention_projection, param, f"{block}.attention.output.LayerNorm",
                                 config)
    checks["attention_output"] = _compare("the residual step equals attention.output's output", residual_sum,
                                          attention_output)

    # --- the chosen layer: feed-forward
    ffn_input = row0(block_trace.ffn_input)
    ffn_pre = linear(ffn_input, param, f"{block}.intermediate.dense")  # (T, I) x W_1 + b_1
    ffn_hidden = row0(block_trace.ffn_hidden)
    checks["gelu"] = _compare(f"{config.hidden_act}(x W_1 + b_1) equals the intermediate module's output",
                              activation(config.hidden_act)(ffn_pre), ffn_hidden)
    ffn_out = linear(ffn_hidden, param, f"{block}.output.dense")  # (T, C) h W_2 + b_2
    layer_output = row0(block_trace.output)
    residual_sum = residual_step(attention_output, ffn_out, param, f"{block}.output.LayerNorm", config)
    checks["layer_output"] = _compare("the residual step equals the output module's output", residual_sum,
                                      layer_output)
    theirs = hidden_states[layer + 1]
    what = f"it is hidden state {layer + 1} of the model"
    mine = layer_output
    if config.norm_first and layer == config.num_hidden_layers - 1:  # pre-LN: one more LayerNorm at the end
        mine = layer_norm(layer_output, param, "bert.encoder.final_layer_norm", config.layer_norm_eps)
        what = f"after the final LayerNorm, {what}"
    checks["hidden_state"] = _compare(what, mine, theirs)

    # --- the MLM head at the masked position
    transformed_rows = out.trace.mlm_transform.detach().reshape(-1, C)  # (T, C), or (1, C) with sparse prediction
    transformed = transformed_rows[pos] if transformed_rows.size(0) == T else transformed_rows[0]
    logits_all = out.logits.detach()
    logits = logits_all[0, pos] if logits_all.dim() == 3 else logits_all[0]  # (V,)
    decoder_bias = param("cls.predictions.decoder.bias")  # (V,)
    checks["logits"] = _compare("u @ W^T + b (W the word-embedding matrix) equals the model's logits",
                                transformed @ W.T + decoder_bias, logits)
    vocab_probs = logits.softmax(dim=-1)  # (V,)
    top_p, top_i = vocab_probs.topk(min(TOP_K, V))
    top = [(int(i), id_to_text(int(i)), float(p)) for p, i in zip(top_p, top_i)]
    loss = out.loss  # the model's mlm_loss, still attached to the graph
    checks["loss"] = _compare("-log p[label] equals the model's loss", -vocab_probs[label].log(), loss.detach())

    # --- one SGD step on every parameter: param <- param - lr * grad, on a copy of the model
    params = [p for p in model.parameters() if p.requires_grad]  # the tied W appears once
    grads = torch.autograd.grad(loss, params, allow_unused=True)  # leaves model's .grad untouched
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    grad_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    stepped = copy.deepcopy(model)
    with torch.no_grad():
        for p, g in zip((p for p in stepped.parameters() if p.requires_grad), grads):
            p.sub_(lr * g)
        loss_after = float(stepped(input_tensor, labels=labels).loss)
    W_name = "bert.embeddings.word_embeddings.weight"
    W_index = next(i for i, p in enumerate(params) if p is model.get_parameter(W_name))
    param_grad = grads[W_index][label].detach()

    return Explanation(
        config=config,
        input_ids=ids,
        model_ids=model_ids,
        tokens=tokens,
        model_tokens=model_tokens,
        mask_position=pos,
        mask_token_id=mask_token_id,
        label=label,
        label_text=id_to_text(label),
        layer=layer,
        head=head,
        lr=lr,
        W=W,
        one_hot=one_hot,
        word=word,
        position=position,
        segment_ids=segment_ids,
        segment=segment,
        embedding_sum=embedding_sum,
        embeddings=embeddings,
        layer_input=layer_input,
        attention_input=attention_input,
        q_projected=q_projected,
        k_projected=k_projected,
        angles=angles,
        q=q,
        k=k,
        v=v,
        scores=scores,
        mask=mask,
        probs=probs,
        layer_probs=layer_probs,
        head_context=head_context,
        context=context,
        attention_projection=attention_projection,
        attention_output=attention_output,
        ffn_input=ffn_input,
        ffn_pre=ffn_pre,
        ffn_hidden=ffn_hidden,
        ffn_out=ffn_out,
        layer_output=layer_output,
        hidden_states=hidden_states,
        transformed=transformed,
        logits=logits,
        vocab_probs=vocab_probs,
        top=top,
        loss_before=float(loss.detach()),
        num_parameters=sum(p.numel() for p in params),
        grad_norm=grad_norm,
        param_name=f"{W_name}[{label}]",
        param_before=W[label].clone(),
        param_grad=param_grad,
        param_after=stepped.get_parameter(W_name)[label].detach().clone(),
        loss_after=loss_after,
        checks=checks,
    )

