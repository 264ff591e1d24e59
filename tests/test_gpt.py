"""minibert's GPT-2 and Hugging Face's are the same network: same weights in, same logits and loss out (fp32, 1e-5),
and weights go both ways with no missing or unexpected keys. Plus what makes it a decoder: it never sees the future."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minibert import InputError
from minibert.attention import causal_mask
from minibert.gpt import GPT2Config, GPT2LMHeadModel, next_token_loss
from minibert.gpt_t5_checkpoint import from_hf_model, load_hf, load_pretrained, save_hf, save_pretrained

transformers = pytest.importorskip("transformers")


@st.composite
def small_configs(draw):
    H = draw(st.integers(1, 4))
    return dict(
        vocab_size=draw(st.integers(8, 64)),
        n_positions=draw(st.integers(12, 40)),
        n_embd=H * draw(st.integers(1, 8)),
        n_layer=draw(st.integers(1, 3)),
        n_head=H,
        n_inner=draw(st.sampled_from([None, 4, 20, 37])),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "relu"])),
        layer_norm_epsilon=draw(st.sampled_from([1e-5, 1e-12])),
        bos_token_id=0,
        eos_token_id=0,
    )


def padded_batch(vocab_size, seed, B=3, T=11):
    """Right-padded rows of lengths T, 5 and 1 (GPT-2 has no pad id: the padded ids are arbitrary)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (B, T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor([T, 5, 1][:B])[:, None]).long()
    return ids, mask


