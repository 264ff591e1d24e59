"""GPT-2's and T5's fast paths, each against the readable path it replaces: the chunked output layer and loss
(`chunked_loss`), T5's fused projections (`fused_qkv`), unpadded bodies (`unpad`), and T5's position buckets kept
per shape. Every comparison is on the same weights in eval mode (no dropout): the loss, the outputs at real tokens
and every parameter's gradient, within float rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minibert import heads, t5
from minibert.generate import GenerationConfig, generate
from minibert.gpt import GPT2Config, GPT2LMHeadModel
from minibert.heads import IGNORE_INDEX, linear_cross_entropy, mlm_loss
from minibert.t5 import T5Config, T5ForConditionalGeneration

GPT = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0, bos_token_id=2, eos_token_id=3, pad_token_id=0)
T5 = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
              eos_token_id=3)


def pair(cls, config, **fast):
    """The readable model and a fast one with the same weights, both in eval mode."""
    torch.manual_seed(0)
    readable = cls(config).eval()
    quick = cls(dataclasses.replace(config, **fast)).eval()
    quick.load_state_dict(readable.state_dict())
    return readable, quick


def inputs(seed: int, holes: bool = False):
    """ids (3, 20) with rows of 20, 12 and 3 real tokens (right padding); with `holes`, padding inside and in front
    of row 0 too. labels (3, 7) for T5, -100 after the end of row 2's target."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 97, (3, 20), generator=g)
    mask = (torch.arange(20)[None] < torch.tensor([20, 12, 3])[:, None]).long()
    if holes:
        mask[0, :2] = 0
        mask[0, 9] = 0
    labels = torch.randint(4, 97, (3, 7), generator=g)
    labels[2, 4:] = IGNORE_INDEX
    return ids, mask, labels


def assert_same_gradients(a, b, atol=1e-6):
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=atol, rtol=1e-4, msg=name)


# --- the output layer and its loss in chunks ---


@pytest.mark.parametrize("bias", [False, True])
def test_linear_cross_entropy_equals_the_readable_loss_and_gradients(monkeypatch, bias):
    """Over several chunks (a chunk of 5 rows here), with ignored rows: loss and the gradients of h, W and b."""
    monkeypatch.setattr(heads, "LOSS_CHUNK_ROWS", 5)
    g = torch.Generator().manual_seed(1)
    h0, w0, b0 = torch.randn(3, 8, 16, generator=g), torch.randn(50, 16, generator=g), torch.randn(50, generator=g)
    labels = torch.randint(0, 50, (3, 8), generator=g)
    labels[0, :3] = IGNORE_INDEX
    losses, grads = [], []
    for fast in (False, True):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        b = b0.clone().requires_grad_() if bias else None
        loss = linear_cross_entropy(h, w, labels, b) if fast else mlm_loss(F.linear(h, w, b), labels)
        (2 * loss).backward()  # a gradient other than 1 flows in
        losses.append(loss)
        grads.append([t.grad for t in (h, w, b) if t is not None])
    torch.testing.assert_close(losses[1], losses[0])
    for fast_grad, readable_grad in zip(grads[1], grads[0]):
        torch.testing.assert_close(fast_grad, readable_grad)
    assert grads[1][0][0, :3].abs().max() == 0  # an ignored row gets no gradient


def test_linear_cross_entropy_without_gradients_and_under_autocast():
    g = torch.Generator().manual_seed(2)
    h, w, labels = torch.randn(40, 16, generator=g), torch.randn(30, 16, generator=g), torch.randint(0, 30, (40,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, labels), mlm_loss(h @ w.T, labels))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, readable = linear_cross_entropy(h, w, labels), mlm_loss(h @ w.T, labels)
    assert fast.dtype == readable.dtype == torch.float32
    torch.testing.assert_close(fast, readable, atol=1e-2, rtol=1e-2)


def test_gpt_chunked_loss_equals_the_readable_one():
    readable, fast = pair(GPT2LMHeadModel, GPT, chunked_loss=True)
    ids, mask, _ = inputs(3)
    a, b = readable(ids, mask, labels=ids), fast(ids, mask, labels=ids)
    assert b.logits is None  # never formed
    torch.testing.assert_close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_same_gradients(readable, fast)
    torch.testing.assert_close(fast(ids, mask).logits, a.logits)  # without labels: the logits, as before


