"""The model's own behaviour: loss masking, the fast paths against the readable ones, options, init, checkpoints."""

import pytest
import torch

from minibert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, InputError, preset
from minibert.checkpoint import load_pretrained, save_pretrained
from minibert.files import unwrap
from minibert.embeddings import sinusoidal_table
from minibert.heads import mlm_loss


def tiny(**kw):
    base = dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32)
    return BertConfig(**{**base, **kw})


def batch(seed=0, B=3, T=10, V=37):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids = ids * mask
    labels = torch.full((B, T), -100)
    labels[0, 2], labels[1, 4], labels[2, 1], labels[0, 7] = 9, 11, 6, 30
    return ids, mask, labels


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_mlm_loss_ignores_unlabelled_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, 3, -100, -100, 7], [1, -100, -100, -100, -100]])
    changed = logits.clone()
    changed[labels == -100] = torch.randn(int((labels == -100).sum()), 11, generator=g) * 100
    assert mlm_loss(changed, labels) == mlm_loss(logits, labels)
    # and it is the mean of -log softmax at the three labelled positions
    logp = logits.log_softmax(-1)
    expected = -(logp[0, 1, 3] + logp[0, 4, 7] + logp[1, 0, 1]) / 3
    torch.testing.assert_close(mlm_loss(logits, labels), expected)


def test_sparse_prediction_same_loss_and_gradients_as_dense():
    torch.manual_seed(0)
    dense = BertForMaskedLM(tiny())
    sparse = BertForMaskedLM(tiny(sparse_prediction=True))
    sparse.load_state_dict(dense.state_dict())
    ids, mask, labels = batch()
    a, b = dense(ids, mask, labels=labels), sparse(ids, mask, labels=labels)
    assert b.logits.shape == (int((labels != -100).sum()), 37)
    torch.testing.assert_close(b.loss, a.loss)
    a.loss.backward()
    b.loss.backward()
    ga, gb = grads(dense), grads(sparse)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], atol=1e-6, rtol=1e-5, msg=n)


def assert_classifiers_agree(config_a: BertConfig, config_b: BertConfig) -> dict[str, torch.Tensor]:
    """Two classifiers with the same weights give the same logits and gradients; returns the second's gradients."""
    torch.manual_seed(0)
    model_a = BertForSequenceClassification(config_a)
    model_b = BertForSequenceClassification(config_b)
    model_b.load_state_dict(model_a.state_dict())  # the same parameters, under the same names
    ids, mask, _ = batch()
    y = torch.tensor([0, 1, 1])
    a, b = model_a(ids, mask, labels=y), model_b(ids, mask, labels=y)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    ga, gb = grads(model_a), grads(model_b)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], atol=1e-6, rtol=1e-5, msg=n)
    return gb


@pytest.mark.parametrize("impl,how", [("math", "auto"), ("sdpa", "rows"), ("sdpa", "repad"), ("sdpa", "nested")])
def test_unpadded_path_equals_padded_path_forward_and_backward(impl, how):
    assert_classifiers_agree(tiny(attn_impl=impl), tiny(attn_impl=impl, unpad=True, unpad_attention=how))


@pytest.mark.parametrize("switches", [{"attn_impl": "math"}, {}, {"unpad": True, "unpad_attention": "rows"},
                                      {"unpad": True, "unpad_attention": "repad"},
                                      {"unpad": True, "unpad_attention": "nested", "position_embedding_type": "rotary"}])
def test_fused_qkv_equals_three_projections_forward_and_backward(switches):
    fused_grads = assert_classifiers_agree(tiny(**switches), tiny(fused_qkv=True, **switches))
    assert any("attention.self.key.weight" in n for n in fused_grads)


def test_pre_ln_has_a_final_norm_and_differs_from_post_ln():
    torch.manual_seed(0)
    post = BertModel(tiny())
    pre = BertModel(tiny(norm_first=True))
    assert "encoder.final_layer_norm.weight" in pre.state_dict()
    assert "encoder.final_layer_norm.weight" not in post.state_dict()
    pre.load_state_dict({**post.state_dict(), **{k: v for k, v in pre.state_dict().items() if "final" in k}})
    ids, mask, _ = batch()
    assert not torch.allclose(pre(ids, mask).last_hidden_state, post(ids, mask).last_hidden_state)
    out = pre(ids, mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(out[real].mean(-1), torch.zeros(int(real.sum())), atol=1e-5, rtol=0)  # normalised


def test_sinusoidal_positions_are_fixed_and_not_saved():
    table = sinusoidal_table(50, 8)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * 4))
    torch.testing.assert_close(table[7, 0], torch.sin(torch.tensor(7.0)))
    model = BertModel(tiny(position_embedding_type="sinusoidal"))
    assert not any("position" in k for k in model.state_dict())
    ids, mask, _ = batch()
    assert model(ids, mask).last_hidden_state.shape == (3, 10, 16)


def test_classifier_regression_with_one_label_uses_mse():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny(num_labels=1))
    ids, mask, _ = batch()
    y = torch.tensor([0.5, -1.0, 2.0])
    out = model(ids, mask, labels=y)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - y) ** 2).mean())


def test_init_follows_bert():
    torch.manual_seed(0)
    model = BertForMaskedLM(preset("small", vocab_size=2000))
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    assert abs(w.std().item() - 0.02) < 0.001
    assert torch.all(model.bert.encoder.layer[0].intermediate.dense.bias == 0)
    assert torch.all(model.bert.embeddings.LayerNorm.weight == 1)
    assert torch.all(model.bert.embeddings.word_embeddings.weight[0] == 0)  # [PAD] row
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight  # tied


def test_config_json_round_trip_and_errors(tmp_path):
    c = tiny(norm_first=True, id2label={0: "neg", 1: "pos"})
    c.save(tmp_path / "config.json")
    assert BertConfig.load(tmp_path / "config.json") == c
    with pytest.raises(InputError, match="multiple of num_attention_heads"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(InputError, match="unknown config field"):
        BertConfig.from_dict({"hidden_sise": 3})
    with pytest.raises(InputError, match="unknown preset"):
        preset("huge")
    with pytest.raises(InputError, match="unpad_attention must be one of"):
        BertConfig(unpad_attention="flash")
    with pytest.raises(InputError, match="pre-LN"):
        c.to_hf_config()


def test_checkpoint_round_trip_and_unwrap(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny())
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = model  # what torch.compile wraps a model in
    assert unwrap(compiled_like) is model
    save_pretrained(compiled_like, tmp_path)
    again, report = load_pretrained(tmp_path, BertForMaskedLM)
    assert report.newly_initialised == [] and report.unused == []
    ids, mask, labels = batch()
    torch.testing.assert_close(again(ids, mask, labels=labels).loss, model(ids, mask, labels=labels).loss)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
