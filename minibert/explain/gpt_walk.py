"""GPT-2 walked through: one sequence through GPT2LMHeadModel, the causal mask, the shifted next-token loss.

    python -m minibert.explain --model gpt2                      # the toy GPT-2 and the ids 1..10
    python -m minibert.explain --model gpt2 --ids 3 1 4 1 5 --layer 1 --head 1

Shapes: B batch (1 here), T tokens, C hidden size (n_embd), H heads, D head size (C = H * D), I feed-forward size,
V vocabulary size, L layers.

As for BERT (capture.py), nothing here is a second copy of the model: its trace (`output_trace=True`,
minibert/trace.py) keeps what flows through one forward pass, and each value recomputed for display (the mask,
softmax(Q K^T / sqrt(D) + M), the block's projections and residual sums, with the parameters read by their checkpoint
names; the logits, the loss by hand, the greedy token) is compared with the model's own, each comparison a `Check`.

The toy: TOY_GPT_CONFIG, weights from GPT-2's own initialisation under `seed` with std 0.5 in place of 0.02 (with
0.02 every attention row of an untrained model is uniform), in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import causal_mask
from ..errors import InputError
from ..feed_forward import activation
from ..generate import GenerationConfig, generate
from ..gpt import GPT2Config, GPT2LMHeadModel
from ..heads import IGNORE_INDEX
from .capture import TOP_K, Check, _compare, _ids_list, _in_range
from .render import SHOW_KEYS
from .toy import DOCUMENT_IDS
from .walk_common import (
    check_line,
    markdown_section,
    mask_cell,
    matrix_rows,
    seeded_float64,
    vector_rows,
)

TOY_GPT_CONFIG = dict(
    vocab_size=16,
    n_positions=32,
    n_embd=8,
    n_layer=2,
    n_head=2,
    n_inner=16,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    initializer_range=0.5,
    bos_token_id=None,
    eos_token_id=None,  # no token ends the toy's text: the greedy step always writes one
    pad_token_id=None,
    attn_impl="math",
)
MARKDOWN_NAME = "gpt2"
REFRESH = "python -m minibert.explain --model gpt2 --markdown"


def toy_gpt(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    """The toy GPT2LMHeadModel: TOY_GPT_CONFIG (with any field overridden), GPT-2's initialisation under `seed`,
    float64, eval mode."""
    config = GPT2Config(**{**TOY_GPT_CONFIG, **overrides})
    return seeded_float64(lambda: GPT2LMHeadModel(config), seed)


@dataclass
class GPTExplanation:
    """One sequence through GPT2LMHeadModel (batch row 0, so no B axis), the next-token loss and the greedy token."""

    config: GPT2Config
    input_ids: list[int]  # (T,)
    tokens: list[str]  # (T,) text of input_ids
    layer: int
    head: int
    # --- embeddings
    wte_rows: torch.Tensor  # (T, C) wte[input_ids]
    wpe_rows: torch.Tensor  # (T, C) wpe[0..T-1]
    embeddings: torch.Tensor  # (T, C) wte[id] + wpe[t], the input of block 0
    # --- the chosen block
    block_input: torch.Tensor  # (T, C) x, the residual stream entering the block
    attention_input: torch.Tensor  # (T, C) a = LN_1(x)
    q: torch.Tensor  # (H, T, D)
    k: torch.Tensor  # (H, T, D)
    v: torch.Tensor  # (H, T, D)
    mask: torch.Tensor  # (T, T) 0 where j <= i, -inf above the diagonal (the model writes the dtype's minimum)
    scores: torch.Tensor  # (T, T) Q_h K_h^T / sqrt(D) for the chosen head, before the mask
    probs: torch.Tensor  # (H, T, T) softmax(S + M), every head of the chosen block
    attention_output: torch.Tensor  # (T, C) c_proj(context)
    after_attention: torch.Tensor  # (T, C) x1 = x + c_proj(context)
    block_output: torch.Tensor  # (T, C) x2 = x1 + MLP(LN_2(x1))
    # --- the LM head and the loss
    final: torch.Tensor  # (T, C) LN_f(h), after the last block
    logits: torch.Tensor  # (T, V) LN_f(h) wte^T
    labels: list[int]  # (T,) the label of position t: input t + 1, then -100 at the last position
    label_probs: list[float]  # (T-1,) p_t[x_{t+1}]
    token_losses: list[float]  # (T-1,) -log p_t[x_{t+1}]
    loss_by_hand: float
    model_loss: float
    # --- the greedy next token
    top: list[tuple[int, str, float]]  # (id, text, probability) at the last position, most probable first
    next_token: int
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def all_checks_pass(self) -> bool:
        return all(c.ok for c in self.checks.values())


def explain_gpt(model: GPT2LMHeadModel, input_ids: Sequence[int] | torch.Tensor = DOCUMENT_IDS, *,
                layer: int = 0, head: int = 0) -> GPTExplanation:
    """Run `input_ids` through `model` once, keeping its trace; show `layer`'s `head`, the loss of predicting every
    token from the ones before it, and the greedy next token. The model is left as it was (weights and mode)."""
    if not isinstance(model, GPT2LMHeadModel):
        raise InputError(f"the GPT-2 walk-through needs a GPT2LMHeadModel, not {type(model).__name__}")
    config = model.config
    ids = _ids_list(input_ids)
    T, V = len(ids), config.vocab_size
    for t, i in enumerate(ids):
        if not 0 <= i < V:
            raise InputError(f"token id {i} at position {t} is out of range: the vocabulary has {V} ids, numbered "
                             f"0..{V - 1}")
    if T < 2:
        raise InputError("give at least 2 token ids: with one, no token follows it and there is no next-token loss")
    if T + 1 > config.n_positions:
        raise InputError(f"{T} tokens and the greedy next one is more than the model's n_positions "
                         f"({config.n_positions}); give at most {config.n_positions - 1} ids")
    _in_range("layer", layer, config.n_layer, "the model has {n} layers")
    _in_range("head", head, config.n_head, "each layer has {n} heads")
    was_training = model.training
    model.eval()  # dropout off: the traced tensors are exactly what the model used
    try:
        with torch.no_grad():
            return _explain_gpt(model, ids, layer, head)
    finally:
        model.train(was_training)


def conv1d(x: torch.Tensor, param: Callable[[str], torch.Tensor], name: str) -> torch.Tensor:
    """x W + b with W stored (in, out) under the checkpoint name `name`, GPT-2's layout (its `Conv1D`)."""
    return torch.addmm(param(f"{name}.bias"), x, param(f"{name}.weight"))  # (T, in) @ (in, out) + (out,)


