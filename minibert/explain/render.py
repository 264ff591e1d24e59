"""Render: an `Explanation` as text, stage by stage: the formula, the shapes, the first numbers and every check.

Shapes: B batch (1 here), T tokens, C hidden size, H heads, D head size (C = H * D), I feed-forward size,
V vocabulary size, L layers.
"""

from __future__ import annotations

import math

import torch

from ..rotary import BASE, rotation_angles
from .capture import Explanation

SHOW_DIMS = 8  # numbers shown per vector
SHOW_KEYS = 12  # columns shown of a T x T matrix


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

    rotary = e.angles is not None
    if rotary:
        stage("3. positions: rotary (RoPE), each query and key turned by its position t")
        add("  no position vector is added (x_pos = 0): in every layer Q and K are turned instead. The D="
            f"{D} numbers of a head")
        add("  pair up as (x_0, x_1), (x_2, x_3), ...; pair i turns by the angle t * theta_i:")
        add("    rope(x, t)_{2i}   = x_{2i} cos(t theta_i) - x_{2i+1} sin(t theta_i)")
        add("    rope(x, t)_{2i+1} = x_{2i} sin(t theta_i) + x_{2i+1} cos(t theta_i),   "
            f"theta_i = {BASE:g}^(-2i/D)")
        add("  so rope(q, i) . rope(k, j) depends on the offset j - i alone: the scores see relative positions")
        add(f"  theta (D/2,) = ({D // 2},): {_vec(rotation_angles(torch.tensor(1), D))}")
        add(f"  angles t * theta_i in radians, (T, D/2) = ({T}, {D // 2}):")
        table(e.angles)
        add(f"  stage 6 shows layer {e.layer}'s Q and K before and after the turn (minibert/rotary.py)")
    else:
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

    terms = "x_word + x_seg" if rotary else "x_word + x_pos + x_seg"
    stage(f"5. sum and LayerNorm: x = LayerNorm({terms})")
    add("  LayerNorm(s) = gamma * (s - mean(s)) / sqrt(var(s) + eps) + beta, over the C numbers of each token")
    add("  (BERT's tables have no bias of their own: LayerNorm's beta plays the '+ bias' of the formula")
    add("  word_vector = W · word_index + bias in 《预训练与微调的详细方法》, section 4.1.2)")
    add(f"  s = {terms}, (B, T, C) = (1, {T}, {C}):")
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
    for name, x in (("Q", e.q_projected), ("K", e.k_projected), ("V", e.v)):
        add(f"  {name}_{e.head} (T, D) = ({T}, {D}):")
        table(x[e.head])
    if rotary:
        add("  rotary: Q and K turned pair by pair by the angles of stage 3, rope(x_t, t) for the token at t:")
        for name, x in (("Q", e.q), ("K", e.k)):
            add(f"  rope({name}_{e.head}) (T, D) = ({T}, {D}):")
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
    if rotary:
        add(f"  rotary positions: with the turned rope(Q_{e.head}) and rope(K_{e.head}) of stage 6")
    add(f"  (T, D) @ (D, T) -> (T, T) = ({T}, {T}); row = query token, column = key token{more}")
    add(f"  1/sqrt(D) = 1/sqrt({D}) = {1 / math.sqrt(D):.4f} keeps the scores' variance near 1 for any head size")
    matrix(e.scores)

    stage("8. the mask: M = 0 for real keys, the dtype's minimum for [PAD] keys")
    add(f"  no attention_mask is given, so every key is real: M (T,) = ({T},) =")
    add(f"  {_vec(e.mask, SHOW_KEYS)}")

    stage("9. attention probabilities: A = softmax(S + M), over each row")
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
