"""Fixed-length pretraining blocks over a tokenized corpus, a fixed share held out, and the order of the batches.

The corpus is a stream, its documents each followed by [SEP] (`train.shards.TokenStream`, memory-mapped shards).
A block is [CLS] and the next T - 1 stream tokens, or T - 2 and a closing [SEP] (`pack_blocks` says exactly
when), so the blocks are where each starts in the stream and whether it closes early: `write_layout` walks the
stream once, part by part, and writes the two arrays to the cache (`blocks-<corpus>-<T>.starts`, int64, and
`.closed`, uint8); `PackedBlocks` reads a batch of blocks from them, never the corpus whole. `pack_blocks`, on
ids held in memory, is the definition the streamed layout is tested against, block for block.

The held-out blocks are a seeded choice of round(fraction * N) block indices (`split_blocks`); the training
blocks are the others, found by index arithmetic, never copied. `BlockStream` deals the training blocks out as
batches, one epoch a permutation, its position two integers, so a resumed run draws the same batches.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import numpy as np
import torch

from minibert.errors import InputError

_FILL_ROWS = 16384  # blocks filled per gather in pack_blocks


def pack_blocks(ids: np.ndarray, doc_offsets: np.ndarray, block_size: int, cls_id: int, sep_id: int) -> np.ndarray:
    """Pack documents into blocks of exactly `block_size` tokens, `[CLS] d1 [SEP] d2 [SEP] ... [SEP]`, no padding.

    Greedy: documents are laid end to end, each followed by [SEP], and the stream is cut into blocks. Every
    block begins with [CLS] and ends with [SEP]. A document that does not fit in the room left is split: its
    first part ends the block (followed by a [SEP] closing the block) and the rest begins the next block.

    Exactly, with T = block_size and the stream s = d1 [SEP] d2 [SEP] ...: a block is [CLS] followed by the
    next T - 1 stream tokens if the last of them is a document's [SEP]; otherwise by the next T - 2 stream
    tokens and a closing [SEP]. So every position holds a real token, except in one rare case: when a
    document ends one position before the block end, the block ends `... [SEP] [SEP]` (a block cannot close
    with a one-token-wide room that still needs its own [SEP]).

    Empty documents are skipped. The final stream tokens that do not fill a whole block (fewer than T - 1)
    are dropped rather than padded. Raises InputError when the corpus cannot fill even one block.
    Returns an array (n_blocks, T) of the same integer type as `ids`.
    """
    if block_size < 3:
        raise InputError(f"block size {block_size} is too small; a block needs [CLS], a token and [SEP] (3 or more)")
    doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
    ids = np.asarray(ids[doc_offsets[0] : doc_offsets[-1]])  # the documents are contiguous in the stream
    dtype = ids.dtype if np.issubdtype(ids.dtype, np.integer) else np.dtype(np.int64)
    ends = np.unique(doc_offsets[1:] - doc_offsets[0])  # unique: an empty document adds no boundary
    ends = ends[ends > 0]
    n_tokens = len(ids)

    # The stream d1 [SEP] d2 [SEP] ...: one [SEP] inserted after each document's last token.
    stream = np.insert(ids, ends, sep_id).astype(dtype, copy=False)  # (S,) with S = n_tokens + n_docs
    is_doc_end = np.zeros(len(stream), dtype=bool)  # (S,) whether a stream position is a document's [SEP]
    is_doc_end[ends + np.arange(len(ends))] = True

    # The cut points depend on the data (T - 1 or T - 2 stream tokens per block), so they are found in a loop
    # over blocks (not tokens); each step is a constant amount of work.
    room = block_size - 1  # positions after [CLS]
    block_starts, closed_early = [], []
    position = 0
    while position + room <= len(stream):
        ends_on_doc = bool(is_doc_end[position + room - 1])
        block_starts.append(position)
        closed_early.append(not ends_on_doc)
        position += room if ends_on_doc else room - 1
    if not block_starts:
        raise too_short(n_tokens, block_size)
    starts = np.asarray(block_starts, dtype=np.int64)  # (N,)
    blocks = np.empty((len(starts), block_size), dtype=dtype)  # (N, T)
    blocks[:, 0] = cls_id
    for row in range(0, len(starts), _FILL_ROWS):
        # Gathered in row chunks so the int64 index array stays small next to the blocks themselves.
        chunk = starts[row : row + _FILL_ROWS]
        blocks[row : row + len(chunk), 1:] = stream[chunk[:, None] + np.arange(room)]  # (n, T-1)
    # A block that took only T-2 stream tokens ends with its own [SEP] over the one token it did not take.
    blocks[np.asarray(closed_early, dtype=bool), -1] = sep_id
    return blocks


def too_short(n_ids: int, block_size: int) -> InputError:
    return InputError(f"corpus has {n_ids} tokens, fewer than one block of {block_size}; "
                      "add text or lower --max-seq-length")


def block_layout(parts, block_size: int):
    """Where each block starts in the stream and whether it closes early, part by part: `parts` yields
    (length, positions of the document [SEP]s) of each part of the stream in order; yields (starts, closed) arrays
    of the blocks that start in each part. The greedy rule of `pack_blocks`: a block takes T - 1 stream tokens when
    the last of them ends a document, else T - 2. The tail that fills no block is dropped."""
    room = block_size - 1  # positions after [CLS]
    position = window_start = 0  # the next block's start; where the window of document-end flags begins
    window = bytearray()  # is_doc_end of stream positions window_start, window_start + 1, ...
    for length, doc_ends in parts:
        flags = np.zeros(length, dtype=np.uint8)
        flags[doc_ends] = 1
        window = window[position - window_start:] + flags.tobytes()  # the flags still ahead, then this part's
        window_start = position
        limit = window_start + len(window)
        starts, closed = array("q"), bytearray()
        # The cut points depend on the data, so they are found in a loop over blocks (not tokens).
        while position + room <= limit:
            ends_on_doc = window[position + room - 1 - window_start]
            starts.append(position)
            closed.append(not ends_on_doc)
            position += room if ends_on_doc else room - 1
        yield np.frombuffer(starts, dtype=np.int64), np.frombuffer(closed, dtype=np.uint8)


def layout_paths(stream, block_size: int) -> tuple[Path, Path]:
    stem = stream.directory / f"blocks-{stream.name}-{block_size}"
    return stem.with_suffix(".starts"), stem.with_suffix(".closed")


def write_layout(stream, block_size: int) -> None:
    """The blocks of `stream` (a TokenStream) written to its cache, unless they are there: `.closed`, then
    `.starts`, each under a temporary name renamed when complete. InputError when the corpus fills no block."""
    if block_size < 3:
        raise InputError(f"block size {block_size} is too small; a block needs [CLS], a token and [SEP] (3 or more)")
    starts_path, closed_path = layout_paths(stream, block_size)
    if _layout_size(stream, block_size) is not None:
        return
    tmp = {p: p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (starts_path, closed_path)}
    try:
        with open(tmp[starts_path], "wb") as starts_file, open(tmp[closed_path], "wb") as closed_file:
            parts = ((int(stream.bounds[k + 1] - stream.bounds[k]), stream.ends(k)) for k in range(len(stream.files)))
            for starts, closed in block_layout(parts, block_size):
                starts.tofile(starts_file)
                closed.tofile(closed_file)
        if tmp[starts_path].stat().st_size == 0:
            raise too_short(stream.n_ids, block_size)
        os.replace(tmp[closed_path], closed_path)
        os.replace(tmp[starts_path], starts_path)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def _layout_size(stream, block_size: int) -> int | None:
    """The number of blocks of a complete layout in the cache, else None."""
    starts_path, closed_path = layout_paths(stream, block_size)
    try:
        n, rest = divmod(starts_path.stat().st_size, 8)
        return n if n and not rest and closed_path.stat().st_size == n else None
    except OSError:
        return None


class PackedBlocks:
    """The blocks of a TokenStream, read as they are indexed: `blocks[idx]` for an index array (B,) is the
    (B, T) array `pack_blocks` would have made of the same rows (ids of the stream's type)."""

    def __init__(self, stream, block_size: int, cls_id: int, sep_id: int):
        n = _layout_size(stream, block_size)
        if n is None:
            raise InputError(f"{layout_paths(stream, block_size)[0]}: the block layout is missing or incomplete; "
                             "run the command again")
        self.stream, self.block_size, self.cls_id, self.sep_id, self.n = stream, block_size, cls_id, sep_id, n
        self.starts_path, self.closed_path = layout_paths(stream, block_size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)  # (B,)
        starts = np.memmap(self.starts_path, dtype=np.int64, mode="r")[idx]  # (B,) fancy indexing copies
        closed = np.memmap(self.closed_path, dtype=np.uint8, mode="r")[idx].astype(bool)  # (B,)
        rows = np.empty((len(idx), self.block_size), dtype=self.stream.dtype)  # (B, T)
        rows[:, 0] = self.cls_id
        rows[:, 1:] = self.stream.rows(starts, self.block_size - 1)  # (B, T - 1)
        rows[closed, -1] = self.sep_id  # a block that took T - 2 stream tokens closes with its own [SEP]
        return rows


class BlockSubset:
    """The blocks of `blocks` at the sorted indices `rows`, in that order: the held-out blocks."""

    def __init__(self, blocks, rows: np.ndarray):
        self.blocks, self.rows = blocks, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        return self.blocks[self.rows[np.asarray(idx)]]


class BlocksExcept:
    """The blocks of `blocks` other than those at the sorted indices `rows`, in their order: the training blocks.
    The k-th of them is block k + j, j the number of held-out indices h_i with h_i - i <= k (h_i - i counts
    the training blocks before h_i, and never decreases), so no index array of the training blocks is kept."""

    def __init__(self, blocks, rows: np.ndarray):
        self.blocks, self.n = blocks, len(blocks) - len(rows)
        self.shifted = rows - np.arange(len(rows))  # (H,) training blocks before each held-out one

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> np.ndarray:
        k = np.asarray(idx, dtype=np.int64)
        return self.blocks[k + np.searchsorted(self.shifted, k, side="right")]


def permutation(n: int, seed) -> np.ndarray:
    """`np.random.default_rng(seed).permutation(n)`, the same numbers, as int32 when they fit: half the memory
    for a corpus of millions of blocks (the shuffle draws do not depend on the element type)."""
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    np.random.default_rng(seed).shuffle(order)
    return order


def held_out_rows(n: int, eval_fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of round(eval_fraction * n) blocks (at least one when eval_fraction > 0) chosen at random
    by seed: the first ones of a seeded permutation, so they depend only on n, eval_fraction and seed."""
    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"eval fraction {eval_fraction} must be at least 0 and below 1")
    n_eval = max(1, round(eval_fraction * n)) if eval_fraction > 0 else 0
    if n - n_eval < 1:
        raise InputError(
            f"the corpus gives only {n} block(s), too few to hold out {n_eval} for evaluation; "
            "add text, lower --max-seq-length or lower the eval fraction"
        )
    return np.sort(permutation(n, seed)[:n_eval]).astype(np.int64)


def split_blocks(blocks, eval_fraction: float, seed: int) -> tuple[BlocksExcept, BlockSubset]:
    """(training blocks, held-out blocks) of `blocks` (PackedBlocks, or an array of rows), both in the blocks'
    order, as views: `held_out_rows` are held out, a restarted run holds out the same ones."""
    rows = held_out_rows(len(blocks), eval_fraction, seed)
    return BlocksExcept(blocks, rows), BlockSubset(blocks, rows)


class BlockStream:
    """Global batches of block indices in a seeded order, epoch after epoch; its position is two integers."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_blocks, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return permutation(self.n, [self.seed, self.epoch])

    def next_batch(self) -> np.ndarray:
        chunks, taken = [], 0  # a batch may straddle two epochs: the end of one order, the start of the next
        while taken < self.batch_size:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            k = min(self.batch_size - taken, self.n - self.pos)
            chunks.append(self._order[self.pos : self.pos + k])
            self.pos, taken = self.pos + k, taken + k
        return np.concatenate(chunks)  # (B,)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._permutation()


def block_batch(blocks, idx: np.ndarray) -> torch.Tensor:
    """Blocks (an array of rows, or a view of them) at `idx` (B,), as int64 token ids."""
    return torch.from_numpy(blocks[idx].astype(np.int64))  # (B, T)
