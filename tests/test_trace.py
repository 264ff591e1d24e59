"""The trace (minibert/trace.py), the seam the walk-throughs read the models through: every field holds the tensor
its comment names, recomputed here from the parameters by their checkpoint names; asked for nothing, a model builds
no record and gives the same numbers; the walk-throughs run with no forward hook; and a module that holds a
LayerNorm applies it in its own forward (post-LN)."""

import pytest
import torch
import torch.nn.functional as F

from minibert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel
from minibert.attention import BertAttention, BertSelfOutput
from minibert.explain import DOCUMENT_IDS, explain, toy_model
from minibert.explain.gpt_walk import explain_gpt, toy_gpt
from minibert.explain.t5_walk import explain_t5, toy_t5
from minibert.feed_forward import BertOutput
from minibert.gpt import GPT2Config, GPT2LMHeadModel
from minibert.t5 import T5Config, T5ForConditionalGeneration, shift_right
from minibert.trace import BertTrace, GPT2Trace, T5Trace


def bert_config(**kw):
    base = dict(vocab_size=30, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
                max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                attn_impl="math")
    return BertConfig(**{**base, **kw})


def jitter(model, scale=0.1):
    """Non-trivial LayerNorms and biases, so that a field holding the wrong tensor would show."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def batch(V=30, B=2, T=7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    return ids * mask, mask


def linear(model, name, x):
    return F.linear(x, model.get_parameter(f"{name}.weight"), model.get_parameter(f"{name}.bias"))


def layer_norm(model, name, x, eps):
    return F.layer_norm(x, (x.size(-1),), model.get_parameter(f"{name}.weight"), model.get_parameter(f"{name}.bias"),
                        eps)


# --- BERT -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("position", ["absolute", "rotary"])
def test_bert_trace_holds_what_each_field_names(norm_first, position):
    torch.manual_seed(0)
    config = bert_config(norm_first=norm_first, position_embedding_type=position)
    model = jitter(BertForMaskedLM(config))
    ids, mask = batch()
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    with torch.no_grad():
        out = model(ids, mask, types, output_hidden_states=True, output_attentions=True, output_trace=True)
    trace, eps = out.trace, config.layer_norm_eps
    assert isinstance(trace, BertTrace) and len(trace.layers) == 2
    e = trace.embeddings
    assert torch.equal(e.token_type_ids, types)
    torch.testing.assert_close(e.word, model.get_parameter("bert.embeddings.word_embeddings.weight")[ids])
    torch.testing.assert_close(e.segment, model.get_parameter("bert.embeddings.token_type_embeddings.weight")[types])
    if position == "rotary":
        assert e.position is None
        torch.testing.assert_close(e.sum, e.word + e.segment)
    else:
        torch.testing.assert_close(e.position, model.get_parameter("bert.embeddings.position_embeddings.weight")[:7])
        torch.testing.assert_close(e.sum, e.word + e.segment + e.position)
    torch.testing.assert_close(e.normalised, layer_norm(model, "bert.embeddings.LayerNorm", e.sum, eps))
    torch.testing.assert_close(e.normalised, out.hidden_states[0])
    for i, t in enumerate(trace.layers):
        block = f"bert.encoder.layer.{i}"
        torch.testing.assert_close(t.input, out.hidden_states[i])
        a = layer_norm(model, f"{block}.attention.output.LayerNorm", t.input, eps) if norm_first else t.input
        torch.testing.assert_close(t.attention_input, a)
        for name in ("query", "key", "value"):
            torch.testing.assert_close(getattr(t, name), linear(model, f"{block}.attention.self.{name}", a))
        # the context, head by head: the model's probabilities times V
        B, T, C = t.value.shape
        v = t.value.view(B, T, 3, 4).transpose(1, 2)  # (B, H, T, D)
        context = (out.attentions[i] @ v).transpose(1, 2).reshape(B, T, C)
        torch.testing.assert_close(t.context, context)
        s = t.input + linear(model, f"{block}.attention.output.dense", t.context)
        x1 = s if norm_first else layer_norm(model, f"{block}.attention.output.LayerNorm", s, eps)
        torch.testing.assert_close(t.after_attention, x1)
        h = layer_norm(model, f"{block}.output.LayerNorm", x1, eps) if norm_first else x1
        torch.testing.assert_close(t.ffn_input, h)
        torch.testing.assert_close(t.ffn_hidden, F.gelu(linear(model, f"{block}.intermediate.dense", h)))
        s = x1 + linear(model, f"{block}.output.dense", t.ffn_hidden)
        x2 = s if norm_first else layer_norm(model, f"{block}.output.LayerNorm", s, eps)
        torch.testing.assert_close(t.output, x2)
    last = trace.layers[-1].output
    if norm_first:
        last = layer_norm(model, "bert.encoder.final_layer_norm", last, eps)
    torch.testing.assert_close(last, out.hidden_states[-1])
    u = trace.mlm_transform
    torch.testing.assert_close(u, layer_norm(model, "cls.predictions.transform.LayerNorm",
                                             F.gelu(linear(model, "cls.predictions.transform.dense",
                                                           out.hidden_states[-1])), eps))
    torch.testing.assert_close(linear(model, "cls.predictions.decoder", u), out.logits)


def test_bert_trace_of_the_fast_paths_unpadded_and_sparse():
    """sdpa, unpadded blocks ((N, C) records) and the sparse head ((M, C)) are traced too, with the same numbers as
    the readable padded model."""
    torch.manual_seed(0)
    fast = jitter(BertForMaskedLM(bert_config(attn_impl="sdpa", unpad=True, sparse_prediction=True,
                                              fused_qkv=True)))
    slow = BertForMaskedLM(bert_config()).eval()
    slow.load_state_dict(fast.state_dict())
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 3] = 5, 6
    with torch.no_grad():
        a, b = fast(ids, mask, labels=labels, output_trace=True), slow(ids, mask, labels=labels, output_trace=True)
    real = mask.bool()
    N = int(real.sum())
    for ta, tb in zip(a.trace.layers, b.trace.layers):
        for name in ("input", "query", "context", "after_attention", "ffn_hidden", "output"):
            x, y = getattr(ta, name), getattr(tb, name)
            assert x.shape[0] == N  # unpadded: the real tokens only
            torch.testing.assert_close(x, y[real], atol=1e-5, rtol=1e-4, msg=name)
    assert a.trace.mlm_transform.shape == (2, 12)  # sparse: the two labelled positions
    torch.testing.assert_close(a.trace.mlm_transform, b.trace.mlm_transform[labels != -100], atol=1e-5, rtol=1e-4)


def test_bert_trace_is_part_of_the_graph():
    model = BertForMaskedLM(bert_config()).train()
    ids, mask = batch()
    out = model(ids, mask, output_trace=True)
    q = out.trace.layers[0].query
    assert q.requires_grad
    (g,) = torch.autograd.grad(out.logits.sum(), q)
    assert g.shape == q.shape and g.abs().sum() > 0


def test_classifier_and_model_return_the_trace():
    torch.manual_seed(0)
    ids, mask = batch()
    for cls in (BertModel, BertForSequenceClassification):
        model = cls(bert_config()).eval()
        assert len(model(ids, mask, output_trace=True).trace.layers) == 2
        assert model(ids, mask).trace is None


# --- asked for nothing, nothing is built ---------------------------------------------------------------------


def test_without_output_trace_no_record_is_built_and_the_numbers_are_the_same(monkeypatch):
    torch.manual_seed(0)
    bert = jitter(BertForMaskedLM(bert_config()))
    gpt = jitter(GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=12, n_layer=2, n_head=3)))
    t5 = jitter(T5ForConditionalGeneration(T5Config(vocab_size=30, d_model=12, d_kv=4, d_ff=20, num_layers=2,
                                                    num_heads=3)))
    ids, mask = batch()
    with torch.no_grad():
        traced = (bert(ids, mask, output_trace=True).logits, gpt(ids, mask, output_trace=True).logits,
                  t5(ids, mask, labels=ids, output_trace=True).logits)

    def refuse(*args, **kwargs):
        raise AssertionError("a record was built though no trace was asked for")

    for record in (BertTrace, GPT2Trace, T5Trace):
        monkeypatch.setattr(record, "for_layers", classmethod(refuse))
    with torch.no_grad():
        plain = (bert(ids, mask), gpt(ids, mask), t5(ids, mask, labels=ids))
    for out, logits in zip(plain, traced):
        assert out.trace is None
        assert torch.equal(out.logits, logits)  # bit for bit: the trace changes nothing it watches


# --- GPT-2 and T5 ------------------------------------------------------------------------------------------------


def test_gpt_trace_holds_what_each_field_names():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=30, n_positions=16, n_embd=12, n_layer=2, n_head=3, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, attn_impl="math")
    model = jitter(GPT2LMHeadModel(config))
    ids, mask = batch()
    with torch.no_grad():
        out = model(ids, mask, output_trace=True)
    blocks, eps = out.trace.blocks, config.layer_norm_epsilon
    assert len(blocks) == 2
    p = model.get_parameter
    torch.testing.assert_close(blocks[0].input, p("transformer.wte.weight")[ids] + p("transformer.wpe.weight")[:7])
    for i, t in enumerate(blocks):
        block = f"transformer.h.{i}"
        torch.testing.assert_close(t.attention_input, layer_norm(model, f"{block}.ln_1", t.input, eps))
        torch.testing.assert_close(t.after_attention, t.input + t.attention_output)
        h = layer_norm(model, f"{block}.ln_2", t.after_attention, eps)
        fc = torch.addmm(p(f"{block}.mlp.c_fc.bias"), h.reshape(-1, 12), p(f"{block}.mlp.c_fc.weight"))
        mlp = torch.addmm(p(f"{block}.mlp.c_proj.bias"), F.gelu(fc, approximate="tanh"),
                          p(f"{block}.mlp.c_proj.weight"))  # Conv1D: x W + b, W stored (in, out)
        torch.testing.assert_close(t.output, t.after_attention + mlp.view(2, 7, 12))
        if i + 1 < len(blocks):
            torch.testing.assert_close(blocks[i + 1].input, t.output)
    torch.testing.assert_close(layer_norm(model, "transformer.ln_f", blocks[-1].output, eps), out.last_hidden_state)


def test_t5_trace_holds_what_each_field_names():
    torch.manual_seed(0)
    config = T5Config(vocab_size=30, d_model=12, d_kv=4, d_ff=20, num_layers=2, num_decoder_layers=3, num_heads=3,
                      dropout_rate=0.0, attn_impl="math")
    model = jitter(T5ForConditionalGeneration(config))
    ids, mask = batch()
    labels = ids[:, :5]
    with torch.no_grad():
        out = model(ids, mask, labels=labels, output_trace=True)
    trace = out.trace
    assert len(trace.encoder) == 2 and len(trace.decoder) == 3
    E = model.get_parameter("shared.weight")
    torch.testing.assert_close(trace.encoder[0].input, E[ids])
    decoder_ids = shift_right(labels, config.decoder_start_token_id, config.pad_token_id)
    torch.testing.assert_close(trace.decoder[0].input, E[decoder_ids])

    def rms(name, x):
        g = model.get_parameter(f"{name}.weight")
        return g * x / (x.pow(2).mean(-1, keepdim=True) + config.layer_norm_epsilon).sqrt()

    for stack, blocks in (("encoder", trace.encoder), ("decoder", trace.decoder)):
        for i, t in enumerate(blocks):
            torch.testing.assert_close(t.self_attention.input, rms(f"{stack}.block.{i}.layer.0.layer_norm", t.input))
            assert t.self_attention.memory is None
            assert t.self_attention.bias.shape[-2:] == (t.input.size(1), t.input.size(1))
            if i + 1 < len(blocks):
                torch.testing.assert_close(blocks[i + 1].input, t.output)
    assert all(t.cross_attention is None for t in trace.encoder)
    for i, t in enumerate(trace.decoder):
        x1 = t.input + t.self_attention.output
        torch.testing.assert_close(t.cross_attention.input, rms(f"decoder.block.{i}.layer.1.layer_norm", x1))
        torch.testing.assert_close(t.cross_attention.memory, out.encoder_last_hidden_state)
        assert t.cross_attention.bias.shape == (2, 1, 1, 7)  # the encoder's padding
    torch.testing.assert_close(rms("encoder.final_layer_norm", trace.encoder[-1].output), out.encoder_last_hidden_state)
    torch.testing.assert_close(rms("decoder.final_layer_norm", trace.decoder[-1].output), trace.decoder_output)
    torch.testing.assert_close((trace.decoder_output * 12**-0.5) @ E.T, out.logits)


# --- the walk-throughs read the trace, not hooks ------------------------------------------------------------------


def test_the_walk_throughs_use_no_forward_hook(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a forward hook was registered")

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", refuse)
    monkeypatch.setattr(torch.nn.Module, "register_forward_pre_hook", refuse)
    for e in (explain(toy_model(0), DOCUMENT_IDS, layer=1, head=1),
              explain(toy_model(0, norm_first=True, position_embedding_type="rotary"), DOCUMENT_IDS, layer=1),
              explain_gpt(toy_gpt(0), DOCUMENT_IDS, layer=1), explain_t5(toy_t5(0), DOCUMENT_IDS, layer=1)):
        assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}


# --- a module applies what it holds ------------------------------------------------------------------------------


@pytest.mark.parametrize("module_cls,width", [(BertSelfOutput, 12), (BertOutput, 20)])
def test_the_output_modules_apply_their_own_layer_norm(module_cls, width):
    """Post-LN: LayerNorm(x + Dropout(h W + b)) in the module's own forward, so its LayerNorm's gamma and beta change
    what it returns."""
    torch.manual_seed(0)
    module = jitter(module_cls(bert_config()))
    h, x = torch.randn(2, 5, width), torch.randn(2, 5, 12)
    want = F.layer_norm(x + module.dense(h), (12,), module.LayerNorm.weight, module.LayerNorm.bias, 1e-12)
    torch.testing.assert_close(module(h, x), want)
    with torch.no_grad():
        module.LayerNorm.bias.add_(1.0)
    torch.testing.assert_close(module(h, x), want + 1.0)


def test_pre_ln_attention_normalises_its_input_with_the_same_layer_norm():
    """Pre-LN: x + Dropout(SelfAttention(LN(x)) W_o + b_o), LN stored where post-LN keeps it (the checkpoint key
    attention.output.LayerNorm), applied by the attention sub-layer before the heads read x."""
    torch.manual_seed(0)
    post, pre = BertAttention(bert_config()), BertAttention(bert_config(norm_first=True))
    jitter(post)
    pre.load_state_dict(post.state_dict())
    assert list(pre.state_dict()) == list(post.state_dict())
    x = torch.randn(2, 5, 12)
    ln = post.output.LayerNorm
    with torch.no_grad():
        context, _ = post.self(ln(x))
        torch.testing.assert_close(pre(x)[0], x + post.output.dense(context))
        torch.testing.assert_close(post(x)[0], ln(x + post.output.dense(post.self(x)[0])))