def test_t5_chunked_loss_and_fused_projections_equal_the_readable_path():
    readable, fast = pair(T5ForConditionalGeneration, T5, chunked_loss=True, fused_qkv=True)
    ids, mask, labels = inputs(4)
    a, b = readable(ids, mask, labels=labels), fast(ids, mask, labels=labels)
    assert b.logits is None
    torch.testing.assert_close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_same_gradients(readable, fast)


def test_t5_fused_cross_keys_and_values_generate_the_same_text():
    """With fused_qkv the decoder's first step projects every block's cross-attention keys and values at once and
    caches them; later steps reuse the cache: the same tokens as the readable path, step for step."""
    readable, fast = pair(T5ForConditionalGeneration, T5, fused_qkv=True)
    ids, mask, _ = inputs(5)
    config = GenerationConfig(max_new_tokens=6)
    assert torch.equal(generate(fast, ids, config, attention_mask=mask),
                       generate(readable, ids, config, attention_mask=mask))


# --- unpadded bodies ---


@pytest.mark.parametrize("holes", [False, True])
def test_unpadded_gpt_equals_the_padded_one_at_real_tokens(holes):
    readable, fast = pair(GPT2LMHeadModel, GPT, unpad=True)
    ids, mask, _ = inputs(6, holes)
    a, b = readable.transformer(ids, mask), fast.transformer(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(b.last_hidden_state[real], a.last_hidden_state[real])
    assert b.last_hidden_state[~real].abs().max() == 0  # zeros at the pads
    if not holes:  # right padding: every label is predicted from a real token, so the loss is the same too
        la, lb = readable(ids, mask, labels=ids).loss, fast(ids, mask, labels=ids).loss
        torch.testing.assert_close(lb, la)
        la.backward()
        lb.backward()
        assert_same_gradients(readable, fast)


@pytest.mark.parametrize("holes", [False, True])
def test_unpadded_t5_encoder_equals_the_padded_one(holes):
    """Each row's real tokens with their cut of the position bias: the encoder's output at real tokens, the loss
    and every gradient as the padded encoder gives them."""
    readable, fast = pair(T5ForConditionalGeneration, T5, unpad=True)
    ids, mask, labels = inputs(7, holes)
    real = mask.bool()
    ea, eb = readable.encode(ids, mask), fast.encode(ids, mask)
    torch.testing.assert_close(eb[real], ea[real])
    a, b = readable(ids, mask, labels=labels), fast(ids, mask, labels=labels)
    torch.testing.assert_close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    assert_same_gradients(readable, fast)


# --- T5's position bias ---


def test_position_buckets_are_kept_per_shape_and_the_table_read_each_time():
    model = T5ForConditionalGeneration(T5).eval()
    attention = model.encoder.block[0].layer[0].SelfAttention
    first = attention.position_bias(5, 5, "cpu")
    assert len(attention._buckets) == 1
    attention.position_bias(5, 5, "cpu")
    assert len(attention._buckets) == 1  # the same shape: the buckets are not computed again
    attention.position_bias(3, 7, "cpu")
    assert len(attention._buckets) == 2
    with torch.no_grad():
        attention.relative_attention_bias.weight += 1.0  # as a training step would change the table
    torch.testing.assert_close(attention.position_bias(5, 5, "cpu"), first + 1.0)
    for T in range(6, 30):  # batches of many lengths: only the latest few shapes are kept
        attention.position_bias(T, T, "cpu")
    assert len(attention._buckets) == t5.BUCKET_SHAPES_KEPT and (29, 29, "cpu") in attention._buckets


def test_fine_tunings_unpad_switch_reaches_gpt_and_t5_bodies():
    """train.finetune's --unpad (a BERT config field) is given to GPT-2's and T5's configs too, and their
    classifiers' token states at real tokens are the padded ones."""
    from train import families

    overrides = {"unpad": True, "unpad_attention": "rows", "hidden_dropout_prob": 0.0}
    assert families.config_overrides("gpt2", overrides) == {"unpad": True, "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    assert families.config_overrides("t5", overrides) == {"unpad": True, "dropout_rate": 0.0}
    ids, mask, _ = inputs(8)
    real = mask.bool()
    for config in (GPT, T5):
        torch.manual_seed(0)
        padded = families.classifier_model(config, ["neg", "pos"]).eval()
        unpadded = families.classifier_model(dataclasses.replace(config, **families.config_overrides(
            families.family(config), {"unpad": True})), ["neg", "pos"]).eval()
        unpadded.load_state_dict(padded.state_dict())
        torch.testing.assert_close(unpadded.token_states(ids, mask)[real], padded.token_states(ids, mask)[real])
