"""One sequence through BertForMaskedLM and one SGD step, stage by stage: the formula, the shapes, the numbers.

    python -m minibert.explain                           # the design document's example: word indices 1..10
    python -m minibert.explain --ids 1 2 3 4 5 --layer 1 --head 1
    python -m minibert.explain "今天天气很好" --run RUN_DIR  # a trained model and its tokenizer
    python -m minibert.explain --plot plots/             # attention heatmaps of every head of the chosen layer
    python -m minibert.explain --markdown                # the worked example of docs/MATH.md

Shapes: B batch (1 here), T tokens, C hidden size, H heads, D head size (C = H * D), I feed-forward size,
V vocabulary size, L layers.

Nothing here is a second copy of the model. Forward hooks on the model's own submodules capture the tensors that
flow through one forward pass; the few values recomputed for display (one_hot @ W, Q K^T / sqrt(D), the softmax,
the residual sums) are compared with the tensors the model produced, and each comparison prints
"matches the model: yes".

Without `--run` the model is a toy: random weights fixed by `--seed`, small enough that every vector fits on a
line, and in float64, so that the printed digits are the same on every machine.
"""

from __future__ import annotations

import argparse
import copy
import math
import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .attention import additive_mask
from .config import BertConfig, preset
from .errors import InputError
from .heads import IGNORE_INDEX, BertForMaskedLM
from .rotary import rotate_padded

# --- the toy model ---------------------------------------------------------------------------------------------

# Small enough to print: C = 8 numbers per token, 2 heads of D = 4, a vocabulary of 16 ids (0 [PAD], 15 [MASK]).
# The weights are drawn with std 0.5 instead of BERT's 0.02: with 0.02 every attention row of an untrained model is
# uniform (all 1/T) and every prediction 1/V, and the example would show nothing.
TOY_CONFIG = dict(
    vocab_size=16,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.5,
    attn_impl="math",
)
TOY_MASK_ID = 15
DOCUMENT_IDS = list(range(1, 11))  # the design document's ten word indices (section 4.3)

SHOW_DIMS = 8  # numbers shown per vector
SHOW_KEYS = 12  # columns shown of a T x T matrix
TOP_K = 5


def toy_model(seed: int = 0) -> BertForMaskedLM:
    """The toy BertForMaskedLM: TOY_CONFIG, weights from BERT's own initialisation under `seed`, in float64.

    float64 (not BERT's float32) so that a 4-decimal rounding never depends on the CPU's summation order; the
    random draws use a forked RNG, so building the toy leaves the global seed untouched.
    """
    config = preset("tiny", **TOY_CONFIG)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters are created (and initialised) in float64
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForMaskedLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


# --- what explain() returns ------------------------------------------------------------------------------------


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
    position: torch.Tensor  # (T, C) rows 0..T-1 of the position table
    segment_ids: torch.Tensor  # (T,)
    segment: torch.Tensor  # (T, C)
    embedding_sum: torch.Tensor  # (T, C) word + segment + position, LayerNorm's input
    embeddings: torch.Tensor  # (T, C) LayerNorm's output: the input of layer 0
    # --- the chosen layer
    layer_input: torch.Tensor  # (T, C)
    attention_input: torch.Tensor  # (T, C) what Q, K, V are computed from (LayerNorm(layer_input) when pre-LN)
    q: torch.Tensor  # (H, T, D)
    k: torch.Tensor  # (H, T, D)
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


