"""Generation: the key-value cache changes nothing but the work, greedy decoding is transformers' greedy decoding,
and each sampling option does what it says."""

import pytest
import torch

from minibert import InputError
from minibert.generate import GenerationConfig, choose_next, fill_spans, generate
from minibert.gpt import GPT2Config, GPT2LMHeadModel
from minibert.gpt_t5_checkpoint import from_hf_model
from minibert.t5 import T5Config, T5ForConditionalGeneration

transformers = pytest.importorskip("transformers")


def jitter(model, scale=0.3):
    """Sharper, less uniform distributions than a fresh initialisation, so that tokens differ from step to step."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def gpt(impl="sdpa", **overrides):
    torch.manual_seed(0)
    config = dict(vocab_size=50, n_positions=40, n_embd=16, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=None)
    return jitter(GPT2LMHeadModel(GPT2Config(**{**config, **overrides}, attn_impl=impl)))


def t5(impl="sdpa", **overrides):
    torch.manual_seed(0)
    config = dict(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=12, eos_token_id=1)
    return varied_t5(T5ForConditionalGeneration(T5Config(**{**config, **overrides}, attn_impl=impl)))


def varied_t5(model):
    """T5's embedding starts with std 1, so a random model, tied, keeps predicting the token it just read; a smaller
    embedding lets the blocks decide and the output vary."""
    jitter(model)
    with torch.no_grad():
        model.shared.weight.mul_(0.1)
    return model


PROMPT = torch.tensor([[3, 14, 15, 9, 2], [6, 5, 35, 8, 9]])
SETTINGS = [
    dict(),  # greedy
    dict(do_sample=True, seed=1),
    dict(do_sample=True, seed=2, temperature=0.7, top_k=5),
    dict(do_sample=True, seed=3, temperature=1.5),
]


@pytest.mark.parametrize("impl", ["math", "sdpa"])
@pytest.mark.parametrize("options", SETTINGS)
def test_gpt_cache_gives_the_tokens_of_recomputing_the_prefix(impl, options):
    model = gpt(impl)
    cached = generate(model, PROMPT, GenerationConfig(max_new_tokens=25, use_cache=True, **options))
    recomputed = generate(model, PROMPT, GenerationConfig(max_new_tokens=25, use_cache=False, **options))
    assert cached.shape == (2, 30)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached[:, :5], PROMPT)
    assert len(set(cached[0, 5:].tolist())) > 1  # a real continuation, not one token repeated


@pytest.mark.parametrize("impl", ["math", "sdpa"])
@pytest.mark.parametrize("options", SETTINGS)
def test_t5_cache_gives_the_tokens_of_recomputing_the_prefix(impl, options):
    model = t5(impl)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids = PROMPT * mask
    settings = dict(max_new_tokens=15, eos_token_id=-1, **options)  # -1: never stop early
    cached = generate(model, ids, GenerationConfig(use_cache=True, **settings), attention_mask=mask)
    recomputed = generate(model, ids, GenerationConfig(use_cache=False, **settings), attention_mask=mask)
    assert cached.shape == (2, 16) and (cached[:, 0] == 0).all()  # starts with decoder_start_token_id
    assert torch.equal(cached, recomputed)
    assert len(set(cached[0, 1:].tolist())) > 1


def test_gpt_greedy_is_transformers_greedy():
    torch.manual_seed(0)
    hc = transformers.GPT2Config(vocab_size=50, n_positions=40, n_embd=16, n_layer=2, n_head=4, bos_token_id=0,
                                 eos_token_id=0, attn_implementation="eager")
    hf = jitter(transformers.GPT2LMHeadModel(hc))
    mb = from_hf_model(hf).eval()
    theirs = hf.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=20, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    ours = generate(mb, PROMPT, GenerationConfig(max_new_tokens=20))
    assert torch.equal(ours, theirs)


def test_t5_greedy_is_transformers_greedy():
    torch.manual_seed(0)
    hc = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
                               relative_attention_num_buckets=8, relative_attention_max_distance=12,
                               decoder_start_token_id=0, attn_implementation="eager")
    hf = varied_t5(transformers.T5ForConditionalGeneration(hc))
    mb = from_hf_model(hf).eval()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    theirs = hf.generate(PROMPT * mask, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None)
    ours = generate(mb, PROMPT * mask, GenerationConfig(max_new_tokens=12, eos_token_id=-1), attention_mask=mask)
    assert torch.equal(ours, theirs)


def test_seeded_sampling_repeats_and_the_seed_matters():
    model = gpt()
    runs = [generate(model, PROMPT, GenerationConfig(max_new_tokens=20, do_sample=True, seed=s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_top_k_draws_only_among_the_k_largest():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 30, generator=g)
    top3 = logits.topk(3, dim=-1).indices  # (4, 3)
    settings = GenerationConfig(do_sample=True, top_k=3, temperature=5.0)  # a flat distribution inside the top 3
    draws = torch.stack([choose_next(logits, settings, g) for _ in range(300)], dim=1)  # (4, 300)
    for row in range(4):
        assert set(draws[row].tolist()) == set(top3[row].tolist())  # all three drawn, nothing else
    assert torch.equal(choose_next(logits, GenerationConfig(do_sample=True, top_k=1), g), logits.argmax(-1))


def test_temperature_sharpens_and_flattens():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])

    def share_of_argmax(temperature):
        settings = GenerationConfig(do_sample=True, temperature=temperature)
        draws = torch.cat([choose_next(logits, settings, g) for _ in range(2000)])
        return (draws == 0).float().mean().item()

    expected = logits.softmax(-1)[0, 0].item()  # 0.64 at temperature 1
    assert share_of_argmax(0.05) == 1.0
    assert abs(share_of_argmax(1.0) - expected) < 0.04
    assert abs(share_of_argmax(100.0) - 0.25) < 0.04


def test_a_row_stops_at_eos_and_the_batch_when_every_row_has():
    model = gpt()
    free = generate(model, PROMPT, GenerationConfig(max_new_tokens=10))
    eos = free[0, 7].item()  # the third token row 0 writes
    stopped = generate(model, PROMPT, GenerationConfig(max_new_tokens=10, eos_token_id=eos))
    ends = []
    for row in range(2):
        hits = (free[row, 5:] == eos).nonzero()
        end = hits[0].item() + 5 if len(hits) else free.size(1) - 1  # index of the row's first eos
        ends.append(end)
        assert torch.equal(stopped[row, : end + 1], free[row, : end + 1])  # the same tokens up to eos
        assert (stopped[row, end + 1:] == eos).all()  # then eos repeated (GPT-2 has no pad id)
    assert stopped.size(1) == max(ends) + 1  # the batch stops once every row has ended
    single = generate(model, PROMPT[:1], GenerationConfig(max_new_tokens=10, eos_token_id=eos))
    assert single.shape == (1, ends[0] + 1)
    assert ends[0] < 9  # row 0 did stop early, so the test saw a stop


def test_max_new_tokens_and_bad_settings():
    model = gpt()
    assert generate(model, PROMPT, GenerationConfig(max_new_tokens=0)).shape == (2, 5)
    assert generate(model, PROMPT, GenerationConfig(max_new_tokens=3)).shape == (2, 8)
    with pytest.raises(InputError, match="n_positions=40"):
        generate(model, PROMPT, GenerationConfig(max_new_tokens=36))
    for bad in (dict(temperature=0.0), dict(top_k=0), dict(max_new_tokens=-1)):
        with pytest.raises(InputError):
            GenerationConfig(**bad)
    with pytest.raises(InputError, match="unpadded"):
        generate(model, PROMPT, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))


def test_generate_leaves_the_model_in_its_mode():
    model = gpt().train()
    generate(model, PROMPT, GenerationConfig(max_new_tokens=2))
    assert model.training


def test_fill_spans_puts_the_answer_back_into_the_question():
    s0, s1, s2, eos = 100, 101, 102, 1
    question = [10, s0, 11, 12, s1, 13]
    answer = [s0, 20, 21, s1, 22, s2, eos, 99]
    assert fill_spans(question, answer, [s0, s1, s2], eos) == [10, 20, 21, 11, 12, 22, 13]
    assert fill_spans(question, [s0, 20], [s0, s1, s2], eos) == [10, 20, 11, 12, 13]  # s1 unfilled: dropped
