"""minibert's T5 and Hugging Face's are the same network: same weights in, same logits and loss out (fp32, 1e-5),
weights both ways with no missing or unexpected keys; its buckets, RMS norm and decoder mask checked on their own."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minibert import InputError
from minibert.gpt_t5_checkpoint import from_hf_model, load_hf, load_pretrained, save_hf, save_pretrained
from minibert.t5 import T5Config, T5ForConditionalGeneration, relative_position_bucket, rms_norm, shift_right

transformers = pytest.importorskip("transformers")


@st.composite
def small_configs(draw):
    buckets = draw(st.integers(4, 32))
    return dict(
        vocab_size=draw(st.integers(8, 64)),
        d_model=draw(st.integers(2, 24)),
        d_kv=draw(st.integers(1, 8)),
        d_ff=draw(st.integers(2, 40)),
        num_layers=draw(st.integers(1, 3)),
        num_decoder_layers=draw(st.integers(1, 3)),
        num_heads=draw(st.integers(1, 4)),
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=draw(st.integers(buckets // 2 + 1, 40)),
        layer_norm_epsilon=draw(st.sampled_from([1e-6, 1e-3])),
        decoder_start_token_id=0,
    )


def batch(vocab_size, seed, B=3, S=13, T=9):
    """Encoder rows of lengths S, 5 and 1 padded with id 0, and labels with -100 after each target's end."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(S)[None] < torch.tensor([S, 5, 1][:B])[:, None]).long()
    ids = torch.randint(2, vocab_size, (B, S), generator=g) * mask
    labels = torch.randint(2, vocab_size, (B, T), generator=g)
    labels = labels.masked_fill(torch.arange(T)[None] >= torch.tensor([T, 4, 2][:B])[:, None], -100)
    return ids, mask, labels


def jitter(model, scale=0.05):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def hf_model(config, impl="eager", seed=0):
    torch.manual_seed(seed)
    hc = transformers.T5Config(**config, attn_implementation=impl)
    return jitter(transformers.T5ForConditionalGeneration(hc)).eval()


def tiny(**overrides):
    torch.manual_seed(0)
    config = dict(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=2, num_heads=3,
                  relative_attention_num_buckets=8, relative_attention_max_distance=12)
    return jitter(T5ForConditionalGeneration(T5Config(**{**config, **overrides}))).eval()


@given(config=small_configs(), seed=st.integers(0, 1000), impl=st.sampled_from(["math", "sdpa"]),
       hf_impl=st.sampled_from(["eager", "sdpa"]))
def test_same_logits_and_loss_as_transformers_on_padded_batches(config, seed, impl, hf_impl):
    hf = hf_model(config, hf_impl, seed)
    mb = from_hf_model(hf, attn_impl=impl).eval()
    ids, mask, labels = batch(config["vocab_size"], seed)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, labels=labels)
        b = mb(ids, mask, labels=labels)
    # The logits sum d_model products more than the hidden states do, in another order than transformers': a few
    # float32 roundings apart, so their tolerance has a relative part too (1e-5 + 1e-4 |logit|).
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.encoder_last_hidden_state, a.encoder_last_hidden_state, atol=1e-5, rtol=0)


@given(n=st.integers(-300, 300), buckets=st.integers(4, 64), bidirectional=st.booleans(), data=st.data())
def test_buckets_are_transformers_buckets(n, buckets, bidirectional, data):
    max_distance = data.draw(st.integers(buckets // 2 + 1, 200))
    offsets = torch.arange(n - 40, n + 40)
    ours = relative_position_bucket(offsets, bidirectional, buckets, max_distance)
    theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        offsets, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance)
    assert torch.equal(ours, theirs)
    assert ours.min() >= 0 and ours.max() < buckets


def test_buckets_by_the_formula():
    """Encoder, N = 8: four buckets each way, two of them exact; the decoder gives every future key bucket 0."""
    n = torch.tensor([-20, -3, -2, -1, 0, 1, 2, 3, 20])
    assert relative_position_bucket(n, True, 8, 16).tolist() == [3, 2, 2, 1, 0, 5, 6, 6, 7]
    assert relative_position_bucket(n, False, 8, 16).tolist() == [7, 3, 2, 1, 0, 0, 0, 0, 0]


def test_rms_norm_is_the_formula_with_no_mean_and_no_bias():
    norm = rms_norm(T5Config(d_model=6, layer_norm_epsilon=1e-6))
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(4, 6) + 3.0  # a mean far from 0, which RMSNorm keeps
    expected = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    assert [name for name, _ in norm.named_parameters()] == ["weight"]


def test_shift_right_is_transformers_shift_right():
    labels = torch.tensor([[5, 6, 7, 1], [8, 1, -100, -100]])
    assert shift_right(labels, 0, 0).tolist() == [[0, 5, 6, 7], [0, 8, 1, 0]]
    hf = hf_model(dict(vocab_size=10, d_model=4, d_kv=2, d_ff=4, num_layers=1, num_heads=1, decoder_start_token_id=0))
    assert torch.equal(shift_right(labels, 0, 0), hf._shift_right(labels))


def test_export_loads_in_transformers_strictly_with_same_outputs(tmp_path):
    mb = tiny(attn_impl="math")
    hc = transformers.T5Config(**mb.config.to_hf_config(), attn_implementation="eager")
    hf = transformers.T5ForConditionalGeneration(hc).eval()
    assert set(mb.state_dict()) == set(hf.state_dict())  # Hugging Face's keys, every one
    hf.load_state_dict(mb.state_dict(), strict=True)
    ids, mask, labels = batch(40, 1)
    with torch.no_grad():
        a, b = hf(input_ids=ids, attention_mask=mask, labels=labels), mb(ids, mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)

    save_hf(mb, tmp_path)
    again, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True,
                                                                          attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        a = again.eval()(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=0)
    back = load_hf(tmp_path, attn_impl="math").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, labels=labels).logits, b.logits, atol=0, rtol=0)


