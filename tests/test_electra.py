"""ELECTRA's replaced-token detection: what the generator replaces, what counts as replaced, where the loss is."""

import math

import pytest
import torch
import torch.nn.functional as F

from minibert import BertConfig, BertModel
from minibert.checkpoint import load_pretrained, save_pretrained
from minibert.electra import ElectraForPreTraining, generator_config, sample_replacements
from minibert.heads import IGNORE_INDEX

MASK = 4
SPECIAL = torch.arange(5)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def tiny(**kw) -> BertConfig:
    fields = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32,
                  position_embedding_type="rotary")
    return BertConfig(**{**fields, **kw})


def uniforms(seed, shape=(3, 12)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def masked_batch(B=3, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, 50, (B, T), generator=g)  # (B, T) ids above the special ones
    keep = torch.rand((B, T), generator=g) < 0.3
    keep[:, 0] = True  # at least one masked position per row
    ids = torch.where(keep, torch.full_like(original, MASK), original)
    labels = torch.where(keep, original, torch.full_like(original, IGNORE_INDEX))
    return original, ids, labels, keep


def test_generator_config_is_a_fraction_of_the_discriminator():
    c = tiny()
    g = generator_config(c, 0.25)
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (8, 1, 16)
    assert g.head_size == c.head_size and g.num_hidden_layers == c.num_hidden_layers
    assert generator_config(c, 1.0).hidden_size == c.hidden_size


@pytest.mark.parametrize("share", [False, True])
def test_samples_replace_exactly_the_masked_positions(share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    original, ids, labels, keep = masked_batch()
    out = model(ids, labels, sample_u=uniforms(1), special_ids=SPECIAL)
    assert torch.equal(out.corrupted_ids[~keep], original[~keep])  # untouched outside the masks
    assert not torch.isin(out.corrupted_ids, SPECIAL).any()  # no [MASK] left, no special token sampled
    # The same seed draws the same samples again, as resume needs; another seed draws others.
    again = model(ids, labels, sample_u=uniforms(1), special_ids=SPECIAL)
    assert torch.equal(again.corrupted_ids, out.corrupted_ids)
    other = model(ids, labels, sample_u=uniforms(2), special_ids=SPECIAL)
    assert not torch.equal(other.corrupted_ids, out.corrupted_ids)


@pytest.mark.parametrize("share", [False, True])
def test_a_sample_equal_to_the_original_counts_as_original(share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    original, ids, labels, keep = masked_batch()
    # A generator certain of the original token at every masked position: nothing is replaced.
    with torch.no_grad():
        model.generator.predictions.decoder.bias.zero_()
    certain = F.one_hot(labels[keep], 50).float() * 1e4  # (M, V)
    model.generator.forward = lambda *args: certain
    out = model(ids, labels, sample_u=uniforms(0))
    assert torch.equal(out.corrupted_ids, original)
    assert not out.replaced.any()
    # Certain of another token: every masked position is replaced, and only those.
    wrong = F.one_hot((labels[keep] - 5 + 1) % 45 + 5, 50).float() * 1e4
    model.generator.forward = lambda *args: wrong
    out = model(ids, labels, sample_u=uniforms(0))
    assert torch.equal(out.replaced, keep)


@pytest.mark.parametrize("share", [False, True])
def test_discriminator_loss_covers_every_real_token_and_no_padding(share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    original, ids, labels, keep = masked_batch()
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    labels = torch.where(attention_mask.bool(), labels, torch.full_like(labels, IGNORE_INDEX))
    out = model(ids, labels, attention_mask=attention_mask, sample_u=uniforms(0))
    real = attention_mask.bool()
    expected = F.binary_cross_entropy_with_logits(out.discriminator_logits[real], out.replaced[real].float())
    assert out.real_tokens == int(real.sum())
    assert torch.allclose(out.discriminator_loss, expected, atol=1e-6)
    # The padding's own logits cannot move the loss: the loss over all positions would differ.
    everywhere = F.binary_cross_entropy_with_logits(out.discriminator_logits, out.replaced.float())
    assert not torch.allclose(everywhere, expected, atol=1e-4)
    # The total is the paper's weighting.
    assert torch.allclose(out.loss, out.generator_loss + 50.0 * out.discriminator_loss)


@pytest.mark.parametrize("share", [False, True])
def test_gradients_reach_both_models_but_not_through_the_samples(share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    original, ids, labels, keep = masked_batch()
    out = model(ids, labels, sample_u=uniforms(0))
    out.discriminator_loss.backward()
    # L_D trains the discriminator and its embeddings (shared or not), never the generator's own layers.
    assert model.discriminator_predictions.dense.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    gen_only = [p for n, p in model.generator.named_parameters() if not (share and "decoder.weight" in n)]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in gen_only)
    model.zero_grad()
    model(ids, labels, sample_u=uniforms(0)).generator_loss.backward()
    assert model.generator.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_gumbel_max_samples_follow_the_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]]).expand(20000, 4)  # (M, V)
    draws = sample_replacements(logits, uniforms(0, (20000,)))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.01)
    # With id 0 never drawn, the others keep their relative odds.
    draws = sample_replacements(logits, uniforms(1, (20000,)), never=torch.tensor([0]))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[0] == 0 and torch.allclose(freq[1:], logits[0, 1:].softmax(-1), atol=0.01)


@pytest.mark.parametrize("share", [False, True])
def test_samples_do_not_depend_on_how_the_batch_is_split(share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    _, ids, labels, _ = masked_batch()
    u = uniforms(5)
    whole = model(ids, labels, sample_u=u, special_ids=SPECIAL).corrupted_ids
    parts = [model(ids[r], labels[r], sample_u=u[r], special_ids=SPECIAL).corrupted_ids for r in (slice(0, 1), slice(1, 3))]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.parametrize("share", [False, True])
def test_the_run_directory_is_a_bert_checkpoint_of_the_discriminator(tmp_path, share):
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    save_pretrained(model, tmp_path)
    encoder, report = load_pretrained(tmp_path, BertModel)
    for key, value in model.bert.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    assert any(k.startswith("generator.") for k in report.unused)
    # And it loads back whole (resume), the tied decoder re-tied to the shared word embeddings.
    back = ElectraForPreTraining(tiny(), generator_size=0.5, share_embeddings=share)
    from minibert.state_dict import load_state_dict_checked
    from safetensors.torch import load_file

    report = load_state_dict_checked(back, load_file(str(tmp_path / "model.safetensors")))
    assert not report.unused
    table = back.bert.embeddings if share else back.generator.embeddings
    assert back.generator.predictions.decoder.weight.data_ptr() == table.word_embeddings.weight.data_ptr()
    assert (back.generator.predictions.decoder.weight.data_ptr()
            == back.bert.embeddings.word_embeddings.weight.data_ptr()) == share
    _, ids, labels, _ = masked_batch()
    a = model(ids, labels, sample_u=uniforms(3))
    b = back(ids, labels, sample_u=uniforms(3))
    assert math.isclose(a.loss.item(), b.loss.item(), rel_tol=1e-6)


def test_generator_size_out_of_range_is_refused():
    with pytest.raises(ValueError, match="generator_size"):
        ElectraForPreTraining(tiny(), generator_size=0.0)
