"""T5's span corruption: the target puts the block back exactly, the noise is 15% in spans of 3 on average, special
tokens are never dropped, the draws depend on the generator alone; the objective trains a tiny T5."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import InputError
from minibert.config import PRESETS
from minibert.generate import fill_spans
from minibert.heads import IGNORE_INDEX
from minibert.t5 import T5ForConditionalGeneration
from train.span import SpanCorruption, noise_counts, span_corruption

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = torch.tensor([PAD, UNK, CLS, SEP, MASK])
V = 60  # the "tokenizer's" vocabulary; sentinels are 60, 61, ...


def blocks(B, T, seed, docs_per_block=3):
    """Packed-block lookalikes: [CLS] first, [SEP] last and at a few document ends inside, real ids between."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    if T > 4 and docs_per_block > 1:
        inner = torch.randint(2, T - 2, (B, docs_per_block - 1), generator=g)
        ids.scatter_(1, inner, SEP)
    return ids


def corrupt(ids, seed=0, n_sentinels=100, **kw):
    g = torch.Generator().manual_seed(seed)
    return span_corruption(ids, g, special_ids=SPECIAL, sentinel_base=V, n_sentinels=n_sentinels,
                           eos_token_id=SEP, pad_token_id=PAD, **kw)


def rows(out):
    """Each row's real encoder input and its target, as lists."""
    for b in range(out.input_ids.size(0)):
        inp = out.input_ids[b][out.attention_mask[b].bool()].tolist()
        target = [t for t in out.labels[b].tolist() if t != IGNORE_INDEX]
        yield inp, target


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 5), T=st.integers(1, 70), seed=st.integers(0, 10_000), docs=st.integers(1, 6),
       density=st.sampled_from([0.15, 0.3, 0.5]), mean=st.sampled_from([1.0, 3.0, 5.0]))