# --- explain ---------------------------------------------------------------------------------------------------


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
    """Run `input_ids` (with [MASK] at `mask_position`, default the middle) through `model` once, capturing every
    stage with forward hooks; compute the MLM loss against `label` (default: the id that was masked), its gradient
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
    max_t = model.bert.embeddings.max_positions
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
    model.eval()  # dropout off: the pass is deterministic, and the hooked tensors are exactly what the model used
    try:
        return _explain(model, ids, model_ids, tokens, model_tokens, layer, head, mask_position, mask_token_id,
                        label, float(lr), id_to_text)
    finally:
        model.train(was_training)


def _explain(model, ids, model_ids, tokens, model_tokens, layer, head, pos, mask_token_id, label, lr, id_to_text):
    config = model.config
    T, V, C = len(ids), config.vocab_size, config.hidden_size
    emb = model.bert.embeddings
    block = model.bert.encoder.layer[layer]
    attn = block.attention
    dtype = emb.word_embeddings.weight.dtype

    # Hooks record (inputs, output) of the model's own submodules during the one forward pass below.
    seen: dict[str, tuple] = {}
    watched = {
        "word": emb.word_embeddings,
        "segment": emb.token_type_embeddings,
        "embedding_norm": emb.LayerNorm,
        "query": attn.self.query,
        "key": attn.self.key,
        "value": attn.self.value,
        "self_attention": attn.self,
        "attention_dense": attn.output.dense,
        "attention_output": attn.output,
        "intermediate_dense": block.intermediate.dense,
        "intermediate": block.intermediate,
        "output_dense": block.output.dense,
        "output": block.output,
        "transform": model.cls.predictions.transform,
    }

    def recorder(name):
        def hook(module, args, output):
            seen[name] = (args, output)

        return hook

    handles = [m.register_forward_hook(recorder(name)) for name, m in watched.items()]
    device = emb.word_embeddings.weight.device
    input_tensor = torch.tensor([model_ids], device=device)  # (B, T) = (1, T)
    labels = torch.full((1, T), IGNORE_INDEX, device=device)
    labels[0, pos] = label  # only the masked position carries a label
    try:
        with torch.enable_grad():
            out = model(input_tensor, labels=labels, output_hidden_states=True, output_attentions=True)
    finally:
        for h in handles:
            h.remove()

    def row0(x: torch.Tensor) -> torch.Tensor:
        """(1, T, X) -> (T, X), detached."""
        return x.detach().reshape(T, -1)

    checks: dict[str, Check] = {}

    # --- embeddings: x = LayerNorm(W[ids] + S[segments] + P[positions])
    W = emb.word_embeddings.weight.detach()  # (V, C)
    word = row0(seen["word"][1])  # (T, C)
    one_hot = torch.nn.functional.one_hot(torch.tensor(model_ids, device=device), V).to(dtype)  # (T, V)
    checks["one_hot"] = _compare("one_hot(ids) @ W equals the lookup W[ids]", one_hot @ W, word)
    segment_ids = seen["segment"][0][0].detach().reshape(T)  # (T,)
    segment = row0(seen["segment"][1])  # (T, C)
    position = emb.position_vectors(T).detach()  # (T, C), the model's own accessor
    embedding_sum = row0(seen["embedding_norm"][0][0])  # (T, C) LayerNorm's input
    checks["sum"] = _compare("word + segment + position equals LayerNorm's input", word + segment + position,
                             embedding_sum)
    embeddings = row0(seen["embedding_norm"][1])
    hidden_states = torch.stack([row0(h) for h in out.hidden_states])  # (L+1, T, C)
    checks["embeddings"] = _compare("LayerNorm's output is the input of layer 0", embeddings, hidden_states[0])

    # --- the chosen layer: attention
    layer_input = row0(seen["attention_output"][0][1])  # the residual argument of attention.output
    checks["layer_input"] = _compare(f"the residual stream entering layer {layer}", layer_input,
                                     hidden_states[layer])
    attention_input = row0(seen["self_attention"][0][0])
    q, k, v = (attn.self.split_heads(seen[n][1].detach().reshape(1, T, C))[0] for n in ("query", "key", "value"))
    D = q.size(-1)
    if attn.self.rotary:  # RoPE turns each query and key by its position before the dot product
        q, k = rotate_padded(q[None], k[None])
        q, k = q[0], k[0]  # (H, T, D) each
    qh, kh, vh = q[head], k[head], v[head]  # (T, D)
    scores = qh @ kh.T / math.sqrt(D)  # (T, T)
    mask = additive_mask(torch.ones(1, T, device=device), dtype).reshape(T)  # (T,) every key is a real token: all 0
    probs = (scores + mask).softmax(dim=-1)  # (T, T)
    layer_probs = out.attentions[layer][0].detach()  # (H, T, T) the model's own
    checks["probs"] = _compare("softmax(Q K^T / sqrt(D) + M) equals the model's attention probabilities", probs,
                               layer_probs[head])
    head_context = probs @ vh  # (T, D)
    context = row0(seen["self_attention"][1][0])  # (T, C) heads concatenated
    checks["context"] = _compare(f"probs @ V equals head {head}'s slice of the self-attention output", head_context,
                                 context[:, head * D : (head + 1) * D])
    attention_projection = row0(seen["attention_dense"][1])
    attention_output = row0(seen["attention_output"][1])
    residual_sum = layer_input + attention_projection
    mine = residual_sum if config.norm_first else attn.output.LayerNorm(residual_sum).detach()
    checks["attention_output"] = _compare("the residual step equals attention.output's output", mine,
                                          attention_output)

    # --- the chosen layer: feed-forward
    ffn_input = row0(seen["intermediate"][0][0])
    ffn_pre = row0(seen["intermediate_dense"][1])
    ffn_hidden = row0(seen["intermediate"][1])
    checks["gelu"] = _compare(f"{config.hidden_act}(x W_1 + b_1) equals the intermediate module's output",
                              block.intermediate.act(ffn_pre), ffn_hidden)
    ffn_out = row0(seen["output_dense"][1])
    layer_output = row0(seen["output"][1])
    residual_sum = attention_output + ffn_out
    mine = residual_sum if config.norm_first else block.output.LayerNorm(residual_sum).detach()
    checks["layer_output"] = _compare("the residual step equals the output module's output", mine, layer_output)
    theirs = hidden_states[layer + 1]
    final_norm = model.bert.encoder.final_layer_norm
    what = f"it is hidden state {layer + 1} of the model"
    mine = layer_output
    if final_norm is not None and layer == config.num_hidden_layers - 1:  # pre-LN: one more LayerNorm at the end
        mine, what = final_norm(layer_output).detach(), f"after the final LayerNorm, {what}"
    checks["hidden_state"] = _compare(what, mine, theirs)

    # --- the MLM head at the masked position
    transformed_rows = seen["transform"][1].detach().reshape(-1, C)  # (T, C), or (1, C) with sparse prediction
    transformed = transformed_rows[pos] if transformed_rows.size(0) == T else transformed_rows[0]
    logits_all = out.logits.detach()
    logits = logits_all[0, pos] if logits_all.dim() == 3 else logits_all[0]  # (V,)
    decoder = model.cls.predictions.decoder
    checks["logits"] = _compare("u @ W^T + b (W the word-embedding matrix) equals the model's logits",
                                transformed @ W.T + decoder.bias.detach(), logits)
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
    W_index = next(i for i, p in enumerate(params) if p is emb.word_embeddings.weight)
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
        param_name=f"bert.embeddings.word_embeddings.weight[{label}]",
        param_before=W[label].clone(),
        param_grad=param_grad,
        param_after=stepped.bert.embeddings.word_embeddings.weight[label].detach().clone(),
        loss_after=loss_after,
        checks=checks,
    )


# --- render ----------------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    s = f"{x:8.4f}"
    return s.replace("-0.0000", " 0.0000")  # a tiny negative rounds to zero without a sign


def _vec(x: torch.Tensor, k: int = SHOW_DIMS) -> str:
    values = x.tolist()
    more = ", ..." if len(values) > k else ""
    return "[" + ",".join(_num(v) for v in values[:k]) + more + " ]"


def _shown_rows(e: Explanation) -> list[int]:
    """Which tokens' rows to print: the first two, the masked one and the last."""
    T = len(e.model_ids)
    return sorted({t for t in (0, 1, e.mask_position, T - 1) if t < T})


