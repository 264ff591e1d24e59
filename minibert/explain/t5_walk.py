"""T5 walked through: one span-corruption example through T5ForConditionalGeneration, encoder and decoder.

    python -m minibert.explain --model t5                        # the toy T5 and the ids 1..10
    python -m minibert.explain --model t5 --ids 3 1 4 1 5 9 2 6 --layer 1 --head 1

Shapes: B batch (1 here), S encoder tokens, T decoder (target) tokens, C model width (d_model), H heads, D head
size (d_kv), V vocabulary size, N relative-position buckets.

The example. Pretraining (train/span.py) drops 15% of a block's tokens, in spans of 3 on average placed at random;
on ten tokens that is one span. So that two sentinels show, the example drops about 30% in at most two spans at
fixed places (`example_noise`); what it does with them is span corruption's own layout (a test checks it against
train/span.py's `span_corruption` for the same spans):

    original  x_0 .. x_{n-1}
    input     the kept tokens, each span replaced by one sentinel <s_j> (id V_tok + j)
    target    <s_0> span_0 <s_1> span_1 ... </s>

and `minibert.generate.fill_spans` puts the target back into the input, which gives the original again.

As for BERT (capture.py), nothing here is a second copy of the model: its trace (`output_trace=True`,
minibert/trace.py) keeps what flows through one forward pass, and each value recomputed for display (RMSNorm, the
buckets and their bias, softmax(Q K^T + B), with the parameters read by their checkpoint names; the logits, the loss
by hand) is compared with the model's own, each a `Check`.

The toy: TOY_T5_CONFIG, T5's own initialisation (initializer_factor 1) under `seed`, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import causal_mask
from ..errors import InputError
from ..generate import fill_spans
from ..t5 import (
    T5Config,
    T5ForConditionalGeneration,
    relative_position_bucket,
    shift_right,
)
from .capture import Check, _compare, _ids_list, _in_range
from .render import SHOW_KEYS
from .toy import DOCUMENT_IDS
from .walk_common import (
    check_line,
    exact_check,
    int_matrix_rows,
    markdown_section,
    mask_cell,
    matrix_rows,
    seeded_float64,
    vector_rows,
)

TOY_VOCAB = 16  # V_tok: the toy tokenizer's ids, 0 <pad> (also the decoder's start) .. 15 </s>
TOY_PAD_ID = 0
TOY_EOS_ID = 15
TOY_SENTINELS = 4  # sentinel j has id TOY_VOCAB + j, as in train/span.py
TOY_T5_CONFIG = dict(
    vocab_size=TOY_VOCAB + TOY_SENTINELS,
    d_model=8,
    d_kv=4,
    d_ff=16,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    decoder_start_token_id=TOY_PAD_ID,
    pad_token_id=TOY_PAD_ID,
    eos_token_id=TOY_EOS_ID,
    attn_impl="math",
)
EXAMPLE_DENSITY = 0.3  # the fraction of tokens the example drops (pretraining's is 0.15)
EXAMPLE_SPANS = 2  # at most
BUCKET_POSITIONS = 8  # rows and columns of the bucket matrices shown
BUCKET_OFFSETS = (-32, -16, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 16, 32)  # offsets j - i shown
MARKDOWN_NAME = "t5"
REFRESH = "python -m minibert.explain --model t5 --markdown"


def toy_t5(seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    """The toy T5ForConditionalGeneration: TOY_T5_CONFIG (with any field overridden), T5's initialisation under
    `seed`, float64, eval mode."""
    config = T5Config(**{**TOY_T5_CONFIG, **overrides})
    return seeded_float64(lambda: T5ForConditionalGeneration(config), seed)


def toy_text(i: int) -> str:
    """<pad>, </s>, <s0>.., or #id."""
    if i == TOY_PAD_ID:
        return "<pad>"
    if i == TOY_EOS_ID:
        return "</s>"
    if i >= TOY_VOCAB:
        return f"<s{i - TOY_VOCAB}>"
    return f"#{i}"


