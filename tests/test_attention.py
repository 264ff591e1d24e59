"""Property-based tests of multi-head attention: the formula softmax(QK^T/sqrt(D) + M)V and its two implementations,
shared by BERT, GPT-2 (the causal mask) and T5 (a scale of 1)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minibert import BertConfig, GPT2Config, T5Config
from minibert.attention import ATTENTION, BertSelfAttention, additive_mask, attention_math, attention_sdpa, causal_mask
from minibert.encoder import BertEncoder
from minibert.gpt import GPT2Attention
from minibert.t5 import T5Attention


@st.composite
def attention_inputs(draw, dtype=torch.float32):
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 9))
    H = draw(st.integers(1, 4))
    D = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype) for _ in range(3))
    attention_mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    return q, k, v, attention_mask


def numpy_attention(q, k, v, attention_mask, scale=None, causal=False):
    """An independent float64 NumPy statement of the formula, with -inf on padded keys (and above the diagonal when
    causal); the scale is 1/sqrt(D) unless given."""
    q, k, v = (x.detach().double().numpy() for x in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    scores = np.where(attention_mask.numpy()[:, None, None, :] == 1, scores, -np.inf)
    if causal:
        T = q.shape[-2]
        scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p = p / p.sum(-1, keepdims=True)
    return p @ v, p


@given(attention_inputs())
def test_shapes_rows_sum_to_one_and_pads_get_zero_weight(inputs):
    q, k, v, am = inputs
    context, probs = attention_math(q, k, v, additive_mask(am, q.dtype))
    B, H, T, D = q.shape
    assert context.shape == (B, H, T, D)
    assert probs.shape == (B, H, T, T)
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, H, T))
    pad_keys = (am == 0)[:, None, None, :].expand(B, H, T, T)
    assert torch.all(probs[pad_keys] == 0)  # exactly zero, not merely small


@given(attention_inputs())
def test_math_and_sdpa_agree(inputs):
    q, k, v, am = inputs
    mask = additive_mask(am, q.dtype)
    torch.testing.assert_close(attention_sdpa(q, k, v, mask)[0], attention_math(q, k, v, mask)[0], atol=1e-5, rtol=1e-4)


@given(attention_inputs())
def test_both_agree_with_float64_numpy(inputs):
    q, k, v, am = inputs
    ref_context, ref_probs = numpy_attention(q, k, v, am)
    mask = additive_mask(am, q.dtype)
    context, probs = attention_math(q, k, v, mask)
    np.testing.assert_allclose(probs.numpy(), ref_probs, atol=1e-5)
    np.testing.assert_allclose(context.numpy(), ref_context, atol=1e-5)
    np.testing.assert_allclose(attention_sdpa(q, k, v, mask)[0].numpy(), ref_context, atol=1e-5)


@given(attention_inputs(), st.sampled_from([None, 1.0, 0.3]), st.booleans())
def test_one_function_for_three_systems_scale_and_causal_mask(inputs, scale, causal):
    """The scale (T5 passes 1) and the square causal mask (GPT-2 asks the kernel for it with `is_causal`): the
    readable and the fused path agree with the float64 formula."""
    q, k, v, am = inputs
    am = torch.ones_like(am) if causal else am  # GPT-2's square causal case has no padding
    ref_context, ref_probs = numpy_attention(q, k, v, am, scale, causal)
    mask = None if causal else additive_mask(am, q.dtype)
    context, probs = attention_math(q, k, v, mask, scale=scale, is_causal=causal)
    np.testing.assert_allclose(probs.numpy(), ref_probs, atol=1e-5)
    np.testing.assert_allclose(context.numpy(), ref_context, atol=1e-5)
    np.testing.assert_allclose(attention_sdpa(q, k, v, mask, scale=scale, is_causal=causal)[0].numpy(), ref_context,
                               atol=1e-5)


def test_causal_mask_as_the_mask_equals_is_causal():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    mask = causal_mask(6, 6, None, q.dtype, q.device)  # (1, 1, T, T)
    for attend in (attention_math, attention_sdpa):
        torch.testing.assert_close(attend(q, k, v, mask)[0], attend(q, k, v, is_causal=True)[0])


@pytest.mark.parametrize("scale,causal", [(None, False), (1.0, False), (None, True)])
def test_training_with_dropout_on_the_cpu_takes_the_readable_path(scale, causal):
    """The one CPU fallback: torch has no fused CPU kernel that drops out probabilities, so the fast path computes
    the readable one, the same random draws included, for BERT, GPT-2 (causal) and T5 (scale 1) alike."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    mask = None if causal else additive_mask(torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), q.dtype)
    torch.manual_seed(1)
    fast, probs = attention_sdpa(q, k, v, mask, 0.5, True, scale, causal)
    torch.manual_seed(1)
    readable, readable_probs = attention_math(q, k, v, mask, 0.5, True, scale, causal)
    assert probs is not None  # the readable path ran: only it forms the probabilities
    assert torch.equal(fast, readable) and torch.equal(probs, readable_probs)
    assert not torch.equal(fast, attention_math(q, k, v, mask, scale=scale, is_causal=causal)[0])  # dropout acted


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_bert_gpt2_and_t5_attend_with_the_one_function_chosen_once(impl):
    bert = BertSelfAttention(BertConfig(hidden_size=8, num_attention_heads=2, attn_impl=impl))
    gpt = GPT2Attention(GPT2Config(n_embd=8, n_head=2, attn_impl=impl))
    t5 = T5Attention(T5Config(d_model=8, d_kv=4, num_heads=2, attn_impl=impl))
    assert bert.attend is gpt.attend is t5.attend is ATTENTION[impl]