def _label(e: Explanation, t: int) -> str:
    return f"t={t:<2} {e.model_tokens[t][:10]:<10}"


def render(e: Explanation) -> str:
    """The explanation as text: per stage the formula, the shapes and the first numbers, and every check."""
    cfg = e.config
    T, V, C, I = len(e.model_ids), cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    H, D, L = cfg.num_attention_heads, cfg.head_size, cfg.num_hidden_layers
    rows = _shown_rows(e)
    lines: list[str] = []
    add = lines.append

    def stage(title: str) -> None:
        add("")
        add(f"== {title} " + "=" * max(3, 76 - len(title)))

    def table(x: torch.Tensor, which: list[int] | None = None) -> None:
        for t in rows if which is None else which:
            add(f"  {_label(e, t)} {_vec(x[t])}")

    def check(name: str) -> None:
        c = e.checks[name]
        verdict = "yes" if c.ok else f"NO (max |difference| {c.max_diff:.3g})"
        add(f"  check: {c.what}: matches the model: {verdict}")

    def dims(n: int) -> str:
        return f"all {n}" if n <= SHOW_DIMS else f"the first {SHOW_DIMS} of {n}"

    ln = "pre-LN" if cfg.norm_first else "post-LN, as BERT"
    add("minibert explained: one sequence through BertForMaskedLM, then one SGD step")
    add(f"model: V={V} C={C} H={H} D={D} L={L} I={I}, {ln}, {cfg.hidden_act}, {e.W.dtype}".replace("torch.", ""))
    add(f"shapes: B=1 sequence of T={T} tokens; tables show rows t={', '.join(map(str, rows))} and "
        f"{dims(C)} dimensions, 4 decimals")

    stage("1. tokens")
    add(f"  tokens     {' '.join(e.tokens)}")
    add(f"  input_ids  {' '.join(map(str, e.input_ids))}")
    add(f"  position {e.mask_position} ({e.tokens[e.mask_position]}) is replaced by [MASK] = id {e.mask_token_id}; "
        f"the label there is {e.label} ({e.label_text})")
    add(f"  model input_ids (B, T) = (1, {T}): {' '.join(map(str, e.model_ids))}")

    stage("2. word vectors: x_word = one_hot(word_index) @ W")
    add(f"  W (V, C) = ({V}, {C}): row i is the vector of word i; one_hot (T, V) = ({T}, {V}) has a single 1 per row,")
    add("  so the product picks rows of W: nn.Embedding does that lookup without the V-wide multiplication")
    t = rows[1] if len(rows) > 1 else rows[0]
    nz = int(e.one_hot[t].argmax())
    add(f"  one_hot row t={t}: 1 at column {nz}, 0 elsewhere; W[{nz}] = {_vec(e.W[nz])}")
    add(f"  x_word (B, T, C) = (1, {T}, {C}):")
    table(e.word)
    check("one_hot")

    stage("3. position vectors: x_pos = P[t]")
    kind = "learned table" if cfg.position_embedding_type == "absolute" else "fixed sine/cosine table"
    add(f"  P (max_positions, C) = ({cfg.max_position_embeddings}, {C}), a {kind}; rows 0..{T - 1} are used, "
        f"(T, C) = ({T}, {C}):")
    table(e.position)

    stage("4. segment vectors: x_seg = S[segment_id]")
    segs = sorted(set(e.segment_ids.tolist()))
    add(f"  S (type_vocab_size, C) = ({cfg.type_vocab_size}, {C}); segment ids {segs} (one sentence: all 0), "
        f"(T, C) = ({T}, {C}):")
    table(e.segment)

    stage("5. sum and LayerNorm: x = LayerNorm(x_word + x_pos + x_seg)")
    add("  LayerNorm(s) = gamma * (s - mean(s)) / sqrt(var(s) + eps) + beta, over the C numbers of each token")
    add("  (BERT's tables have no bias of their own: LayerNorm's beta is the document's single '+ bias')")
    add(f"  s = x_word + x_pos + x_seg, (B, T, C) = (1, {T}, {C}):")
    table(e.embedding_sum)
    check("sum")
    add(f"  x = LayerNorm(s), (B, T, C) = (1, {T}, {C}):")
    table(e.embeddings)
    check("embeddings")

    stage(f"6. encoder.layer[{e.layer}] (of {L}), head {e.head} (of {H}): Q, K, V")
    if cfg.norm_first:
        add("  pre-LN: the block reads a = LayerNorm(x); Q = a W_q + b_q, K = a W_k + b_k, V = a W_v + b_v")
    else:
        add("  Q = x W_q + b_q, K = x W_k + b_k, V = x W_v + b_v, with x the layer's input")
    add(f"  x (B, T, C) = (1, {T}, {C}):")
    table(e.layer_input)
    check("layer_input")
    if cfg.norm_first:
        add(f"  a = LayerNorm(x), (B, T, C) = (1, {T}, {C}):")
        table(e.attention_input)
    add(f"  each (B, T, C) = (1, {T}, {C}), split into H={H} heads of D=C/H={D}: (B, H, T, D) = (1, {H}, {T}, {D})")
    for name, x in (("Q", e.q), ("K", e.k), ("V", e.v)):
        add(f"  {name}_{e.head} (T, D) = ({T}, {D}):")
        table(x[e.head])

    cols = min(T, SHOW_KEYS)
    more = f" (first {cols} keys)" if cols < T else ""

    def matrix(x: torch.Tensor) -> None:
        which = range(T) if T <= SHOW_KEYS else rows
        header = "".join(f"{'k=' + str(j):>8}" for j in range(cols))
        add(f"  {'':<15}  {header}")
        for i in which:
            add(f"  {_label(e, i)}  " + "".join(_num(float(v)) for v in x[i, :cols]) + (" ..." if more else ""))

    stage(f"7. scaled scores: S = Q_{e.head} K_{e.head}^T / sqrt(D)")
    if cfg.position_embedding_type == "rotary":
        add("  rotary positions: Q and K are first rotated pair by pair by t * theta_i (minibert/rotary.py)")
    add(f"  (T, D) @ (D, T) -> (T, T) = ({T}, {T}); row = query token, column = key token{more}")
    add(f"  1/sqrt(D) = 1/sqrt({D}) = {1 / math.sqrt(D):.4f} keeps the scores' variance near 1 for any head size")
    matrix(e.scores)

    stage("8. the mask: M = 0 for real keys, the dtype's minimum for [PAD] keys")
    add(f"  no attention_mask is given, so every key is real: M (T,) = ({T},) =")
    add(f"  {_vec(e.mask, SHOW_KEYS)}")

    stage(f"9. attention probabilities: A = softmax(S + M), over each row")
    add(f"  A (T, T) = ({T}, {T}); A[i, j] = exp(S[i, j]) / sum_j' exp(S[i, j']){more}")
    matrix(e.probs)
    sums = e.probs.sum(-1)
    add(f"  row sums: {' '.join(f'{float(s):.4f}' for s in sums[:SHOW_KEYS])}{' ...' if T > SHOW_KEYS else ''} "
        f"(max |sum - 1| = {float((sums - 1).abs().max()):.1e})")
    check("probs")

    stage(f"10. weighted sum: context_{e.head} = A V_{e.head}, then the heads side by side")
    add(f"  (T, T) @ (T, D) -> (T, D) = ({T}, {D}): each token's context is an A-weighted average of the V rows")
    table(e.head_context)
    check("context")
    add(f"  concatenating the H={H} heads: (B, T, C) = (1, {T}, {C}):")
    table(e.context)

    stage("11. output projection, residual and LayerNorm")
    if cfg.norm_first:
        add("  pre-LN: x1 = x + (context W_o + b_o)      (no LayerNorm here: it ran on the block's input)")
    else:
        add("  x1 = LayerNorm(x + context W_o + b_o): W_o (C, C) mixes the heads; '+ x' is the residual")
    add(f"  context W_o + b_o, (B, T, C) = (1, {T}, {C}):")
    table(e.attention_projection)
    add(f"  x1, (B, T, C) = (1, {T}, {C}):")
    table(e.attention_output)
    check("attention_output")

    stage("12. feed-forward: x2 = LayerNorm(x1 + GELU(x1 W_1 + b_1) W_2 + b_2)"
          if not cfg.norm_first else "12. feed-forward: x2 = x1 + GELU(LayerNorm(x1) W_1 + b_1) W_2 + b_2")
    add("  GELU(z) = z * Phi(z) = z * (1 + erf(z / sqrt(2))) / 2: a smooth ReLU" if cfg.hidden_act == "gelu"
        else f"  activation: {cfg.hidden_act}")
    if cfg.norm_first:
        add(f"  LayerNorm(x1), the feed-forward's input, (B, T, C) = (1, {T}, {C}):")
        table(e.ffn_input)
    z_in = "LayerNorm(x1)" if cfg.norm_first else "x1"
    add(f"  z = {z_in} W_1 + b_1, widening C -> I: (B, T, I) = (1, {T}, {I}) ({dims(I)} shown):")
    table(e.ffn_pre)
    add(f"  GELU(z), (B, T, I) = (1, {T}, {I}):")
    table(e.ffn_hidden)
    check("gelu")
    add(f"  GELU(z) W_2 + b_2, narrowing I -> C: (B, T, C) = (1, {T}, {C}):")
    table(e.ffn_out)
    add(f"  x2 (B, T, C) = (1, {T}, {C}), the output of layer {e.layer}:")
    table(e.layer_output)
    check("layer_output")
    check("hidden_state")

    stage(f"13. all {L} layers: the same block, each with its own weights")
    add(f"  hidden state at the masked position t={e.mask_position}, (C,) = ({C},):")
    for i in range(L + 1):
        name = "embeddings" if i == 0 else f"layer {i - 1} out"
        add(f"  {name:<15}  {_vec(e.hidden_states[i, e.mask_position])}")

    stage("14. MLM head: p = softmax(LayerNorm(GELU(h W_t + b_t)) W^T + b)")
    add(f"  h = the last hidden state at t={e.mask_position} ([MASK]), (C,) = ({C},); u = LayerNorm(GELU(h W_t + b_t)):")
    add(f"  {'u':<15}  {_vec(e.transformed)}")
    add(f"  logits = u W^T + b: (C,) @ (C, V) -> (V,) = ({V},); W is the word-embedding matrix itself (tied weights)")
    add(f"  {'logits':<15}  {_vec(e.logits)}")
    check("logits")
    add(f"  p = softmax(logits), (V,) = ({V},); the top {len(e.top)}:")
    for rank, (i, text, p) in enumerate(e.top, 1):
        add(f"    {rank}. id {i:<6} {text[:16]:<16} p = {p:.4f}")

    stage("15. loss: cross-entropy at the masked position, loss = -log p[label]")
    p_label = float(e.vocab_probs[e.label])
    add(f"  label = {e.label} ({e.label_text}), p[label] = {p_label:.4f}; loss = -log {p_label:.4f} = "
        f"{e.loss_before:.4f}")
    add(f"  (a uniform guess over V={V} ids would give log V = {math.log(V):.4f})")
    check("loss")

    stage("16. one SGD step: param = param - lr * grad, on every parameter")
    add(f"  grad = d loss / d param by backpropagation, for all {e.num_parameters} parameters; "
        f"||grad|| = {e.grad_norm:.4f}; lr = {e.lr:g}")
    add(f"  one parameter, {e.param_name} (the label's row of W, {dims(C)} numbers):")
    add(f"  {'before':<15}  {_vec(e.param_before)}")
    add(f"  {'grad':<15}  {_vec(e.param_grad)}")
    add(f"  {'after':<15}  {_vec(e.param_after)}")
    predicted = e.loss_before - e.lr * e.grad_norm ** 2
    add(f"  loss before {e.loss_before:.4f} -> after {e.loss_after:.4f} "
        f"({'lower' if e.loss_after < e.loss_before else 'NOT lower'}; "
        f"for a small lr, about loss - lr * ||grad||^2 = {predicted:.4f})")
    return "\n".join(lines) + "\n"