def test_load_hf_reads_transformers_save_pretrained(tmp_path):
    hf = hf_model(dict(vocab_size=30, d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2, decoder_start_token_id=0))
    hf.save_pretrained(tmp_path)
    ids, mask, labels = batch(30, 2)
    mb = load_hf(tmp_path).eval()
    assert mb.lm_head.weight is mb.shared.weight is mb.decoder.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(mb(ids, mask, labels=labels).logits,
                                   hf(input_ids=ids, attention_mask=mask, labels=labels).logits, atol=1e-5, rtol=0)


def test_save_pretrained_round_trip(tmp_path):
    mb = tiny(attn_impl="math")
    save_pretrained(mb, tmp_path)
    back = load_pretrained(tmp_path).eval()
    assert back.config == mb.config
    ids, mask, labels = batch(40, 3)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, labels=labels).logits, mb(ids, mask, labels=labels).logits,
                                   atol=0, rtol=0)


def test_an_untied_or_mismatched_checkpoint_is_refused(tmp_path):
    mb = tiny()
    state = mb.state_dict()
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    with pytest.raises(InputError, match="untied"):
        from minibert.gpt_t5_checkpoint import load_checked

        load_checked(tiny(), state)
    save_pretrained(mb, tmp_path)
    with pytest.raises(InputError) as e:
        load_pretrained(tmp_path, num_decoder_layers=3, d_ff=25)
    assert "decoder.block.2.layer.0.SelfAttention.q.weight" in str(e.value)
    assert "encoder.block.0.layer.1.DenseReluDense.wi.weight: checkpoint (24, 16) vs model (25, 16)" in str(e.value)


def test_what_t5_v1_0_does_not_have_is_refused():
    with pytest.raises(InputError, match="gated"):
        T5Config(feed_forward_proj="gated-gelu")
    with pytest.raises(InputError, match="untied|tie_word_embeddings"):
        T5Config(tie_word_embeddings=False)
    hf = transformers.T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                               tie_word_embeddings=False)
    with pytest.raises(InputError, match="scale_decoder_outputs"):
        T5Config.from_hf_config(hf.to_dict())


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_decoder_never_sees_a_later_target_token(impl):
    mb = tiny(attn_impl=impl)
    ids, mask, _ = batch(40, 4)
    dec = torch.randint(2, 40, (3, 10))
    for t in (1, 5, 9):
        changed = dec.clone()
        changed[:, t] = (changed[:, t] + 1) % 40
        with torch.no_grad():
            a = mb(ids, mask, decoder_input_ids=dec).logits
            b = mb(ids, mask, decoder_input_ids=changed).logits
        assert torch.equal(a[:, :t], b[:, :t])  # bit-identical before t
        assert not torch.allclose(a[:, t:], b[:, t:])


def test_encoder_padding_is_invisible():
    """Whatever sits in the padded input positions cannot change the output."""
    mb = tiny()
    ids, mask, labels = batch(40, 5)
    other = ids.masked_fill(mask == 0, 9)
    with torch.no_grad():
        a, b = mb(ids, mask, labels=labels), mb(other, mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)


def test_readable_and_fused_paths_agree_forward_and_backward():
    math_model, sdpa_model = tiny(attn_impl="math"), tiny(attn_impl="sdpa")
    sdpa_model.load_state_dict(math_model.state_dict())
    ids, mask, labels = batch(40, 6)
    outs = []
    for model in (math_model, sdpa_model):
        out = model(ids, mask, labels=labels)
        out.loss.backward()
        rel = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.grad
        outs.append((out.logits, out.loss, rel, model.shared.weight.grad))
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_cached_decoder_equals_the_full_decoder(impl):
    mb = tiny(attn_impl=impl)
    ids, mask, labels = batch(40, 7)
    dec = shift_right(labels, 0, 0)
    with torch.no_grad():
        full = mb(ids, mask, decoder_input_ids=dec).logits
        memory = mb.encode(ids, mask)
        past, pieces = None, []
        for start in range(0, dec.size(1), 3):
            out = mb(attention_mask=mask, decoder_input_ids=dec[:, start:start + 3], encoder_hidden_states=memory,
                     past_key_values=past, use_cache=True)
            past = out.past_key_values
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_initialisation_folds_the_attention_scale_into_w_q():
    torch.manual_seed(0)
    mb = T5ForConditionalGeneration(T5Config(vocab_size=500, d_model=64, d_kv=16, d_ff=128, num_layers=1,
                                             num_heads=4))
    attn = mb.encoder.block[0].layer[0].SelfAttention
    assert abs(attn.q.weight.std().item() - (64 * 16) ** -0.5) < 0.003
    assert abs(attn.k.weight.std().item() - 64**-0.5) < 0.01
    assert abs(mb.shared.weight.std().item() - 1.0) < 0.05