# --- the span-corruption example ---------------------------------------------------------------------------------


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def example_noise(ids: Sequence[int], special: Sequence[int] = (TOY_PAD_ID, TOY_EOS_ID)) -> list[bool]:
    """Which tokens the example drops, at fixed places: of the L tokens that are not special,
    n = round(0.3 L) clipped to [1, L - 1], in k = min(2, n) runs of lengths ceil(n/k), floor(n/k), run j centred on
    the candidate (j + 1/2) L / k. Runs that touch merge into one span, as they would in pretraining."""
    candidates = [t for t, i in enumerate(ids) if i not in special]
    L = len(candidates)
    if L < 2:
        specials = ", ".join(map(toy_text, special))
        raise InputError(f"span corruption needs at least 2 tokens that are not special ({specials}): one to drop "
                         "and one to keep")
    n = min(L - 1, max(1, _half_up(EXAMPLE_DENSITY * L)))
    k = min(EXAMPLE_SPANS, n)
    lengths = [n // k + (1 if j < n % k else 0) for j in range(k)]
    dropped = set()
    for j, a in enumerate(lengths):
        start = min(max(_half_up((j + 0.5) * L / k - a / 2), 0), L - a)
        dropped.update(candidates[start : start + a])
    return [t in dropped for t in range(len(ids))]


def span_corrupt(ids: Sequence[int], noise: Sequence[bool], sentinel_base: int,
                 eos_token_id: int) -> tuple[list[int], list[int]]:
    """(encoder input, target) of one block: each run of noise becomes sentinel <s_j> = sentinel_base + j in the
    input; the target lists <s_j> and run j's tokens for every run, then eos (train/span.py's layout)."""
    inputs: list[int] = []
    target: list[int] = []
    j = -1
    for t, (i, dropped) in enumerate(zip(ids, noise)):
        if dropped and (t == 0 or not noise[t - 1]):  # a span starts: one sentinel in both
            j += 1
            inputs.append(sentinel_base + j)
            target.append(sentinel_base + j)
        (target if dropped else inputs).append(i)
    return inputs, target + [eos_token_id]


def bucket_by_hand(n: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """relative_position_bucket's formula for one offset n = j - i, in Python floats (minibert/t5.py)."""
    base = 0
    if bidirectional:
        num_buckets //= 2
        base = num_buckets if n > 0 else 0
        m = abs(n)
    else:
        m = max(-n, 0)
    exact = num_buckets // 2
    if m < exact:
        return base + m
    return base + min(num_buckets - 1, exact + int(math.log(m / exact) / math.log(max_distance / exact)
                                                   * (num_buckets - exact)))


@dataclass
class T5Explanation:
    """One span-corruption example through T5ForConditionalGeneration (batch row 0, so no B axis)."""

    config: T5Config
    layer: int
    head: int
    # --- the example
    original: list[int]  # (n,)
    noise: list[bool]  # (n,) True where the token is dropped into a span
    encoder_ids: list[int]  # (S,) the input with sentinels
    labels: list[int]  # (T,) the target: sentinel, span, ..., </s>
    decoder_ids: list[int]  # (T,) shift_right(labels): <pad> then labels[:-1]
    reconstructed: list[int]  # (n,) fill_spans(encoder_ids, labels)
    # --- embeddings and RMSNorm
    encoder_embeddings: torch.Tensor  # (S, C) E[encoder_ids], no position vector
    encoder_block_input: torch.Tensor  # (S, C) x, entering the chosen encoder block
    encoder_attention_input: torch.Tensor  # (S, C) RMSNorm(x)
    # --- relative positions
    encoder_buckets: torch.Tensor  # (S, S) bucket(j - i), bidirectional
    decoder_buckets: torch.Tensor  # (T, T) bucket(j - i), causal
    offset_buckets: list[tuple[int, int, int]]  # (n, bidirectional bucket, causal bucket) for BUCKET_OFFSETS
    encoder_bias: torch.Tensor  # (H, S, S) the encoder table's scalar per bucket and head
    decoder_bias: torch.Tensor  # (H, T, T) the decoder's
    # --- attention of the chosen layer
    encoder_mask: torch.Tensor  # (S, S) all 0: bidirectional, nothing padded
    encoder_scores: torch.Tensor  # (S, S) Q K^T + B for the chosen head, no 1/sqrt(D)
    encoder_probs: torch.Tensor  # (H, S, S)
    decoder_mask: torch.Tensor  # (T, T) 0 where j <= i, -inf above the diagonal
    decoder_probs: torch.Tensor  # (H, T, T)
    cross_mask: torch.Tensor  # (T, S) all 0: every decoder query reads every encoder position
    cross_probs: torch.Tensor  # (H, T, S)
    # --- output and loss
    logits: torch.Tensor  # (T, V)
    label_probs: list[float]  # (T,) p_t[y_t]
    token_losses: list[float]  # (T,) -log p_t[y_t]
    predicted: list[int]  # (T,) argmax_v logits[t, v]
    loss_by_hand: float
    model_loss: float
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def all_checks_pass(self) -> bool:
        return all(c.ok for c in self.checks.values())


def explain_t5(model: T5ForConditionalGeneration, input_ids: Sequence[int] | torch.Tensor = DOCUMENT_IDS, *,
               layer: int = 0, head: int = 0, sentinel_base: int = TOY_VOCAB,
               special_ids: Sequence[int] = (TOY_PAD_ID, TOY_EOS_ID)) -> T5Explanation:
    """Span-corrupt `input_ids` (`example_noise`), run the example through `model` once with its trace, and show
    `layer`'s `head` in the encoder, the decoder and the cross-attention, and the loss. Sentinel j has id
    sentinel_base + j. The model is left as it was (weights and mode)."""
    if not isinstance(model, T5ForConditionalGeneration):
        raise InputError(f"the T5 walk-through needs a T5ForConditionalGeneration, not {type(model).__name__}")
    config = model.config
    ids = _ids_list(input_ids)
    for t, i in enumerate(ids):
        if not 0 <= i < sentinel_base:
            raise InputError(f"token id {i} at position {t} is out of range: the input's ids are "
                             f"0..{sentinel_base - 1} ({sentinel_base}.. are the sentinels)")
    _in_range("layer", layer, min(config.num_layers, config.num_decoder_layers),
              "the encoder and the decoder have {n} layers each")
    _in_range("head", head, config.num_heads, "each layer has {n} heads")
    noise = example_noise(ids, special_ids)
    n_spans = sum(1 for t, d in enumerate(noise) if d and (t == 0 or not noise[t - 1]))
    if sentinel_base + n_spans > config.vocab_size:
        raise InputError(f"{n_spans} spans need sentinel ids up to {sentinel_base + n_spans - 1}, past the model's "
                         f"vocabulary of {config.vocab_size}")
    was_training = model.training
    model.eval()  # dropout off: the traced tensors are exactly what the model used
    try:
        with torch.no_grad():
            return _explain_t5(model, ids, noise, layer, head, sentinel_base)
    finally:
        model.train(was_training)


def _recompute_attention(param: Callable[[str], torch.Tensor], name: str, H: int, x: torch.Tensor,
                         bias: torch.Tensor | None, memory: torch.Tensor | None):
    """(scores, probs, output) of one T5 attention, by its formula: softmax(Q K^T + B) V, then W_o; its weights are
    `name`.q, .k, .v, .o (checkpoint names, no biases).

    x: (1, T, C) the normed queries' stream; memory: (1, S, C) or None (self-attention); bias: (1, H, T, K) or None.
    scores, probs: (H, T, K); output: (T, C)."""

    def heads(y: torch.Tensor) -> torch.Tensor:
        return y.reshape(1, y.size(1), H, -1).transpose(1, 2)  # (1, L, H*D) -> (1, H, L, D)

    source = x if memory is None else memory  # keys and values: the stream itself, or the encoder's output
    q = heads(F.linear(x, param(f"{name}.q.weight")))  # (1, H, T, D)
    k, v = heads(F.linear(source, param(f"{name}.k.weight"))), heads(F.linear(source, param(f"{name}.v.weight")))
    scores = q @ k.transpose(-2, -1)  # (1, H, T, D) @ (1, H, D, K) -> (1, H, T, K): no 1/sqrt(D)
    if bias is not None:
        scores = scores + bias  # (1, H, T, K)
    probs = scores.softmax(dim=-1)  # (1, H, T, K)
    context = (probs @ v).transpose(1, 2).reshape(1, x.size(1), -1)  # (1, H, T, D) -> (1, T, H*D)
    return scores[0], probs[0], F.linear(context, param(f"{name}.o.weight"))[0]  # (H, T, K), (H, T, K), (T, C)


def _explain_t5(model, ids, noise, layer, head, sentinel_base) -> T5Explanation:
    config = model.config
    H = config.num_heads

    def param(name: str) -> torch.Tensor:  # a parameter by its checkpoint name
        return model.get_parameter(name).detach()

    E = param("shared.weight")  # (V, C)
    device, dtype = E.device, E.dtype
    enc_ids, labels = span_corrupt(ids, noise, sentinel_base, config.eos_token_id)
    S, T = len(enc_ids), len(labels)
    label_tensor = torch.tensor([labels], device=device)  # (B, T) = (1, T)
    dec_ids = shift_right(label_tensor, config.decoder_start_token_id, config.pad_token_id)[0].tolist()  # (T,)
    checks: dict[str, Check] = {}
    reconstructed = fill_spans(enc_ids, labels, range(sentinel_base, config.vocab_size), config.eos_token_id)
    checks["reconstruct"] = exact_check("fill_spans(input, target) gives back the original ids", reconstructed == ids)

    # decoder reads shift_right(labels)
    out = model(torch.tensor([enc_ids], device=device), labels=label_tensor, output_trace=True)
    enc_block, dec_block = out.trace.encoder[layer], out.trace.decoder[layer]
    enc_sa, dec_sa, dec_ca = enc_block.self_attention, dec_block.self_attention, dec_block.cross_attention
    enc_name, dec_name = f"encoder.block.{layer}.layer.0", f"decoder.block.{layer}.layer"  # checkpoint names

    # --- embeddings: x = E[ids], no position vector; a = RMSNorm(x) = g * x / sqrt(mean(x^2) + eps)
    encoder_embeddings = out.trace.encoder[0].input.detach()[0]  # (S, C)
    checks["embeddings"] = _compare("E[input ids] equals the input of encoder block 0", E[enc_ids],
                                    encoder_embeddings)
    checks["decoder_embeddings"] = _compare("E[shift_right(target)] equals the input of decoder block 0",
                                            E[dec_ids], out.trace.decoder[0].input.detach()[0])
    x = enc_block.input.detach()[0]  # (S, C)
    a = enc_sa.input.detach()[0]  # (S, C)
    g = param(f"{enc_name}.layer_norm.weight")  # (C,)
    by_hand = g * x / (x.pow(2).mean(dim=-1, keepdim=True) + config.layer_norm_epsilon).sqrt()  # (S, C)
    checks["rms"] = _compare("g * x / sqrt(mean(x^2) + eps) equals what the attention reads", by_hand, a)

    # --- relative positions: bias[h, i, j] = table[bucket(j - i), h], from block 0's table, shared by every block
    N, max_d = config.relative_attention_num_buckets, config.relative_attention_max_distance

    def buckets(K: int, bidirectional: bool) -> torch.Tensor:
        offsets = torch.arange(K, device=device)[None, :] - torch.arange(K, device=device)[:, None]  # (K, K): j - i
        return relative_position_bucket(offsets, bidirectional, N, max_d)  # (K, K)

    encoder_buckets, decoder_buckets = buckets(S, True), buckets(T, False)  # (S, S), (T, T)
    offsets = torch.tensor(BUCKET_OFFSETS, device=device)
    model_b = relative_position_bucket(offsets, True, N, max_d).tolist()
    model_c = relative_position_bucket(offsets, False, N, max_d).tolist()
    offset_buckets = list(zip(BUCKET_OFFSETS, model_b, model_c))
    hand = [(n, bucket_by_hand(n, True, N, max_d), bucket_by_hand(n, False, N, max_d)) for n in BUCKET_OFFSETS]
    checks["buckets"] = exact_check("the bucket formula by hand equals relative_position_bucket",
                                    hand == offset_buckets)
    enc_table = param("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")  # (N, H)
    dec_table = param("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")  # (N, H)
    encoder_bias = enc_table[encoder_buckets].permute(2, 0, 1)  # (S, S, H) -> (H, S, S)
    decoder_bias = dec_table[decoder_buckets].permute(2, 0, 1)  # (T, T, H) -> (H, T, T)

    # --- the encoder's self-attention: bidirectional, every key visible, B = the position bias alone
    enc_bias_used = enc_sa.bias.detach()  # (1, H, S, S)
    checks["encoder_bias"] = _compare("table[bucket(j - i)] equals the bias the encoder block adds", encoder_bias,
                                      enc_bias_used[0])
    encoder_mask = torch.zeros(S, S, dtype=dtype, device=device)  # (S, S)
    enc_scores, enc_probs, enc_out = _recompute_attention(param, f"{enc_name}.SelfAttention", H, a[None],
                                                          enc_bias_used, None)
    checks["encoder_attention"] = _compare("W_o(softmax(Q K^T + B) V) equals the encoder attention's output",
                                           enc_out, enc_sa.output.detach()[0])

    # --- the decoder's self-attention: causal, B = the position bias + M, M[i, j] = -inf if j > i
    model_mask = causal_mask(T, T, None, dtype, device)[0, 0]  # (T, T), -inf as the dtype's minimum
    decoder_mask = torch.zeros(T, T, dtype=dtype, device=device).masked_fill(model_mask == torch.finfo(dtype).min,
                                                                           -math.inf)  # (T, T)
    formula = torch.full((T, T), -math.inf, dtype=dtype, device=device).triu(1)  # (T, T)
    checks["decoder_mask"] = exact_check("mask[i, j] = -inf if j > i else 0 is the model's causal_mask",
                                         torch.equal(decoder_mask, formula))
    dec_bias_used = dec_sa.bias.detach()  # (1, H, T, T)
    checks["decoder_bias"] = _compare("table[bucket(j - i)] + M equals the bias the decoder block adds",
                                      decoder_bias + model_mask, dec_bias_used[0])
    _, dec_probs, dec_out = _recompute_attention(param, f"{dec_name}.0.SelfAttention", H, dec_sa.input.detach(),
                                                 dec_bias_used, None)
    checks["decoder_attention"] = _compare("W_o(softmax(Q K^T + B + M) V) equals the decoder self-attention's "
                                           "output", dec_out, dec_sa.output.detach()[0])

    # --- cross-attention: decoder queries over every encoder position, no mask, no position bias
    memory = dec_ca.memory.detach()  # (1, S, C)
    checks["memory"] = _compare("the keys' source is the encoder's output", memory[0],
                                out.encoder_last_hidden_state.detach()[0])
    cross_bias = dec_ca.bias  # None: the encoder has no padding
    cross_mask = torch.zeros(T, S, dtype=dtype, device=device)  # (T, S)
    _, cross_probs, cross_out = _recompute_attention(param, f"{dec_name}.1.EncDecAttention", H,
                                                     dec_ca.input.detach(), cross_bias, memory)
    checks["cross_attention"] = _compare("W_o(softmax(Q_dec K_enc^T) V_enc) equals the cross-attention's output",
                                         cross_out, dec_ca.output.detach()[0])

    # --- output and loss: logits = (h C^-1/2) E^T; loss = mean_t -log p_t[y_t]
    h = out.trace.decoder_output.detach()[0]  # (T, C)
    logits = out.logits.detach()[0]  # (T, V)
    checks["logits"] = _compare("(h * C^-1/2) @ E^T equals the model's logits", (h * config.d_model**-0.5) @ E.T,
                                logits)
    token_losses = -logits.log_softmax(dim=-1).gather(1, label_tensor[0][:, None])[:, 0]  # (T,)
    loss_by_hand = token_losses.mean()
    checks["loss"] = _compare("mean_t -log p_t[y_t] equals the model's loss", loss_by_hand, out.loss.detach())

    return T5Explanation(
        config=config, layer=layer, head=head, original=ids, noise=noise, encoder_ids=enc_ids, labels=labels,
        decoder_ids=dec_ids, reconstructed=reconstructed,
        encoder_embeddings=encoder_embeddings, encoder_block_input=x, encoder_attention_input=a,
        encoder_buckets=encoder_buckets, decoder_buckets=decoder_buckets, offset_buckets=offset_buckets,
        encoder_bias=encoder_bias, decoder_bias=decoder_bias,
        encoder_mask=encoder_mask, encoder_scores=enc_scores[head], encoder_probs=enc_probs,
        decoder_mask=decoder_mask, decoder_probs=dec_probs, cross_mask=cross_mask, cross_probs=cross_probs,
        logits=logits, label_probs=token_losses.neg().exp().tolist(), token_losses=token_losses.tolist(),
        predicted=logits.argmax(dim=-1).tolist(), loss_by_hand=float(loss_by_hand), model_loss=float(out.loss),
        checks=checks,
    )


def render_t5(e: T5Explanation) -> str:
    """The T5 explanation as text: per stage the formula, the shapes and the first numbers, and every check."""
    cfg = e.config
    S, T, V, C, H, D = len(e.encoder_ids), len(e.labels), cfg.vocab_size, cfg.d_model, cfg.num_heads, cfg.d_kv
    N, max_d = cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
    enc_text = [toy_text(i) for i in e.encoder_ids]
    dec_text = [toy_text(i) for i in e.decoder_ids]
    lines: list[str] = []
    add = lines.append

    def stage(title: str) -> None:
        add("")
        add(f"== {title} " + "=" * max(3, 76 - len(title)))

    def check(name: str) -> None:
        add(check_line(e.checks[name]))

    def words(ids: Sequence[int]) -> str:
        return " ".join(toy_text(i) for i in ids)

    add("minibert explained: one span-corruption example through T5ForConditionalGeneration, encoder and decoder")
    add(f"model: V={V} ({TOY_VOCAB} ids and {V - TOY_VOCAB} sentinels) C={C} H={H} D={D} "
        f"L={cfg.num_layers}+{cfg.num_decoder_layers} I={cfg.d_ff} N={N} buckets (max distance {max_d}), "
        f"RMSNorm, {cfg.feed_forward_proj}, {str(e.encoder_embeddings.dtype).replace('torch.', '')}")
    add(f"shapes: B=1; S={S} encoder tokens, T={T} target tokens; 4 decimals")

    stage("1. span corruption: drop spans, each behind one sentinel; the target writes them back")
    add(f"  original   {words(e.original)}")
    marks = " ".join(("^" if d else " ") * len(toy_text(i)) for i, d in zip(e.original, e.noise))
    add(f"  dropped    {marks}".rstrip())
    add(f"  input      {words(e.encoder_ids)}        (S = {S} = {len(e.original)} - {sum(e.noise)} dropped + "
        f"{S - len(e.original) + sum(e.noise)} sentinels)")
    add(f"  target     {words(e.labels)}        (T = {T}: sentinels, spans, then </s>)")
    add(f"  ids: input (B, S) = (1, {S}): {' '.join(map(str, e.encoder_ids))}; labels (B, T) = (1, {T}): "
        f"{' '.join(map(str, e.labels))}")
    add(f"  sentinel j is id V_tok + j = {TOY_VOCAB} + j; pretraining drops 15% in random spans of mean length 3 "
        f"(train/span.py), this example about {EXAMPLE_DENSITY:.0%} at fixed places")
    add(f"  decoder input = shift_right(labels) = <pad> then labels[:-1]: {words(e.decoder_ids)}")
    add(f"  fill_spans(input, target) = {words(e.reconstructed)}")
    check("reconstruct")

    stage("2. embeddings: x = E[id], one (V, C) table for encoder, decoder and output; no position vectors")
    add(f"  E (V, C) = ({V}, {C}); encoder x (B, S, C) = (1, {S}, {C}):")
    lines.extend(vector_rows(e.encoder_embeddings, sorted({0, 1, S - 1}), enc_text))
    check("embeddings")
    check("decoder_embeddings")
    add(f"  before each sub-layer, RMSNorm(x) = g * x / sqrt(mean_c(x_c^2) + eps): no mean subtracted, no bias; "
        f"encoder block {e.layer}, (B, S, C) = (1, {S}, {C}):")
    lines.extend(vector_rows(e.encoder_attention_input, sorted({0, 1, S - 1}), enc_text))
    check("rms")

    stage("3. relative positions: each head adds bias[h, i, j] = table[bucket(j - i), h] to its scores")
    E_b, E_c = N // 4, N // 2
    add(f"  offset n = j - i (key minus query). Encoder, bidirectional: N' = N/2 = {N // 2} buckets per direction,")
    add("    bucket = N' [n > 0] + b(|n|). Decoder, causal: N' = N, bucket = b(max(-n, 0)) (future keys are masked).")
    add("    b(m) = m if m < E, else min(N' - 1, E + floor(log(m / E) / log(max_distance / E) * (N' - E))), E = N'/2 "
        f"(= {E_b} / {E_c})")
    add(f"  {'offset n':>12}" + "".join(f"{n:>5}" for n, _, _ in e.offset_buckets))
    add(f"  {'encoder':>12}" + "".join(f"{b:>5}" for _, b, _ in e.offset_buckets))
    add(f"  {'decoder':>12}" + "".join(f"{c:>5}" for _, _, c in e.offset_buckets))
    check("buckets")
    P = min(S, BUCKET_POSITIONS)
    add(f"  encoder buckets (S, S), the first {P} positions: symmetric offsets get different buckets (before / after)")
    lines.extend(int_matrix_rows(e.encoder_buckets[:P, :P]))
    P = min(T, BUCKET_POSITIONS)
    add(f"  decoder buckets (T, T), the first {P} positions: only i - j counts; above the diagonal (the future) all 0")
    lines.extend(int_matrix_rows(e.decoder_buckets[:P, :P]))
    add(f"  the table (N, H) = ({N}, {H}) belongs to block 0 of each stack; its bias (1, H, S, S) is computed once and "
        f"added in every block; head {e.head}, row i=0 of the encoder's:")
    add(f"  {' '.join(f'{float(b):.4f}' for b in e.encoder_bias[e.head, 0, :SHOW_KEYS])}")
    check("encoder_bias")

    stage(f"4. encoder self-attention, block {e.layer} head {e.head}: A = softmax(Q K^T + B + M), bidirectional")
    add("  no 1/sqrt(D): T5 folds it into W_q's initial std. M = 0 everywhere: every token reads every other, "
        "before and after it")
    add(f"  M (S, S) = ({S}, {S}):")
    lines.extend(matrix_rows(e.encoder_mask, enc_text, mask_cell))
    add(f"  S_h = Q K^T + B, (S, D) @ (D, S) + (S, S) -> (S, S) = ({S}, {S}):")
    lines.extend(matrix_rows(e.encoder_scores, enc_text))
    add(f"  A (S, S) = ({S}, {S}): nonzero on both sides of the diagonal")
    lines.extend(matrix_rows(e.encoder_probs[e.head], enc_text))
    check("encoder_attention")

    stage(f"5. decoder self-attention, block {e.layer} head {e.head}: causal, M[i, j] = -inf if j > i, else 0")
    add(f"  the decoder reads shift_right(labels): output token t is predicted from the target tokens before t. "
        f"M (T, T) = ({T}, {T}):")
    lines.extend(matrix_rows(e.decoder_mask, dec_text, mask_cell))
    check("decoder_mask")
    check("decoder_bias")
    p = e.decoder_probs[e.head]
    add(f"  A = softmax(Q K^T + B + M), (T, T) = ({T}, {T}): exactly 0 above the diagonal "
        f"(max there {float(p.triu(1).max()) if T > 1 else 0.0:.1f})")
    lines.extend(matrix_rows(p, dec_text))
    check("decoder_attention")

    stage(f"6. cross-attention, decoder block {e.layer} head {e.head}: queries from the decoder, keys from the encoder")
    add(f"  A = softmax(Q_dec K_enc^T + M_enc), (T, D) @ (D, S) -> (T, S) = ({T}, {S}); no position bias, and "
        "M_enc = 0 (nothing padded):")
    add("  every decoder position reads every encoder position, the sentinels' neighbourhoods included")
    add(f"  M_enc (T, S) = ({T}, {S}), row = decoder query i, column = encoder key j:")
    lines.extend(matrix_rows(e.cross_mask, dec_text, mask_cell))
    add(f"  A (T, S) = ({T}, {S}):")
    lines.extend(matrix_rows(e.cross_probs[e.head], dec_text))
    add(f"  smallest A[i, j] = {float(e.cross_probs[e.head].min()):.4f} > 0: no encoder position is hidden")
    check("memory")
    check("cross_attention")

    stage("7. output and loss: logits = (h C^-1/2) E^T; loss = -(1/T) sum_t log softmax(logits_t)[y_t]")
    add(f"  h (B, T, C) = (1, {T}, {C}), the decoder's last RMSNorm; (T, C) @ (C, V) -> (T, V) = ({T}, {V}); "
        f"C^-1/2 = {C ** -0.5:.4f}")
    check("logits")
    add(f"  {'t':>4}  {'reads':>8}  {'label y_t':>10}  {'p_t[y_t]':>9}  {'-log p':>8}  {'argmax':>8}")
    for t in range(T):
        add(f"  {t:>4}  {dec_text[t]:>8}  {toy_text(e.labels[t]):>10}  {e.label_probs[t]:>9.4f}  "
            f"{e.token_losses[t]:>8.4f}  {toy_text(e.predicted[t]):>8}")
    terms = " + ".join(f"{x:.4f}" for x in e.token_losses[:4]) + (" + ..." if T > 4 else "")
    add(f"  by hand: ({terms}) / {T} = {e.loss_by_hand:.4f}")
    add(f"  the model's loss, model(input_ids, labels=labels).loss = {e.model_loss:.4f}")
    add(f"  (a uniform guess over V={V} ids would give log V = {math.log(V):.4f})")
    check("loss")
    return "\n".join(lines) + "\n"


def t5_markdown(seed: int = 0) -> str:
    """The toy T5's walk-through of the ids 1..10 as a markdown section, between its markers."""
    e = explain_t5(toy_t5(seed), DOCUMENT_IDS)
    c = TOY_T5_CONFIG
    intro = (f"The ten word indices 1..10 of 《预训练与微调的详细方法》's example (section 4.3), span-corrupted, "
             f"through a toy `T5ForConditionalGeneration` with random weights (T5's initialisation under seed {seed}): "
             f"V={c['vocab_size']} ({TOY_VOCAB} ids and {TOY_SENTINELS} sentinels), C={c['d_model']}, "
             f"H={c['num_heads']} heads of D={c['d_kv']}, {c['num_layers']} encoder and {c['num_decoder_layers']} "
             f"decoder layers, N={c['relative_attention_num_buckets']} buckets, no dropout, float64. The target's "
             f"loss is {e.loss_by_hand:.4f}.")
    return markdown_section(MARKDOWN_NAME, REFRESH, intro, render_t5(e))