def _explain_gpt(model: GPT2LMHeadModel, ids: list[int], layer: int, head: int) -> GPTExplanation:
    config = model.config
    T, C, H, D = len(ids), config.n_embd, config.n_head, config.head_size
    block = f"transformer.h.{layer}"  # the chosen block's parameters, by their checkpoint names

    def param(name: str) -> torch.Tensor:
        return model.get_parameter(name).detach()

    wte = param("transformer.wte.weight")  # (V, C)
    device, dtype = wte.device, wte.dtype

    def layer_norm(x: torch.Tensor, name: str) -> torch.Tensor:
        """gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta, gamma and beta stored as `name`."""
        return F.layer_norm(x, (C,), param(f"{name}.weight"), param(f"{name}.bias"), config.layer_norm_epsilon)

    def text(i: int) -> str:
        return f"#{i}"  # tokens have no text without a tokenizer

    input_tensor = torch.tensor([ids], device=device)  # (B, T) = (1, T)
    out = model(input_tensor, labels=input_tensor, output_trace=True)  # labels are the inputs: shifted in the loss
    traced = out.trace.blocks[layer]

    def row0(x: torch.Tensor) -> torch.Tensor:
        """(1, T, X) -> (T, X)."""
        return x.detach().reshape(T, -1)

    checks: dict[str, Check] = {}

    # --- embeddings: x_0 = wte[id] + wpe[t]
    wte_rows = wte[ids]  # (T, C)
    wpe_rows = param("transformer.wpe.weight")[:T]  # (T, C)
    embeddings = row0(out.trace.blocks[0].input)
    checks["embeddings"] = _compare("wte[id] + wpe[t] equals the input of block 0", wte_rows + wpe_rows, embeddings)

    # --- the chosen block: a = LN_1(x); Q, K, V = a W_attn + b_attn, split into heads
    block_input = row0(traced.input)
    attention_input = row0(traced.attention_input)
    checks["ln_1"] = _compare("LN_1(x) equals what the attention reads", layer_norm(block_input, f"{block}.ln_1"),
                              attention_input)
    qkv = conv1d(attention_input, param, f"{block}.attn.c_attn")  # (T, C) @ (C, 3C) -> (T, 3C)
    q, k, v = (x.reshape(T, H, D).transpose(0, 1) for x in qkv.split(C, dim=-1))  # 3 x (T, C) -> 3 x (H, T, D)

    # --- the causal mask: M[i, j] = 0 if j <= i else -inf
    model_mask = causal_mask(T, T, None, dtype, device)[0, 0]  # (T, T), the model's own, -inf as the dtype's minimum
    mask = torch.zeros(T, T, dtype=dtype, device=device).masked_fill(model_mask == torch.finfo(dtype).min,
                                                                   -math.inf)  # (T, T)
    formula = torch.full((T, T), -math.inf, dtype=dtype, device=device).triu(1)  # (T, T): -inf where j > i
    checks["mask"] = Check("mask[i, j] = -inf if j > i else 0 is the model's causal_mask (its -inf the dtype's "
                           "minimum)", 0.0 if torch.equal(mask, formula) else math.inf, torch.equal(mask, formula))

    # --- attention: A = softmax(Q K^T / sqrt(D) + M), context = A V
    all_scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (H, T, D) @ (H, D, T) -> (H, T, T)
    probs = (all_scores + model_mask).softmax(dim=-1)  # (H, T, T): exactly 0 above the diagonal
    context = (probs @ v).transpose(0, 1).reshape(T, C)  # (H, T, D) -> (T, H, D) -> (T, C): heads concatenated
    attention_output = row0(traced.attention_output)
    checks["attention"] = _compare("c_proj(softmax(Q K^T / sqrt(D) + M) V) equals the attention module's output",
                                   conv1d(context, param, f"{block}.attn.c_proj"), attention_output)

    # --- the rest of the block: x1 = x + attention, x2 = x1 + MLP(LN_2(x1))
    after_attention = block_input + attention_output  # (T, C)
    block_output = row0(traced.output)
    act = activation(config.activation_function)
    mlp = conv1d(act(conv1d(layer_norm(after_attention, f"{block}.ln_2"), param, f"{block}.mlp.c_fc")), param,
                 f"{block}.mlp.c_proj")  # (T, C) -> (T, I) -> (T, C)
    checks["block"] = _compare("x1 + MLP(LN_2(x1)) equals the block's output", after_attention + mlp, block_output)

    # --- the LM head: logits = LN_f(h) wte^T (the token embedding itself, no bias)
    final = out.last_hidden_state.detach()[0]  # (T, C), after LN_f
    logits = out.logits.detach()[0]  # (T, V)
    checks["logits"] = _compare("LN_f(h) @ wte^T equals the model's logits", final @ wte.T, logits)

    # --- the next-token loss by hand: position t predicts token t + 1
    labels = ids[1:] + [IGNORE_INDEX]  # (T,): the model's shifted labels
    log_probs = logits[:-1].log_softmax(dim=-1)  # (T-1, V): positions 0 .. T-2
    token_losses = -log_probs.gather(1, torch.tensor(ids[1:], device=device)[:, None])[:, 0]  # (T-1,)
    loss_by_hand = token_losses.mean()
    checks["loss"] = _compare("mean_t -log p_t[x_{t+1}] equals the model's loss", loss_by_hand, out.loss.detach())

    # --- the greedy next token: argmax of the last position's logits
    last = logits[-1].softmax(dim=-1)  # (V,)
    top_p, top_i = last.topk(min(TOP_K, config.vocab_size))
    next_token = int(logits[-1].argmax())
    written = generate(model, input_tensor, GenerationConfig(max_new_tokens=1))  # (1, T + 1)
    checks["greedy"] = Check("argmax of the last logits is the token minibert.generate writes",
                             0.0 if int(written[0, -1]) == next_token else math.inf,
                             int(written[0, -1]) == next_token)

    return GPTExplanation(
        config=config, input_ids=ids, tokens=[text(i) for i in ids], layer=layer, head=head,
        wte_rows=wte_rows, wpe_rows=wpe_rows, embeddings=embeddings,
        block_input=block_input, attention_input=attention_input, q=q, k=k, v=v,
        mask=mask, scores=all_scores[head], probs=probs, attention_output=attention_output,
        after_attention=after_attention, block_output=block_output,
        final=final, logits=logits, labels=labels,
        label_probs=token_losses.neg().exp().tolist(), token_losses=token_losses.tolist(),
        loss_by_hand=float(loss_by_hand), model_loss=float(out.loss),
        top=[(int(i), text(int(i)), float(p)) for p, i in zip(top_p, top_i)], next_token=next_token,
        checks=checks,
    )


