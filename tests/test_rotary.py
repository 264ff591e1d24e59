"""Rotary positions: the relative-position property, and every attention path agreeing with it."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import BertConfig, BertForSequenceClassification, BertModel, InputError
from minibert.rotary import apply_rotary, rotary_angles, rotate_padded


@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 20), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_scores_depend_only_on_the_offset(i, j, shift, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 8, generator=g, dtype=torch.float64).unbind(0)

    def score(a, b):
        ca, sa = rotary_angles(torch.tensor(a), 8)
        cb, sb = rotary_angles(torch.tensor(b), 8)
        return float(apply_rotary(q, ca.double(), sa.double()) @ apply_rotary(k, cb.double(), sb.double()))

    assert math.isclose(score(i, j), score(i + shift, j + shift), rel_tol=1e-5, abs_tol=1e-5)


def test_rotation_keeps_norms_and_position_zero_is_identity():
    x = torch.randn(2, 3, 5, 16)
    q, k = rotate_padded(x, x)
    torch.testing.assert_close(q.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(q[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(q, k)
    assert not torch.allclose(q[:, :, 1:], x[:, :, 1:])


def config(**kw):
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16,
                      position_embedding_type="rotary", **kw)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
@pytest.mark.parametrize("unpad", [False, "rows", "repad", "nested"])
def test_every_attention_path_agrees(impl, unpad):
    torch.manual_seed(0)
    ref = BertForSequenceClassification(config(attn_impl="math")).eval()
    how = {"unpad": bool(unpad), "unpad_attention": unpad or "auto"}
    fast = BertForSequenceClassification(config(attn_impl=impl, **how)).eval()
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(5, 40, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    torch.testing.assert_close(fast(ids * mask, mask).logits, ref(ids * mask, mask).logits, atol=1e-5, rtol=1e-5)


def test_word_order_matters_and_there_is_no_position_table():
    torch.manual_seed(0)
    model = BertModel(config(initializer_range=0.5)).eval()  # large weights: attention far from uniform
    assert not any("position" in name for name in model.state_dict())
    ids = torch.arange(5, 13)[None]  # (1, 8)
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    out, out_permuted = model(ids).last_hidden_state, model(ids[:, perm]).last_hidden_state
    # Without positions self-attention is permutation-equivariant; rotary positions break that.
    assert (out[:, perm] - out_permuted).abs().max() > 0.1


def test_a_rotary_model_refuses_hugging_face_export():
    with pytest.raises(InputError, match="rotary positions have no Hugging Face BERT equivalent"):
        config().to_hf_config()
