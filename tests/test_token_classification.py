"""BertForTokenClassification: Hugging Face's network and checkpoint names, its loss over tagged positions, and the
unpadded fast path that agrees with the readable one."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

import minibert  # noqa: E402
from minibert import BertConfig, BertForTokenClassification, BertModel, TokenClassifierOutput  # noqa: E402
from minibert.heads import IGNORE_INDEX, token_classification_loss  # noqa: E402
from minibert.hf import from_hf_model, load_hf, save_hf  # noqa: E402
from test_hf_parity import small_configs  # noqa: E402

TAGS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def tagged_batch(vocab_size: int, num_labels: int, type_vocab_size: int, seed: int):
    """Three rows of 11, 5 and 1 real tokens; tags at real tokens, -100 at the pads, at [CLS] and at a few more."""
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 11
    lengths = torch.tensor([T, 5, 1])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()  # (B, T)
    ids = torch.randint(1, vocab_size, (B, T), generator=g) * mask  # [PAD] = 0 after each row's end
    types = torch.randint(0, type_vocab_size, (B, T), generator=g) * mask
    labels = torch.randint(0, num_labels, (B, T), generator=g)
    untagged = (mask == 0) | (torch.rand(B, T, generator=g) < 0.2)
    untagged[:, 0] = True  # [CLS]
    labels[untagged] = IGNORE_INDEX
    labels[0, 1] = 0  # at least one tagged position, so the loss is a number
    return ids, mask, types, labels


def perturbed(model):
    """The model with non-trivial biases and LayerNorms, so a tensor skipped by a conversion would show."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def tiny_config(**overrides) -> BertConfig:
    fields = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                  num_labels=len(TAGS), id2label=dict(enumerate(TAGS)))
    return BertConfig(**{**fields, **overrides})


# --- the loss ----------------------------------------------------------------------------------------------------


def test_loss_is_the_mean_cross_entropy_over_tagged_positions_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g)
    labels = torch.tensor([[IGNORE_INDEX, 1, 3, IGNORE_INDEX, 0], [2, IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX]])
    tagged = labels != IGNORE_INDEX
    expected = -logits.log_softmax(-1)[tagged].gather(1, labels[tagged][:, None]).mean()
    torch.testing.assert_close(token_classification_loss(logits, labels), expected)
    moved = logits.clone()
    moved[~tagged] = torch.randn(int((~tagged).sum()), 4, generator=g) * 100  # untagged positions: any logits
    torch.testing.assert_close(token_classification_loss(moved, labels), expected)
    torch.testing.assert_close(token_classification_loss(logits[tagged], labels[tagged]), expected)  # (N, K), (N,)


# --- parity with transformers --------------------------------------------------------------------------------------


@given(config=small_configs(max_labels=9, activations=("gelu", "relu")), seed=st.integers(0, 1000),
       impl=st.sampled_from(["math", "sdpa"]),
       unpad=st.sampled_from([False, "rows", "repad", "nested"]))
@settings(deadline=None, max_examples=40)
def test_same_logits_and_loss_as_transformers(config, seed, impl, unpad):
    torch.manual_seed(seed)
    hf = perturbed(transformers.BertForTokenClassification(
        transformers.BertConfig(**config, attn_implementation="eager"))).eval()
    mb = from_hf_model(hf, BertForTokenClassification, attn_impl=impl, unpad=bool(unpad),
                       unpad_attention=unpad or "auto").eval()
    ids, mask, types, labels = tagged_batch(config["vocab_size"], config["num_labels"], config["type_vocab_size"],
                                            seed)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        b = mb(ids, mask, types, labels=labels)
    assert isinstance(b, TokenClassifierOutput) and b.logits.shape == a.logits.shape
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=0)
    if unpad:  # pads are never computed: zeros there, the real tokens equal
        real = mask.bool()
        torch.testing.assert_close(b.logits[real], a.logits[real], atol=1e-5, rtol=0)
        assert not b.logits[~real].any()
    else:
        torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)


def test_state_dict_keys_are_transformers():
    hf_config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=16, num_labels=9)
    hf = transformers.BertForTokenClassification(hf_config)
    mb = BertForTokenClassification(BertConfig.from_hf_config(hf_config.to_dict()))
    assert mb.state_dict().keys() == hf.state_dict().keys()
    assert {k: v.shape for k, v in mb.state_dict().items()} == {k: v.shape for k, v in hf.state_dict().items()}


