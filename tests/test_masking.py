"""Dynamic MLM masking: rates, the 80/10/10 rule, labels, reproducibility and whole-word masking."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.mlm import IGNORE_INDEX, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = frozenset({PAD, UNK, CLS, SEP, MASK})

PROPERTY = settings(max_examples=25, deadline=None)


def batch(seed, B, T, vocab_size, pad_fraction=0.2):
    """Random ids laid out like real input: [CLS] tokens [SEP], then padding; shape (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)  # (B, T)
    lengths = T - (torch.rand(B, generator=g) * pad_fraction * T).long()  # (B,)
    positions = torch.arange(T).expand(B, T)  # (B, T)
    ids[positions >= lengths[:, None]] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    return ids


def mask(ids, seed, vocab_size, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return mask_tokens(
        ids, vocab_size=vocab_size, special_ids=SPECIAL, mask_token_id=MASK, generator=generator, **kwargs
    )


def within_binomial(count, n, p, sigmas=5.0, slack=0):
    """Whether count is within `sigmas` standard deviations (plus `slack`) of Binomial(n, p)'s mean."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + slack + 1e-9


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    p=st.sampled_from([0.05, 0.15, 0.3, 0.5]),
    split=st.sampled_from([(0.1, 0.1), (0.2, 0.0), (0.0, 0.25)]),
)
def test_rates_labels_and_specials(seed, p, split):
    random_prob, keep_prob = split
    vocab_size = 30_000
    ids = batch(seed, 32, 128, vocab_size)
    masked, labels = mask(
        ids, seed, vocab_size, mlm_probability=p, random_replace_prob=random_prob, keep_prob=keep_prob
    )
    candidate = ~torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    chosen = labels != IGNORE_INDEX
    # Labels: the original id where chosen, -100 elsewhere; the input is unchanged where nothing was chosen.
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    # Never a special token or padding.
    assert not (chosen & ~candidate).any()
    # About p of the candidates (the forced one per sequence adds at most B).
    n = int(candidate.sum())
    assert within_binomial(int(chosen.sum()), n, p, slack=ids.shape[0])
    assert chosen.any(dim=1).all()
    # The 80/10/10 split among the chosen. A random replacement equals the original 1 time in ~30,000.
    k = int(chosen.sum())
    as_mask = int((masked[chosen] == MASK).sum())
    unchanged = int((masked[chosen] == ids[chosen]).sum())
    replaced = k - as_mask - unchanged
    assert within_binomial(as_mask, k, 1 - random_prob - keep_prob)
    assert within_binomial(unchanged, k, keep_prob, slack=2)
    assert within_binomial(replaced, k, random_prob, slack=2)
    # Random replacements are ordinary tokens.
    assert not torch.isin(masked[chosen & (masked != MASK)], torch.tensor([PAD, UNK, CLS, SEP])).any()
    assert ((masked >= 0) & (masked < vocab_size)).all()


@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 6), T=st.integers(2, 40))
def test_same_seed_same_output(seed, B, T):
    ids = batch(seed, B, T, 50)
    first = mask(ids, seed, 50)
    second = mask(ids, seed, 50)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    word_start = torch.from_numpy(np.random.default_rng(seed).random(50) < 0.5)
    first = mask(ids, seed, 50, word_start=word_start)
    second = mask(ids, seed, 50, word_start=word_start)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_generator_state_resumes_exactly():
    ids = batch(0, 4, 64, 100)
    generator = torch.Generator().manual_seed(7)
    kwargs = dict(vocab_size=100, special_ids=SPECIAL, mask_token_id=MASK, generator=generator)
    mask_tokens(ids, **kwargs)
    state = generator.get_state()
    expected = mask_tokens(ids, **kwargs)
    generator.set_state(state)
    resumed = mask_tokens(ids, **kwargs)
    assert torch.equal(expected[0], resumed[0]) and torch.equal(expected[1], resumed[1])


@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), T=st.integers(3, 12))
def test_every_sequence_with_candidates_gets_a_label(seed, T):
    ids = batch(seed, 64, T, 40, pad_fraction=0.5)
    has_candidate = (~torch.isin(ids, torch.tensor(sorted(SPECIAL)))).any(dim=1)  # (B,)
    word_start = torch.from_numpy(np.random.default_rng(seed).random(40) < 0.3)
    for table in (None, word_start):
        _, labels = mask(ids, seed, 40, mlm_probability=0.01, word_start=table)
        assert torch.equal((labels != IGNORE_INDEX).any(dim=1), has_candidate)


def test_sequence_of_only_specials_gets_no_label():
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [CLS, 7, SEP, PAD]])
    masked, labels = mask(ids, 0, 10)
    assert (labels[0] == IGNORE_INDEX).all() and torch.equal(masked[0], ids[0])
    assert labels[1].tolist() == [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]


def reference_words(ids_row, word_start):
    """Words as lists of positions, by a plain loop: a start token or a token after a special begins a word."""
    words, previous_special = [], True
    for t, token in enumerate(ids_row.tolist()):
        if token in SPECIAL:
            previous_special = True
            continue
        if word_start[token] or previous_special:
            words.append([])
        words[-1].append(t)
        previous_special = False
    return words


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    start_rate=st.sampled_from([0.2, 0.5, 0.9]),
    p=st.sampled_from([0.1, 0.15, 0.4]),
)
def test_whole_word_masking_masks_whole_words(seed, start_rate, p):
    vocab_size = 60
    word_start = torch.from_numpy(np.random.default_rng(seed).random(vocab_size) < start_rate)  # (V,)
    ids = batch(seed, 16, 48, vocab_size)
    masked, labels = mask(ids, seed, vocab_size, word_start=word_start, mlm_probability=p)
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    n_words = chosen_words = 0
    for row in range(ids.shape[0]):
        words = reference_words(ids[row], word_start)
        covered = [t for w in words for t in w]
        assert not chosen[row, [t for t in range(ids.shape[1]) if t not in covered]].any()
        for word in words:
            states = chosen[row, word]
            assert states.all() or not states.any(), f"word {word} partly chosen"
            chosen_words += int(states.all())
        n_words += len(words)
    assert within_binomial(chosen_words, n_words, p, slack=ids.shape[0])


def test_whole_word_large_batch_token_rate():
    vocab_size = 1000
    word_start = torch.from_numpy(np.random.default_rng(0).random(vocab_size) < 0.4)
    ids = batch(1, 64, 256, vocab_size)
    _, labels = mask(ids, 1, vocab_size, word_start=word_start, mlm_probability=0.15)
    candidates = int((~torch.isin(ids, torch.tensor(sorted(SPECIAL)))).sum())
    # Token rate stays p on average, but tokens of one word move together, so allow a wider band.
    assert abs(int((labels != IGNORE_INDEX).sum()) / candidates - 0.15) < 0.02


def test_bad_arguments():
    ids = batch(0, 2, 8, 20)
    with pytest.raises(ValueError, match="mlm_probability"):
        mask(ids, 0, 20, mlm_probability=0.0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        mask(ids, 0, 20, random_replace_prob=0.6, keep_prob=0.6)
    with pytest.raises(ValueError, match="word_start must have shape"):
        mask(ids, 0, 20, word_start=torch.ones(19, dtype=torch.bool))