# --- heatmaps --------------------------------------------------------------------------------------------------

# Fonts tried for token labels, so that Chinese tokens are drawn when such a font is installed.
LABEL_FONTS = ["DejaVu Sans", "Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "Source Han Sans SC",
               "SimHei", "Microsoft YaHei", "PingFang SC"]


def _drawable_labels(tokens: list[str], ids: list[int]) -> tuple[list[str], list[str]]:
    """The installed fonts among LABEL_FONTS, and each token's label: its text if they can draw it, else "#id"."""
    from matplotlib import font_manager, ft2font

    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    families = [name for name in LABEL_FONTS if name in installed]
    covered: set[int] = set()
    for name in families:
        covered.update(ft2font.FT2Font(installed[name]).get_charmap())
    labels = [tok if all(ord(ch) in covered for ch in tok) else f"#{i}" for tok, i in zip(tokens, ids)]
    return families, labels


def _plot_directory(directory: str | Path) -> Path:
    """`directory`, created if needed."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{directory}: cannot create the directory ({err.strerror})") from None
    return directory


def plot_attention(e: Explanation, directory: str | Path) -> list[Path]:
    """One PNG heatmap per head of the explained layer: A = softmax(Q K^T / sqrt(D) + M), rows the querying tokens,
    columns the tokens attended to. Returns the paths written."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing left open

    directory = _plot_directory(directory)
    families, labels = _drawable_labels(e.model_tokens, e.model_ids)
    H, T = e.layer_probs.shape[0], len(e.model_ids)
    size = max(4.0, 0.4 * T + 2.0)
    paths = []
    with rc_context({"font.family": families or ["sans-serif"]}):
        for h in range(H):
            fig = Figure(figsize=(size + 1.0, size))
            ax = fig.add_subplot()
            image = ax.imshow(e.layer_probs[h].float().cpu().numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(T), labels, rotation=90)
            ax.set_yticks(range(T), labels)
            ax.set_xlabel("key: the token attended to")
            ax.set_ylabel("query: the token attending")
            ax.set_title(f"layer {e.layer}, head {h}: softmax(QK^T / sqrt(D))")
            fig.colorbar(image, ax=ax, label="attention probability")
            path = directory / f"attention_layer{e.layer}_head{h}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            paths.append(path)
    return paths


