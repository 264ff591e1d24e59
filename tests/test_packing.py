"""Block packing (in memory, and streamed over token shards), the held-out split and the batch order."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.errors import InputError
from train import packing
from train.shards import TokenStream
from train.packing import (BlockStream, BlocksExcept, BlockSubset, PackedBlocks, block_layout, held_out_rows,
                           pack_blocks, permutation, split_blocks, write_layout)

CLS, SEP = 2, 3


def stream_and_offsets(lengths, seed=0):
    """Random non-special ids for documents of the given lengths: (ids, offsets)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return rng.integers(5, 1000, size=int(offsets[-1])).astype(np.uint16), offsets


def content(blocks):
    """The non-special tokens of the blocks, in order."""
    flat = blocks.reshape(-1)
    return flat[(flat != CLS) & (flat != SEP)]


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


# --- the streamed layout ------------------------------------------------------------------------------------


def stream_parts(ids, offsets, cuts):
    """The stream `pack_blocks` builds (documents each followed by [SEP], empty ones adding nothing), cut into
    parts at the given stream positions: [(part tokens, positions of the [SEP]s in the part)]."""
    ends = np.unique(offsets[1:] - offsets[0])
    ends = ends[ends > 0]
    stream = np.insert(ids[offsets[0]:offsets[-1]], ends, SEP)
    sep_at = ends + np.arange(len(ends))
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(stream)), len(stream)]
    return [(stream[a:b], sep_at[(sep_at >= a) & (sep_at < b)] - a) for a, b in zip(bounds, bounds[1:])]


def token_stream(parts, directory: Path) -> TokenStream:
    """The parts written as token shards (`train.shard_worker`'s files) and read back as a TokenStream."""
    for k, (tokens, ends) in enumerate(parts):
        tokens.astype(np.uint16).tofile(directory / f"t-{k}.tokens")
        np.save(directory / f"t-{k}.ends.npy", ends.astype(np.int64))
    listed = [{"file": f"t-{k}.tokens", "length": len(t)} for k, (t, _) in enumerate(parts)]
    manifest = {"name": "test", "parts": listed,
                "docs": 0, "ids": int(sum((t != SEP).sum() for t, _ in parts)), "files": 1}
    return TokenStream(directory, manifest, np.uint16)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=40),
    block_size=st.integers(3, 32),
    cuts=st.lists(st.integers(0, 1700), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_the_streamed_layout_gives_the_blocks_of_pack_blocks(tmp_path_factory, lengths, block_size, cuts, seed):
    """However the stream is cut into parts, the blocks read through the layout are pack_blocks' blocks."""
    ids, offsets = stream_and_offsets(lengths, seed)
    parts = stream_parts(ids, offsets, cuts)
    if len(ids) + sum(n > 0 for n in lengths) < block_size - 1:
        with pytest.raises(InputError, match="fewer than one block"):
            write_layout(token_stream(parts, tmp_path_factory.mktemp("layout")), block_size)
        return
    expected = pack_blocks(ids, offsets, block_size, CLS, SEP)
    stream = token_stream(parts, tmp_path_factory.mktemp("layout"))
    write_layout(stream, block_size)
    blocks = PackedBlocks(stream, block_size, CLS, SEP)
    assert len(blocks) == len(expected)
    np.testing.assert_array_equal(blocks[np.arange(len(blocks))], expected)
    np.testing.assert_array_equal(blocks[[2 % len(blocks), 0]], expected[[2 % len(blocks), 0]])
    position = int(np.random.default_rng(seed).integers(0, len(stream)))
    n = min(7, len(stream) - position)
    everything = np.concatenate([t for t, _ in parts])
    np.testing.assert_array_equal(stream.read(position, n), everything[position:position + n])


def test_a_layout_is_written_once_and_whole(tmp_path, monkeypatch):
    ids, offsets = stream_and_offsets([7] * 30)
    stream = token_stream(stream_parts(ids, offsets, [50, 100]), tmp_path)
    write_layout(stream, 10)
    files = sorted(p.name for p in tmp_path.glob("blocks-*"))
    assert files == ["blocks-test-10.closed", "blocks-test-10.starts"] and not list(tmp_path.glob(".*"))
    monkeypatch.setattr(packing, "block_layout", lambda *a: pytest.fail("laid out again"))
    write_layout(stream, 10)  # there already
    (tmp_path / "blocks-test-10.closed").write_bytes(b"\0")  # cut short: not taken for a layout
    with pytest.raises(InputError, match="missing or incomplete"):
        PackedBlocks(stream, 10, CLS, SEP)


def test_the_layout_is_found_part_by_part():
    """Each part's blocks come out as the part is read, so the layout of a large corpus is never in memory."""
    ids, offsets = stream_and_offsets([5] * 20)
    parts = stream_parts(ids, offsets, [40, 80])
    seen = []

    def reading():
        for tokens, ends in parts:
            seen.append(len(tokens))
            yield len(tokens), ends

    layout = block_layout(reading(), 8)
    next(layout)
    assert seen == [40]


# --- split_blocks and the batch order -------------------------------------------------------------------------


def rows(view):
    return view[np.arange(len(view))]


def test_split_is_fixed_disjoint_and_complete():
    blocks = np.arange(1000).reshape(100, 10)
    train, held = split_blocks(blocks, 0.05, seed=3)
    assert isinstance(train, BlocksExcept) and isinstance(held, BlockSubset)
    assert len(train) == 95 and len(held) == 5
    again_train, again_held = split_blocks(blocks, 0.05, seed=3)
    np.testing.assert_array_equal(rows(held), rows(again_held))
    np.testing.assert_array_equal(rows(train), rows(again_train))
    firsts = sorted(r[0] for r in np.concatenate([rows(train), rows(held)]))
    assert firsts == list(range(0, 1000, 10))
    assert (np.diff(rows(train)[:, 0]) > 0).all() and (np.diff(rows(held)[:, 0]) > 0).all()  # original order kept
    _, other = split_blocks(blocks, 0.05, seed=4)
    assert rows(held).tolist() != rows(other).tolist()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), fraction=st.floats(0.001, 0.9), seed=st.integers(0, 2**32 - 1))
