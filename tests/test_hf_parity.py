"""minibert and Hugging Face's BERT are the same network: same weights in, same numbers out (float32, < 1e-5)."""

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

import minibert  # noqa: E402
from minibert import BertForMaskedLM, BertForSequenceClassification, BertModel, InputError  # noqa: E402
from minibert.hf import from_hf_model, load_hf, save_hf  # noqa: E402

PAIRS = {
    "BertModel": (transformers.BertModel, BertModel),
    "BertForMaskedLM": (transformers.BertForMaskedLM, BertForMaskedLM),
    "BertForSequenceClassification": (transformers.BertForSequenceClassification, BertForSequenceClassification),
}


@st.composite
def small_configs(draw, max_labels: int = 4, activations=("gelu", "relu", "gelu_new")):
    """A tiny random BERT config for the parity tests (also tests/test_token_classification.py's)."""
    H = draw(st.integers(1, 4))
    return dict(
        vocab_size=draw(st.integers(8, 64)),
        hidden_size=H * draw(st.integers(1, 8)),
        num_hidden_layers=draw(st.integers(1, 3)),
        num_attention_heads=H,
        intermediate_size=draw(st.integers(4, 48)),
        max_position_embeddings=draw(st.integers(16, 40)),
        type_vocab_size=draw(st.integers(1, 3)),
        hidden_act=draw(st.sampled_from(list(activations))),
        num_labels=draw(st.integers(1, max_labels)),
        layer_norm_eps=draw(st.sampled_from([1e-12, 1e-5])),
    )


def padded_batch(config, seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 11
    ids = torch.randint(1, config["vocab_size"], (B, T), generator=g)
    lengths = torch.tensor([T, 5, 1])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids = ids * mask  # [PAD] = 0 after each row's end
    types = torch.randint(0, config["type_vocab_size"], (B, T), generator=g) * mask
    return ids, mask, types


def outputs(out):
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("name", list(PAIRS))
@given(config=small_configs(), seed=st.integers(0, 1000), impl=st.sampled_from(["math", "sdpa"]),
       unpad=st.sampled_from([False, "rows", "repad", "nested"]), fused_qkv=st.booleans())
def test_same_outputs_from_same_weights(name, config, seed, impl, unpad, fused_qkv):
    hf_cls, mb_cls = PAIRS[name]
    torch.manual_seed(seed)
    hf = hf_cls(transformers.BertConfig(**config, attn_implementation="eager")).eval()
    mb = from_hf_model(hf, mb_cls, attn_impl=impl, unpad=bool(unpad), unpad_attention=unpad or "auto",
                       fused_qkv=fused_qkv).eval()
    ids, mask, types = padded_batch(config, seed)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        b = mb(ids, mask, types)
    if name == "BertForSequenceClassification" or not unpad:
        torch.testing.assert_close(outputs(b), outputs(a), atol=1e-5, rtol=0)
    else:  # unpadded: pads are not computed at all, so compare the real tokens
        real = mask.bool()
        torch.testing.assert_close(outputs(b)[real], outputs(a)[real], atol=1e-5, rtol=0)
    if name == "BertModel":
        torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=1e-5, rtol=0)


def test_hidden_states_and_attentions_match():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=32, attn_implementation="eager")
    hf = transformers.BertModel(cfg).eval()
    mb = from_hf_model(hf, BertModel).eval()
    ids, mask, types = padded_batch(cfg.to_dict(), 1)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
               output_attentions=True)
        b = mb(ids, mask, types, output_hidden_states=True, output_attentions=True)
    assert len(b.hidden_states) == 3 and len(b.attentions) == 2
    for x, y in zip(b.hidden_states, a.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    for x, y in zip(b.attentions, a.attentions):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(PAIRS))
def test_save_hf_loads_in_transformers_with_same_outputs(name, tmp_path):
    hf_cls, mb_cls = PAIRS[name]
    torch.manual_seed(0)
    config = minibert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=24, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    mb = mb_cls(config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms, so a skipped tensor would show
        for p in mb.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_hf(mb, tmp_path)
    hf, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = padded_batch(config.to_dict(), 2)
    with torch.no_grad():
        torch.testing.assert_close(outputs(mb(ids, mask, types)),
                                   outputs(hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types)),
                                   atol=1e-5, rtol=0)
    if name == "BertForSequenceClassification":
        assert hf.config.id2label == {0: "a", 1: "b", 2: "c"}
    # and back again, through the file
    again = load_hf(tmp_path, mb_cls).eval()
    with torch.no_grad():
        torch.testing.assert_close(outputs(again(ids, mask, types)), outputs(mb(ids, mask, types)), atol=0, rtol=0)


def test_load_hf_reads_transformers_save_pretrained(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, attn_implementation="eager")
    hf = transformers.BertForMaskedLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    # A pretrained MLM checkpoint fine-tunes as a classifier: the encoder loads, the pooler and classifier start fresh.
    clf = load_hf(tmp_path, BertForSequenceClassification, num_labels=2)
    torch.testing.assert_close(clf.bert.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight)
    mlm = load_hf(tmp_path, BertForMaskedLM).eval()
    ids = torch.randint(1, 30, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(mlm(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_mismatched_checkpoint_is_an_error_listing_every_problem(tmp_path):
    mb = BertModel(minibert.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=16))
    save_hf(mb, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(InputError) as e:
        load_hf(tmp_path, BertModel, vocab_size=31, num_hidden_layers=3)
    msg = str(e.value)
    assert "word_embeddings.weight: checkpoint (30, 8) vs model (31, 8)" in msg
    assert "encoder.layer.2.attention.self.query.weight" in msg  # a missing block is listed, not skipped
    assert config["num_hidden_layers"] == 2


def test_importing_minibert_does_not_import_transformers():
    code = "import sys, minibert, minibert.hf, minibert.checkpoint; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