def test_the_target_fills_the_input_back_into_the_block_exactly(B, T, seed, docs, density, mean):
    ids = blocks(B, T, seed, docs)
    out = corrupt(ids, seed, noise_density=density, mean_span_length=mean)
    sentinels = range(V, V + 100)
    for b, (inp, target) in enumerate(rows(out)):
        assert fill_spans(inp, target, sentinels, eos_token_id=SEP) == ids[b].tolist()
        # the target: <s0> span <s1> span ... [SEP]; sentinels numbered from 0 in order, one per span in the input
        used = [t for t in target if t >= V]
        assert used == list(range(V, V + len(used))) == [t for t in inp if t >= V]
        assert target[-1] == SEP and (not used or target[0] == V)
        n = int(out.noise_mask[b].sum())
        assert len(inp) == T - n + len(used) and len(target) == n + len(used) + 1
    # padded to the longest row, no further
    assert out.attention_mask.sum(1).max() == out.input_ids.size(1)
    assert (out.labels != IGNORE_INDEX).sum(1).max() == out.labels.size(1)
    assert (out.input_ids[out.attention_mask == 0] == PAD).all()


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 4), T=st.integers(1, 80), seed=st.integers(0, 10_000), docs=st.integers(1, 8))
def test_no_special_token_is_ever_inside_a_span(B, T, seed, docs):
    ids = blocks(B, T, seed, docs)
    ids[:, T // 2] = MASK  # any special id, not only [CLS] and [SEP]
    out = corrupt(ids, seed)
    special = torch.isin(ids, SPECIAL)
    assert not (out.noise_mask & special).any()
    for b, (inp, target) in enumerate(rows(out)):
        assert [t for t in inp if t < 5] == [t for t in ids[b].tolist() if t < 5]  # every special token kept
        assert all(t >= 5 for t in target[:-1])  # spans hold no special token; [SEP] only at the end


@pytest.mark.parametrize("density, mean", [(0.15, 3.0), (0.3, 5.0)])
def test_noise_fraction_and_mean_span_length_are_what_was_asked(density, mean):
    ids = blocks(400, 128, 0, docs_per_block=2)
    out = corrupt(ids, 1, noise_density=density, mean_span_length=mean)
    L = (~torch.isin(ids, SPECIAL)).sum(1)
    n_expected, k_expected = noise_counts(L, density, mean)
    n = out.noise_mask.sum(1)
    assert torch.equal(n, n_expected)  # exactly round(d L) noise tokens in every block
    assert abs(n.sum().item() / L.sum().item() - density) < 0.01
    spans = (out.labels >= V).sum(1)
    assert (spans >= k_expected).all()  # cuts at a [SEP] or at the roll's wrap only add spans
    assert abs(n.sum().item() / spans.sum().item() - mean) < 0.1 * mean


def test_positions_away_from_the_ends_are_dropped_equally_often():
    """T5's unrolled layout ends with noise: with one span per block it would drop the last three tokens every time.
    Here the span goes anywhere; only the first and last two tokens, covered by fewer placements, go less often."""
    ids = blocks(4000, 24, 3, docs_per_block=1)
    freq = corrupt(ids, 4).noise_mask[:, 1:-1].float().mean(0)  # (22,) per position, [CLS] and [SEP] left out
    assert abs(freq.mean().item() - 3 / 22) < 0.005  # n = round(0.15 * 22) = 3 in every block
    assert ((freq[2:-2] - 0.15).abs() < 0.02).all()  # 3 of the 20 places a span of 3 can start cover a position
    assert freq.max() < 0.17 and freq[-1] < 0.08


def test_the_same_generator_state_gives_the_same_batch_and_the_draws_do_not_depend_on_the_text():
    objective = SpanCorruption(vocab_size=V, special_ids=SPECIAL, pad_token_id=PAD, eos_token_id=SEP)
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first, second = objective.make_batch(blocks(6, 50, 0), a), objective.make_batch(blocks(6, 50, 0), b)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(a.get_state(), b.get_state())
    objective.make_batch(blocks(6, 50, 1, docs_per_block=6), b)  # other text, same (B, T)
    objective.make_batch(blocks(6, 50, 0), a)
    assert torch.equal(a.get_state(), b.get_state())
    other = objective.make_batch(blocks(6, 50, 0), torch.Generator().manual_seed(8))
    assert other["input_ids"].shape != first["input_ids"].shape or not torch.equal(other["input_ids"],
                                                                                    first["input_ids"])


def test_too_few_sentinels_or_a_bad_density_is_an_input_error():
    with pytest.raises(InputError, match="sentinels"):
        corrupt(blocks(2, 128, 0), n_sentinels=3)
    with pytest.raises(InputError, match="noise_density"):
        corrupt(blocks(2, 16, 0), noise_density=1.0)
    objective = SpanCorruption(vocab_size=V, special_ids=SPECIAL, pad_token_id=PAD, eos_token_id=SEP)
    config = objective.config_from(PRESETS["tiny"], V, 32)
    config.vocab_size = V  # no room for the sentinels
    with pytest.raises(InputError, match="sentinels"):
        objective.build(config)


def tiny_objective_and_model(seed=0):
    objective = SpanCorruption(vocab_size=V, special_ids=SPECIAL, pad_token_id=PAD, eos_token_id=SEP, n_sentinels=8)
    fields = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    config = objective.config_from(fields, V, 32)
    torch.manual_seed(seed)
    return objective, objective.build(config)


def test_config_from_maps_a_preset_onto_t5_and_adds_the_sentinels():
    objective = SpanCorruption(vocab_size=1200, special_ids=SPECIAL, pad_token_id=PAD, eos_token_id=SEP)
    config = objective.config_from({**PRESETS["small"], "vocab_size": 7, "attn_impl": "math"}, 1200, 128)
    assert (config.d_model, config.num_heads, config.d_kv, config.d_ff) == (256, 4, 64, 1024)
    assert (config.num_layers, config.num_decoder_layers) == (4, 4)
    assert config.vocab_size == 1200 + 100 and config.attn_impl == "math"
    assert (config.pad_token_id, config.decoder_start_token_id, config.eos_token_id) == (PAD, PAD, SEP)
    assert config.chunked_loss and not config.fused_qkv and not config.unpad  # training's fast path
    assert objective.config_from({**PRESETS["small"], "fused_qkv": True}, 1200, 128).fused_qkv  # when asked for
    # an encoder block has BERT's matmul weights: 4C² (Q, K, V, O) + 2CI (the feed-forward)
    model = T5ForConditionalGeneration(config)
    block = model.encoder.block[1]
    matmul = sum(p.numel() for p in block.parameters() if p.dim() == 2)
    assert matmul == 4 * 256**2 + 2 * 256 * 1024


def test_tiny_forward_backward_and_held_out_sums():
    objective, model = tiny_objective_and_model()
    batch = objective.make_batch(blocks(4, 32, 0), torch.Generator().manual_seed(0))
    counts = objective.counts(batch)
    assert counts == {"span": int((batch["labels"] != IGNORE_INDEX).sum())} and counts["span"] > 4
    model.train()
    losses = objective.losses(model, batch)
    assert set(losses) == set(objective.weights) == {"span"}
    losses["span"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.shared.weight.grad.abs().sum() > 0
    model.eval()
    assert objective.losses(model, batch) and model(batch["input_ids"], labels=batch["labels"]).logits is None
    sums = objective.eval_sums(model, batch)  # the chunked loss forms no logits: the held-out sums ask for them
    assert int(sums["count"]) == counts["span"] and 0 <= int(sums["correct"]) <= counts["span"]
    torch.testing.assert_close(sums["loss"] / sums["count"], objective.losses(model, batch)["span"].detach())


def test_a_few_steps_lower_the_loss_on_one_batch():
    objective, model = tiny_objective_and_model()
    batch = objective.make_batch(blocks(4, 32, 0), torch.Generator().manual_seed(0))
    model.eval()  # no dropout: the loss is a function of the weights alone
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = objective.losses(model, batch)["span"].item()
    for _ in range(15):
        loss = objective.losses(model, batch)["span"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert objective.losses(model, batch)["span"].item() < 0.7 * first


def test_training_with_dropout_on_the_cpu_takes_the_readable_attention_path(monkeypatch):
    """As for GPT: no fused CPU kernel drops out attention probabilities (torch falls back to a composite of the
    same formula), so T5's sdpa path runs the math path in training on the CPU, and sdpa's kernel otherwise."""
    import minibert.t5

    objective = SpanCorruption(vocab_size=V, special_ids=SPECIAL, pad_token_id=PAD, eos_token_id=SEP, n_sentinels=8)
    batch = objective.make_batch(blocks(4, 32, 0), torch.Generator().manual_seed(0))
    fields = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    model = objective.build(objective.config_from({**fields, "attn_impl": "sdpa"}, V, 32))
    calls = []
    sdpa = minibert.t5.F.scaled_dot_product_attention
    counted = lambda *a, **k: calls.append(1) or sdpa(*a, **k)  # noqa: E731
    monkeypatch.setattr(minibert.t5.F, "scaled_dot_product_attention", counted)
    objective.losses(model.train(), batch)["span"].backward()
    assert calls == []
    objective.losses(model.eval(), batch)
    assert len(calls) == 2 + 2 * 2  # every attention: two encoder blocks, two decoder blocks (self and cross)