def jitter(model, scale=0.05):
    """Non-trivial LayerNorms and biases, so that a tensor skipped in conversion would show."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def hf_model(config, impl="eager", seed=0):
    torch.manual_seed(seed)
    return jitter(transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, attn_implementation=impl))).eval()


def tiny(**overrides):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=24, n_embd=16, n_layer=2, n_head=4, bos_token_id=0,
                        eos_token_id=0, **overrides)
    return jitter(GPT2LMHeadModel(config)).eval()


@given(config=small_configs(), seed=st.integers(0, 1000), impl=st.sampled_from(["math", "sdpa"]),
       hf_impl=st.sampled_from(["eager", "sdpa"]))
def test_same_logits_and_loss_as_transformers_on_padded_batches(config, seed, impl, hf_impl):
    hf = hf_model(config, hf_impl, seed)
    mb = from_hf_model(hf, attn_impl=impl).eval()
    ids, mask = padded_batch(config["vocab_size"], seed, T=min(11, config["n_positions"]))
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        b = mb(ids, mask, labels=ids)  # minibert ignores padded labels itself
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=0)


def test_export_loads_in_transformers_strictly_with_same_outputs(tmp_path):
    mb = tiny(attn_impl="math")
    hc = transformers.GPT2Config(**mb.config.to_hf_config(), attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(hc).eval()
    assert set(mb.state_dict()) == set(hf.state_dict())  # the keys are Hugging Face's, every one
    hf.load_state_dict(mb.state_dict(), strict=True)
    ids, mask = padded_batch(40, 1)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits, mb(ids, mask).logits,
                                   atol=1e-5, rtol=0)

    save_hf(mb, tmp_path)
    again, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True,
                                                               attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert again.lm_head.weight.data_ptr() == again.transformer.wte.weight.data_ptr()  # tied on load
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=ids, attention_mask=mask).logits, mb(ids, mask).logits,
                                   atol=1e-5, rtol=0)
    back = load_hf(tmp_path, attn_impl="math").eval()  # and back through the file, bit for bit
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask).logits, mb(ids, mask).logits, atol=0, rtol=0)


def test_load_hf_reads_transformers_save_pretrained_and_a_bare_gpt2model(tmp_path):
    config = dict(vocab_size=30, n_positions=16, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    hf = hf_model(config)
    hf.save_pretrained(tmp_path / "lm")
    ids = torch.randint(0, 30, (2, 7))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        torch.testing.assert_close(load_hf(tmp_path / "lm").eval()(ids).logits, expected, atol=1e-5, rtol=0)
        # a GPT2Model's keys have no `transformer.` prefix; the head is the tied embedding, so nothing is lost
        hf.transformer.save_pretrained(tmp_path / "bare")
        torch.testing.assert_close(load_hf(tmp_path / "bare").eval()(ids).logits, expected, atol=1e-5, rtol=0)


def test_save_pretrained_round_trip_keeps_minibert_switches(tmp_path):
    mb = tiny(attn_impl="math")
    save_pretrained(mb, tmp_path)
    back = load_pretrained(tmp_path).eval()
    assert back.config == mb.config and back.config.attn_impl == "math"
    assert back.lm_head.weight is back.transformer.wte.weight
    ids, mask = padded_batch(40, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask).logits, mb(ids, mask).logits, atol=0, rtol=0)
    assert load_pretrained(tmp_path, attn_impl="sdpa").config.attn_impl == "sdpa"


def test_mismatched_checkpoint_lists_every_problem(tmp_path):
    save_pretrained(tiny(), tmp_path)
    with pytest.raises(InputError) as e:
        load_pretrained(tmp_path, vocab_size=41, n_layer=3)
    msg = str(e.value)
    assert "transformer.wte.weight: checkpoint (40, 16) vs model (41, 16)" in msg
    assert "transformer.h.2.attn.c_attn.weight" in msg  # a missing block is listed, not skipped


def test_hf_options_minibert_does_not_build_are_refused():
    with pytest.raises(InputError, match="scale_attn_by_inverse_layer_idx"):
        GPT2Config.from_hf_config({"scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(InputError, match="n_embd"):
        GPT2Config(n_embd=10, n_head=3)
    with pytest.raises(InputError, match="activation"):
        GPT2Config(activation_function="swish")


def test_causal_mask_formula():
    """M_ij = 0 if j <= P + i else minimum, and padded keys masked too."""
    m = causal_mask(3, 5, torch.tensor([[1, 1, 1, 1, 0]]), torch.float32, "cpu")[0, 0]  # P = 2
    allowed = (m == 0).int()
    assert allowed.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    assert (m[allowed == 0] == torch.finfo(torch.float32).min).all()


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_a_later_token_never_changes_earlier_outputs(impl):
    mb = tiny(attn_impl=impl)
    ids = torch.randint(0, 40, (2, 12))
    for t in (1, 6, 11):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 40
        with torch.no_grad():
            a, b = mb(ids).logits, mb(changed).logits
        assert torch.equal(a[:, :t], b[:, :t])  # bit-identical before t
        assert not torch.allclose(a[:, t:], b[:, t:])  # and the change is seen from t on


@pytest.mark.parametrize("padded", [False, True])
def test_readable_and_fused_paths_agree_forward_and_backward(padded):
    math_model, sdpa_model = tiny(attn_impl="math"), tiny(attn_impl="sdpa")
    sdpa_model.load_state_dict(math_model.state_dict())
    ids, mask = padded_batch(40, 3)
    mask = mask if padded else None
    outs = []
    for model in (math_model, sdpa_model):
        out = model(ids, mask, labels=ids)
        out.loss.backward()
        outs.append((out.logits, out.loss, model.transformer.h[0].attn.c_attn.weight.grad))
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_cached_forward_equals_the_full_forward(impl):
    """Two tokens at a time through the cache give the logits of one pass over the whole sequence."""
    mb = tiny(attn_impl=impl)
    ids = torch.randint(0, 40, (2, 10))
    with torch.no_grad():
        full = mb(ids).logits
        past, pieces = None, []
        for start in range(0, 10, 2):
            out = mb(ids[:, start:start + 2], past_key_values=past, use_cache=True)
            past = out.past_key_values
            pieces.append(out.logits)
    assert past[0][0].shape == (2, 4, 10, 4)  # (B, H, S, D)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_next_token_loss_is_the_shifted_cross_entropy_and_ignores_padding():
    mb = tiny()
    ids, mask = padded_batch(40, 4)
    out = mb(ids, mask, labels=ids)
    logp = out.logits.log_softmax(-1)
    terms = [-logp[b, t, ids[b, t + 1]] for b in range(3) for t in range(10) if mask[b, t + 1]]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    # whatever sits in the padding (ids and labels) cannot change the loss
    other = ids.masked_fill(mask == 0, 7)
    torch.testing.assert_close(mb(other, mask, labels=other).loss, out.loss, atol=0, rtol=0)
    # -100 is ignored: next_token_loss skips exactly the positions labelled so
    labels = ids.clone()
    labels[0, 5:] = -100
    logits = out.logits.detach().clone()
    logits[0, 4:] += torch.randn_like(logits[0, 4:])  # positions 4.. predict labels 5.., all ignored
    torch.testing.assert_close(next_token_loss(logits, labels), next_token_loss(out.logits.detach(), labels))


def test_too_long_for_the_position_table_is_an_error():
    with pytest.raises(InputError, match="n_positions=24"):
        tiny()(torch.zeros(1, 25, dtype=torch.long))


def test_gpt2_initialisation_scales_the_residual_projections():
    torch.manual_seed(0)
    mb = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=64, n_layer=8, n_head=4, n_positions=32))
    assert abs(mb.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(mb.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert mb.lm_head.weight is mb.transformer.wte.weight


def test_importing_the_new_models_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, minibert, minibert.gpt, minibert.t5, minibert.gpt_t5_checkpoint, minibert.generate; " \
           "print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