def test_the_views_hold_out_the_blocks_an_index_array_would(n, fraction, seed):
    """What a copy of the blocks split by a seeded permutation held (the split before the views), by index
    arithmetic: the held-out blocks, and the training blocks in their order."""
    blocks = np.arange(n * 3).reshape(n, 3)
    n_eval = max(1, round(fraction * n))
    if n - n_eval < 1:
        return
    order = np.random.default_rng(seed).permutation(n)
    train, held = split_blocks(blocks, fraction, seed)
    np.testing.assert_array_equal(rows(held), blocks[np.sort(order[:n_eval])])
    np.testing.assert_array_equal(rows(train), blocks[np.sort(order[n_eval:])])
    picked = np.random.default_rng(0).integers(0, len(train), size=7)
    np.testing.assert_array_equal(train[picked], blocks[np.sort(order[n_eval:])][picked])


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 123457])
@pytest.mark.parametrize("seed", [0, 5, [0, 3]])
def test_the_int32_permutation_is_numpys(n, seed):
    order = permutation(n, seed)
    assert order.dtype == np.int32
    np.testing.assert_array_equal(order, np.random.default_rng(seed).permutation(n))


def test_the_batch_order_is_a_permutation_per_epoch_as_before():
    stream = BlockStream(50, 16, seed=9)
    drawn = np.concatenate([stream.next_batch() for _ in range(4)])  # 64: the first epoch and 14 of the next
    np.testing.assert_array_equal(drawn[:50], np.random.default_rng([9, 0]).permutation(50))
    np.testing.assert_array_equal(drawn[50:], np.random.default_rng([9, 1]).permutation(50)[:14])


def test_split_edge_cases():
    blocks = np.zeros((3, 4))
    assert len(split_blocks(blocks, 0.0, seed=0)[1]) == 0
    assert len(split_blocks(blocks, 0.01, seed=0)[1]) == 1  # at least one held-out block
    assert held_out_rows(3, 0.01, 0).dtype == np.int64
    with pytest.raises(InputError, match="too few to hold out"):
        split_blocks(np.zeros((1, 4)), 0.1, seed=0)
    with pytest.raises(InputError, match="eval fraction"):
        split_blocks(blocks, 1.0, seed=0)