@given(attention_inputs(), st.integers(1, 4))
def test_appending_padding_leaves_real_tokens_unchanged(inputs, extra):
    q, k, v, am = inputs
    B, H, T, D = q.shape
    out, _ = attention_math(q, k, v, additive_mask(am, q.dtype))

    def pad(x):
        return torch.cat([x, torch.randn(B, H, extra, D)], dim=2)  # garbage at the new positions

    am2 = torch.cat([am, torch.zeros(B, extra, dtype=am.dtype)], dim=1)
    for impl in (attention_math, attention_sdpa):
        out2, _ = impl(pad(q), pad(k), pad(v), additive_mask(am2, q.dtype))
        real = am.bool()[:, None, :, None].expand(B, H, T, D)
        torch.testing.assert_close(out2[:, :, :T][real], out[real], atol=1e-5, rtol=1e-4)


@given(st.integers(1, 8), st.integers(0, 2**16), st.sampled_from(["math", "sdpa"]))
def test_without_positions_permuting_tokens_permutes_outputs(T, seed, impl):
    """Attention and the encoder blocks have no notion of order: only position embeddings break the symmetry."""
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=16, num_attention_heads=4, intermediate_size=32, num_hidden_layers=2,
                        hidden_dropout_prob=0, attention_probs_dropout_prob=0, attn_impl=impl)
    encoder = BertEncoder(config).eval()
    x = torch.randn(2, T, 16)
    perm = torch.randperm(T)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x[:, perm]).last, encoder(x).last[:, perm], atol=1e-5, rtol=1e-4)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = additive_mask(am, torch.float64)
    assert torch.autograd.gradcheck(lambda q, k, v: attention_math(q, k, v, mask)[0], (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: attention_sdpa(q, k, v, mask)[0], (q, k, v))


def test_self_attention_module_math_equals_sdpa():
    torch.manual_seed(0)
    cfg = dict(hidden_size=24, num_attention_heads=3, attention_probs_dropout_prob=0.0)
    a = BertSelfAttention(BertConfig(attn_impl="math", **cfg)).eval()
    b = BertSelfAttention(BertConfig(attn_impl="sdpa", **cfg)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6, 24)
    mask = additive_mask(torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]), x.dtype)
    torch.testing.assert_close(a(x, mask)[0], b(x, mask)[0], atol=1e-5, rtol=1e-4)


def test_unscaled_scores_saturate_softmax():
    """Why 1/sqrt(D): for unit-variance q, k the variance of q·k is D, so unscaled softmax rows turn nearly one-hot."""
    g = torch.Generator().manual_seed(0)
    D = 256
    q, k = torch.randn(1, 1, 64, D, generator=g), torch.randn(1, 1, 64, D, generator=g)
    raw = q @ k.transpose(-2, -1)
    assert 0.8 * D < raw.var().item() < 1.2 * D
    assert (raw / math.sqrt(D)).softmax(-1).max(-1).values.mean() < 0.3
    assert raw.softmax(-1).max(-1).values.mean() > 0.6


@given(attention_inputs())
def test_unpadded_attention_row_by_row_and_nested_equals_padded_attention(inputs):
    from minibert.unpad import Unpadding, attention_nested, attention_rows

    q, k, v, am = inputs
    B, H, T, D = q.shape
    padded, _ = attention_math(q, k, v, additive_mask(am, q.dtype))  # (B, H, T, D)
    u = Unpadding.from_mask(am)

    def flat(x):
        return u.unpad(x.transpose(1, 2).reshape(B, T, H * D))  # (B, H, T, D) -> (N, C)

    rows = attention_rows(flat(q), flat(k), flat(v), u.lengths, H)  # (N, C)
    torch.testing.assert_close(rows, flat(padded), atol=1e-5, rtol=1e-4)
    nested = attention_nested(flat(q), flat(k), flat(v), u.offsets, H)  # (N, C)
    torch.testing.assert_close(nested, flat(padded), atol=1e-5, rtol=1e-4)