# --- command line ----------------------------------------------------------------------------------------------


def _load_run(run_dir: str):
    """(model, tokenizer or None) from a run directory: RUN/config.json, RUN/model.safetensors, RUN/tokenizer/."""
    from .checkpoint import load_pretrained

    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"--run {run_dir}: no such directory")
    model, report = load_pretrained(path, BertForMaskedLM)
    if report.newly_initialised:
        print(f"note: {run_dir} has no MLM head ({len(report.newly_initialised)} tensors); its weights are random",
              file=sys.stderr)
    tok = None
    if (path / "tokenizer").is_dir():
        import tokenizer

        tok = tokenizer.load(path / "tokenizer")
    return model.eval(), tok


def _token_text(tok) -> Callable[[int], str]:
    def text(i: int) -> str:
        s = tok.id_to_token(i) if hasattr(tok, "id_to_token") else tok.decode([i])
        return s.strip() or f"#{i}"

    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minibert.explain",
        description="Print, stage by stage, the formulas BERT applies to one sequence, with shapes and numbers: "
        "embeddings, one layer's attention and feed-forward, the MLM prediction at a [MASK], its loss, and one "
        "SGD step. Without --run: a toy model with random weights and the design document's ids 1..10.",
        epilog="exit status: 0 on success, 1 if a value shown does not match the model, 2 on bad input",
    )
    p.add_argument("text", nargs="?", help="text to explain (needs --run, for its tokenizer)")
    p.add_argument("--ids", type=int, nargs="+", metavar="ID", help="token ids instead of text (default 1..10)")
    p.add_argument("--run", metavar="RUN_DIR", help="a trained run directory (config.json, model.safetensors, "
                   "tokenizer/) instead of the toy model")
    p.add_argument("--layer", type=int, default=0, help="encoder layer to explain, from 0 (default 0)")
    p.add_argument("--head", type=int, default=0, help="attention head to explain, from 0 (default 0)")
    p.add_argument("--mask-position", type=int, help="position replaced by [MASK], from 0 (default: the middle)")
    p.add_argument("--mask-id", type=int, help="id of [MASK] (default: the tokenizer's, or 15 for the toy model)")
    p.add_argument("--label", type=int, help="the id the loss asks for at the masked position (default: the "
                   "original id there)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of the SGD step (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the toy model's weights (default 0)")
    p.add_argument("--plot", metavar="DIR", help="also write one attention heatmap PNG per head of the layer")
    p.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                   help="print the worked example of docs/MATH.md (ignores the other options); with FILE, "
                   "rewrite that section of FILE in place")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.markdown is not None:
            from .worked_example import worked_example_markdown, write_section

            if args.markdown == "-":
                sys.stdout.write(worked_example_markdown())
            else:
                write_section(args.markdown)
                print(f"wrote the worked example into {args.markdown}")
            return 0
        if args.text is not None and args.ids is not None:
            raise InputError("give either text or --ids, not both")
        if args.plot is not None:
            _plot_directory(args.plot)  # fail before the long printout, not after it
        tok = None
        if args.run is not None:
            model, tok = _load_run(args.run)
        else:
            model = toy_model(args.seed)
        if args.text is not None:
            if tok is None:
                raise InputError("text needs a tokenizer: pass --run RUN_DIR (with RUN_DIR/tokenizer/), or use --ids")
            ids = list(tok.encode(args.text).input_ids)
        elif args.ids is not None:
            ids = args.ids
        elif args.run is None:
            ids = DOCUMENT_IDS
        else:
            raise InputError("with --run, give text or --ids")
        mask_id = args.mask_id
        if mask_id is None:
            if tok is not None:
                mask_id = tok.mask_token_id
            elif args.run is not None:
                raise InputError(f"{args.run} has no tokenizer/ to say which id is [MASK]: pass --mask-id")
        e = explain(model, ids, layer=args.layer, head=args.head, mask_position=args.mask_position,
                    label=args.label, lr=args.lr, mask_token_id=mask_id,
                    id_to_text=_token_text(tok) if tok is not None else None)
        sys.stdout.write(render(e))
        if args.plot is not None:
            for path in plot_attention(e, args.plot):
                print(f"wrote {path}")
        return 0 if e.all_checks_pass else 1
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
