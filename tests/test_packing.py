"""Tokenization cache, block packing and the held-out split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.errors import InputError
from train.packing import pack_blocks, split_blocks, tokenize_to_cache

CLS, SEP = 2, 3


class CountingTokenizer:
    """A stand-in tokenizer: one id per character, counting how many texts it has encoded."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, 4

    def __init__(self, vocab_size=1000):
        self.vocab_size = vocab_size
        self.special_ids = frozenset(range(5))
        self.encoded = 0

    def encode_plain(self, texts):
        self.encoded += len(texts)
        return [[5 + ord(c) % (self.vocab_size - 5) for c in text] for text in texts]


def stream_and_offsets(lengths, seed=0):
    """Random non-special ids for documents of the given lengths: (ids, offsets)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return rng.integers(5, 1000, size=int(offsets[-1])).astype(np.uint16), offsets


def content(blocks):
    """The non-special tokens of the blocks, in order."""
    flat = blocks.reshape(-1)
    return flat[(flat != CLS) & (flat != SEP)]


# --- tokenize_to_cache ---------------------------------------------------------------------------------------


def test_cache_holds_ids_and_offsets(tmp_path):
    tok = CountingTokenizer()
    texts = ["ab", "", "cde"]
    ids, offsets = tokenize_to_cache(texts, tok, tmp_path / "cache", tokenizer_fingerprint="v1")
    assert ids.dtype == np.uint16 and offsets.tolist() == [0, 2, 2, 5]
    expected = tok.encode_plain(texts)
    assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(3)] == expected


def test_cache_hit_does_not_tokenize_again(tmp_path):
    tok = CountingTokenizer()
    texts = ["一二三", "四五"] * 3000  # more than one encode batch
    first = tokenize_to_cache(texts, tok, tmp_path, tokenizer_fingerprint="v1")
    assert tok.encoded == len(texts)
    second = tokenize_to_cache(texts, tok, tmp_path, tokenizer_fingerprint="v1")
    assert tok.encoded == len(texts)  # loaded, not re-tokenized
    assert isinstance(second.ids, np.memmap)
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.offsets, second.offsets)


def test_changed_text_or_tokenizer_rebuilds(tmp_path):
    tok = CountingTokenizer()
    tokenize_to_cache(["ab", "c"], tok, tmp_path, tokenizer_fingerprint="v1")
    ids, _ = tokenize_to_cache(["a", "bc"], tok, tmp_path, tokenizer_fingerprint="v1")  # same characters
    assert tok.encoded == 4
    tokenize_to_cache(["a", "bc"], tok, tmp_path, tokenizer_fingerprint="v2")
    assert tok.encoded == 6
    ids, offsets = tokenize_to_cache(["a", "bc"], tok, tmp_path, tokenizer_fingerprint="v2")
    assert tok.encoded == 6 and offsets.tolist() == [0, 1, 3]


def test_interrupted_build_is_not_reused(tmp_path):
    tok = CountingTokenizer()
    tokenize_to_cache(["ab"], tok, tmp_path, tokenizer_fingerprint="v1")
    (tmp_path / "offsets.npy").write_bytes(b"truncated")
    ids, offsets = tokenize_to_cache(["ab"], tok, tmp_path, tokenizer_fingerprint="v1")
    assert tok.encoded == 2 and offsets.tolist() == [0, 2]
    assert not list(tmp_path.glob(".*tmp*"))


def test_large_vocabulary_uses_int32(tmp_path):
    ids, _ = tokenize_to_cache(["ab"], CountingTokenizer(vocab_size=70_000), tmp_path, tokenizer_fingerprint="v")
    assert ids.dtype == np.int32


# --- pack_blocks -----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=40),
    block_size=st.integers(3, 32),
    seed=st.integers(0, 2**16),
)
def test_blocks_are_exact_and_lose_nothing_but_the_tail(lengths, block_size, seed):
    ids, offsets = stream_and_offsets(lengths, seed)
    if len(ids) + sum(n > 0 for n in lengths) < block_size - 1:
        with pytest.raises(InputError, match=f"corpus has {len(ids)} tokens, fewer than one block of {block_size}"):
            pack_blocks(ids, offsets, block_size, CLS, SEP)
        return
    blocks = pack_blocks(ids, offsets, block_size, CLS, SEP)
    assert blocks.ndim == 2 and blocks.shape[1] == block_size and blocks.dtype == ids.dtype
    assert (blocks[:, 0] == CLS).all() and (blocks[:, -1] == SEP).all()
    assert (blocks[:, 1:] != CLS).all()
    # No token lost or duplicated: the block contents are the token stream, up to a tail shorter than a block.
    packed = content(blocks)
    np.testing.assert_array_equal(packed, ids[: len(packed)])
    assert len(ids) - len(packed) < block_size - 1
    # No empty segment ([SEP] [SEP]) except the rare one at a block's end.
    inner = blocks[:, 1:-1]
    assert not ((inner[:, :-1] == SEP) & (inner[:, 1:] == SEP)).any()
    assert not (blocks[:, 1] == SEP).any()


def test_block_layout_example():
    # Documents [10 11 12] [20 21] [30 31 32 33 34], T = 6: room for 5 tokens after [CLS].
    ids = np.array([10, 11, 12, 20, 21, 30, 31, 32, 33, 34])
    offsets = np.array([0, 3, 5, 10])
    blocks = pack_blocks(ids, offsets, 6, CLS, SEP)
    assert blocks.tolist() == [
        [CLS, 10, 11, 12, SEP, SEP],  # [20 ...] would need two positions, only one is left
        [CLS, 20, 21, SEP, 30, SEP],  # the third document is split ...
        [CLS, 31, 32, 33, 34, SEP],  # ... and continues here
    ]


def test_documents_that_fill_blocks_exactly():
    ids, offsets = stream_and_offsets([5] * 20)
    blocks = pack_blocks(ids, offsets, 13, CLS, SEP)  # two documents of 5, each with its [SEP], fill 12 positions
    documents = ids.reshape(10, 2, 5)
    assert blocks.shape == (10, 13)
    np.testing.assert_array_equal(blocks[:, 1:6], documents[:, 0])
    np.testing.assert_array_equal(blocks[:, 7:12], documents[:, 1])
    assert (blocks[:, [6, 12]] == SEP).all()


def test_short_corpus_message():
    ids, offsets = stream_and_offsets([3, 2])
    with pytest.raises(InputError, match="corpus has 5 tokens, fewer than one block of 128; add text or lower"):
        pack_blocks(ids, offsets, 128, CLS, SEP)


def test_offsets_need_not_start_at_zero():
    ids = np.array([99, 10, 11, 12, 20, 21, 99])
    blocks = pack_blocks(ids, np.array([1, 4, 6]), 4, CLS, SEP)
    assert blocks.tolist() == [[CLS, 10, 11, SEP], [CLS, 12, SEP, SEP], [CLS, 20, 21, SEP]]


# --- split_blocks ----------------------------------------------------------------------------------------------


def test_split_is_fixed_disjoint_and_complete():
    blocks = np.arange(1000).reshape(100, 10)
    train, held = split_blocks(blocks, 0.05, seed=3)
    assert len(train) == 95 and len(held) == 5
    again_train, again_held = split_blocks(blocks, 0.05, seed=3)
    np.testing.assert_array_equal(held, again_held)
    np.testing.assert_array_equal(train, again_train)
    rows = sorted(r[0] for r in np.concatenate([train, held]))
    assert rows == list(range(0, 1000, 10))
    assert (np.diff(train[:, 0]) > 0).all() and (np.diff(held[:, 0]) > 0).all()  # original order kept
    _, other = split_blocks(blocks, 0.05, seed=4)
    assert held.tolist() != other.tolist()


def test_split_edge_cases():
    blocks = np.zeros((3, 4))
    assert len(split_blocks(blocks, 0.0, seed=0)[1]) == 0
    assert len(split_blocks(blocks, 0.01, seed=0)[1]) == 1  # at least one held-out block
    with pytest.raises(InputError, match="too few to hold out"):
        split_blocks(np.zeros((1, 4)), 0.1, seed=0)
    with pytest.raises(InputError, match="eval fraction"):
        split_blocks(blocks, 1.0, seed=0)