def render_gpt(e: GPTExplanation) -> str:
    """The GPT-2 explanation as text: per stage the formula, the shapes and the first numbers, and every check."""
    cfg = e.config
    T, V, C, H, D, L, I = (len(e.input_ids), cfg.vocab_size, cfg.n_embd, cfg.n_head, cfg.head_size, cfg.n_layer,
                           cfg.inner_size)
    rows = sorted({0, 1, T - 2, T - 1})
    lines: list[str] = []
    add = lines.append

    def stage(title: str) -> None:
        add("")
        add(f"== {title} " + "=" * max(3, 76 - len(title)))

    def table(x: torch.Tensor) -> None:
        lines.extend(vector_rows(x, rows, e.tokens))

    def check(name: str) -> None:
        add(check_line(e.checks[name]))

    add("minibert explained: one sequence through GPT2LMHeadModel, its next-token loss and the greedy next token")
    add(f"model: V={V} C={C} H={H} D={D} L={L} I={I}, pre-LN, {cfg.activation_function}, "
        f"{str(e.wte_rows.dtype).replace('torch.', '')}")
    add(f"shapes: B=1 sequence of T={T} tokens; tables show rows t={', '.join(map(str, rows))} and the first 8 "
        "dimensions, 4 decimals")

    stage("1. tokens")
    add(f"  input_ids (B, T) = (1, {T}): {' '.join(map(str, e.input_ids))}")
    add("  nothing is masked out of the input: every token is read, and every token but the first is predicted")

    stage("2. embeddings: x_0 = wte[id] + wpe[t]")
    add(f"  wte (V, C) = ({V}, {C}), the token table; wpe (n_positions, C) = ({cfg.n_positions}, {C}), a learned "
        "position table")
    add(f"  no segment table and no LayerNorm on the sum (BERT has both); x_0 (B, T, C) = (1, {T}, {C}):")
    table(e.embeddings)
    check("embeddings")

    stage(f"3. block h[{e.layer}] (of {L}), pre-LN: a = LN_1(x); Q, K, V = a W_attn + b_attn")
    add(f"  W_attn (C, 3C) = ({C}, {3 * C}) is [W_q | W_k | W_v] side by side (GPT-2's Conv1D: y = x W + b)")
    add(f"  x (B, T, C) = (1, {T}, {C}), the residual stream entering the block:")
    table(e.block_input)
    add(f"  a = LN_1(x), (B, T, C) = (1, {T}, {C}):")
    table(e.attention_input)
    check("ln_1")
    add(f"  a W_attn + b_attn: (B, T, 3C) = (1, {T}, {3 * C}), split into Q, K, V and into H={H} heads of D={D}: "
        f"(B, H, T, D) = (1, {H}, {T}, {D})")
    for name, x in (("Q", e.q), ("K", e.k)):
        add(f"  {name}_{e.head} (T, D) = ({T}, {D}):")
        table(x[e.head])

    more = f" (first {SHOW_KEYS} keys)" if T > SHOW_KEYS else ""
    stage("4. the causal mask: M[i, j] = -inf if j > i, else 0")
    add("  token i may read tokens j <= i only, so that predicting token i + 1 cannot read it; M is the same for "
        "every head and every block")
    add(f"  M (T, T) = ({T}, {T}); row = query i, column = key j{more}:")
    lines.extend(matrix_rows(e.mask, e.tokens, mask_cell))
    add("  (the model writes the dtype's minimum for -inf, so that a row whose every key is masked stays finite)")
    check("mask")

    stage(f"5. attention probabilities: A = softmax(Q_{e.head} K_{e.head}^T / sqrt(D) + M), over each row")
    add(f"  S = Q K^T / sqrt(D): (T, D) @ (D, T) -> (T, T) = ({T}, {T}); 1/sqrt(D) = 1/sqrt({D}) = "
        f"{1 / math.sqrt(D):.4f}")
    lines.extend(matrix_rows(e.scores, e.tokens))
    p = e.probs[e.head]
    above = p.triu(1)
    add(f"  A = softmax(S + M), (T, T) = ({T}, {T}): exp(-inf) = 0, so A[i, j] = 0 exactly above the diagonal{more}")
    lines.extend(matrix_rows(p, e.tokens))
    sums = p.sum(-1)
    add(f"  above the diagonal: max A[i, j] over j > i = {float(above.abs().max()):.1f}; row sums: max |sum - 1| = "
        f"{float((sums - 1).abs().max()):.1e}; row 0 reads only itself: A[0, 0] = {float(p[0, 0]):.4f}")
    check("attention")

    stage(f"6. the rest of the block: x1 = x + Attn(LN_1(x)); x2 = x1 + MLP(LN_2(x1)), L={L} such blocks")
    add(f"  MLP(z) = GELU_tanh(z W_fc + b_fc) W_proj + b_proj, widening C -> I = {C} -> {I} and back")
    add(f"  context W_proj + b, the attention's output, (B, T, C) = (1, {T}, {C}):")
    table(e.attention_output)
    add(f"  x2, the block's output, (B, T, C) = (1, {T}, {C}):")
    table(e.block_output)
    check("block")

    stage("7. the LM head: logits = LN_f(h) wte^T, the token table itself (tied weights, no bias)")
    add(f"  LN_f(h) (B, T, C) = (1, {T}, {C}) after the last block; (T, C) @ (C, V) -> (B, T, V) = (1, {T}, {V})")
    add("  logits[t] scores the token at t + 1:")
    table(e.logits)
    check("logits")

    stage("8. the shifted labels: input t predicts token t + 1")
    add(f"  labels = input_ids, shifted left inside the loss; the last position has nothing to predict (-100), so "
        f"T-1 = {T - 1} predictions")
    add(f"  {'t':>4}  {'input x_t':>10}  {'label x_t+1':>12}  {'p_t[label]':>11}  {'-log p':>8}")
    for t in range(T):
        if t < T - 1:
            add(f"  {t:>4}  {e.input_ids[t]:>10}  {e.labels[t]:>12}  {e.label_probs[t]:>11.4f}  "
                f"{e.token_losses[t]:>8.4f}")
        else:
            add(f"  {t:>4}  {e.input_ids[t]:>10}  {e.labels[t]:>12}  {'':>11}  {'':>8}  (nothing follows)")

    stage("9. the next-token loss: L = -(1/(T-1)) sum_{t < T-1} log softmax(logits_t)[x_{t+1}]")
    terms = " + ".join(f"{x:.4f}" for x in e.token_losses[:4]) + (" + ..." if T - 1 > 4 else "")
    add(f"  by hand: ({terms}) / {T - 1} = {e.loss_by_hand:.4f}")
    add(f"  the model's loss, model(ids, labels=ids).loss = {e.model_loss:.4f}")
    add(f"  (a uniform guess over V={V} ids would give log V = {math.log(V):.4f})")
    check("loss")

    stage("10. the greedy next token: argmax_v logits[T-1, v]")
    add(f"  the last position t={T - 1} scores the token after the sequence; p = softmax(logits[{T - 1}]), (V,) = "
        f"({V},), the top {len(e.top)}:")
    for rank, (i, text, prob) in enumerate(e.top, 1):
        add(f"    {rank}. id {i:<6} {text:<8} p = {prob:.4f}")
    add(f"  greedy: {' '.join(map(str, e.input_ids))} -> {e.next_token}")
    check("greedy")
    return "\n".join(lines) + "\n"


def gpt_markdown(seed: int = 0) -> str:
    """The toy GPT-2's walk-through of the ids 1..10 as a markdown section, between its markers."""
    e = explain_gpt(toy_gpt(seed), DOCUMENT_IDS)
    c = TOY_GPT_CONFIG
    intro = (f"The ten word indices 1..10 of 《预训练与微调的详细方法》's example (section 4.3) through a toy "
             f"`GPT2LMHeadModel` with random weights (GPT-2's initialisation under seed {seed}, std "
             f"{c['initializer_range']}): V={c['vocab_size']}, C={c['n_embd']}, H={c['n_head']}, L={c['n_layer']}, "
             f"no dropout, float64. Every token predicts the next one; the next-token loss is "
             f"{e.loss_by_hand:.4f}, and the greedy next token is {e.next_token}.")
    return markdown_section(MARKDOWN_NAME, REFRESH, intro, render_gpt(e))