def test_classifier_dropout_is_used_when_set():
    assert BertForTokenClassification(tiny_config(hidden_dropout_prob=0.1)).dropout.p == 0.1
    assert BertForTokenClassification(tiny_config(hidden_dropout_prob=0.1, classifier_dropout=0.3)).dropout.p == 0.3


# --- the fast path -------------------------------------------------------------------------------------------------


def test_unpadded_path_agrees_with_the_padded_one_forward_and_backward():
    torch.manual_seed(0)
    readable = perturbed(BertForTokenClassification(tiny_config())).eval()
    fast = BertForTokenClassification(tiny_config(unpad=True)).eval()
    fast.load_state_dict(readable.state_dict())
    ids, mask, types, labels = tagged_batch(50, len(TAGS), 2, seed=3)
    a = readable(ids, mask, types, labels=labels)
    b = fast(ids, mask, types, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(b.logits[real], a.logits[real], atol=1e-5, rtol=0)
    assert not b.logits[~real].any()  # zeros at the pads, as the docstring says
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=0)
    a.loss.backward()
    b.loss.backward()
    grads = dict(fast.named_parameters())
    for name, p in readable.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_unpadded_classifier_reads_only_the_real_tokens_rows():
    torch.manual_seed(0)
    seen = []
    fast = BertForTokenClassification(tiny_config(unpad=True)).eval()
    fast.classifier.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    ids, mask, types, labels = tagged_batch(50, len(TAGS), 2, seed=1)
    fast(ids, mask, types, labels=labels)
    fast(ids)  # no mask: nothing to unpad, the padded (B, T, C) rows
    assert seen == [(int(mask.sum()), 16), (3, 11, 16)]


def test_body_hands_back_its_unpadded_rows_on_request():
    torch.manual_seed(0)
    body = BertModel(tiny_config(unpad=True), add_pooling_layer=False).eval()
    ids, mask, types, _ = tagged_batch(50, len(TAGS), 2, seed=2)
    padded = body(ids, mask, types)
    kept = body(ids, mask, types, keep_unpadded=True)
    assert padded.unpadding is None and kept.last_hidden_state.shape == (int(mask.sum()), 16)
    torch.testing.assert_close(kept.last_hidden_state, padded.last_hidden_state[mask.bool()], atol=0, rtol=0)
    torch.testing.assert_close(kept.unpadding.pad(kept.last_hidden_state), padded.last_hidden_state, atol=0, rtol=0)


# --- checkpoints in and out ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("unpad", [False, True])
def test_save_hf_loads_in_transformers_auto_class_with_same_logits(tmp_path, unpad):
    torch.manual_seed(0)
    mb = perturbed(BertForTokenClassification(tiny_config(unpad=unpad))).eval()
    save_hf(mb, tmp_path)
    hf, info = transformers.AutoModelForTokenClassification.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager")
    assert type(hf).__name__ == "BertForTokenClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == dict(enumerate(TAGS))
    assert hf.config.label2id == {tag: i for i, tag in enumerate(TAGS)}
    ids, mask, types, labels = tagged_batch(50, len(TAGS), 2, seed=4)
    real = mask.bool()
    with torch.no_grad():
        ours = mb(ids, mask, types, labels=labels)
        theirs = hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        torch.testing.assert_close(ours.logits[real], theirs.logits[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)
        again = load_hf(tmp_path, BertForTokenClassification).eval()  # and back, through the file
        assert again.config.id2label == dict(enumerate(TAGS)) and again.config.num_labels == len(TAGS)
        torch.testing.assert_close(again(ids, mask, types).logits[real], ours.logits[real], atol=1e-6, rtol=0)


def test_load_hf_reads_a_transformers_token_classifier(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, num_labels=5, attn_implementation="eager")
    hf = perturbed(transformers.BertForTokenClassification(cfg)).eval()
    hf.save_pretrained(tmp_path)
    mb = load_hf(tmp_path, BertForTokenClassification, unpad=True).eval()
    ids, mask, types, labels = tagged_batch(30, 5, 2, seed=5)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        b = mb(ids, mask, types, labels=labels)
    torch.testing.assert_close(b.logits[mask.bool()], a.logits[mask.bool()], atol=1e-5, rtol=0)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=0)


def test_an_mlm_checkpoint_starts_a_token_classifier_with_a_fresh_classifier(tmp_path):
    torch.manual_seed(0)
    save_hf(minibert.BertForMaskedLM(tiny_config(num_labels=2, id2label=None)), tmp_path)
    model = load_hf(tmp_path, BertForTokenClassification, num_labels=len(TAGS))
    assert model.classifier.weight.shape == (len(TAGS), 16) and not model.classifier.bias.any()
