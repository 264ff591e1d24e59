"""Turn texts into fixed-length pretraining blocks: tokenize once into a cache, pack, hold out an eval slice.

Cache layout, in the directory `cache_path`:
    ids.npy            all token ids of all documents, concatenated: shape (n_tokens,), uint16 or int32
    offsets.npy        document boundaries: document i is ids[offsets[i]:offsets[i+1]]; shape (n_docs + 1,), int64
    fingerprint.json   what the cache was built from: a hash of the texts and the tokenizer's fingerprint
The offsets are the document separator: the flat id stream holds no separator token, so no id value is reserved.
`BlockStream` then deals the training blocks out as batches, one epoch a permutation, resumable exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from minibert.errors import InputError

_FORMAT_VERSION = 1
_ENCODE_BATCH = 2048  # texts per encode_plain call: big enough for the C++ batch path, small enough for memory
_FILL_ROWS = 16384  # blocks filled per gather in pack_blocks


class TokenizedCorpus(NamedTuple):
    """A tokenized corpus: the flat id stream and the document offsets into it (see the module docstring)."""

    ids: np.ndarray  # (n_tokens,)
    offsets: np.ndarray  # (n_docs + 1,)


def texts_fingerprint(texts: Sequence[str]) -> str:
    """A hash of the exact texts, in order: BLAKE2b over (length, UTF-8 bytes) of each text."""
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        data = text.encode("utf-8")
        # The length prefix makes ["ab", "c"] and ["a", "bc"] hash differently.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _id_dtype(vocab_size: int) -> np.dtype:
    """The smallest stored id type: uint16 holds ids below 65536, halving the cache against int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def _save_atomic(path: Path, write) -> None:
    """Write a file through a temporary name in the same directory, then rename it into place.

    A crash mid-write leaves the old file (or none), never a truncated one.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_cache(cache_dir: Path, fingerprint: dict) -> TokenizedCorpus | None:
    """The cached corpus if the cache was built from exactly this fingerprint, else None."""
    try:
        stored = json.loads((cache_dir / "fingerprint.json").read_text(encoding="utf-8"))
        if stored != fingerprint:
            return None
        ids = np.load(cache_dir / "ids.npy", mmap_mode="r")
        offsets = np.load(cache_dir / "offsets.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None  # absent or unreadable: rebuild
    if offsets.shape != (fingerprint["n_docs"] + 1,) or ids.shape != (int(offsets[-1]),):
        return None
    return TokenizedCorpus(ids, offsets)


def tokenize_to_cache(
    texts: Sequence[str], tokenizer, cache_path: str | Path, *, tokenizer_fingerprint: str
) -> TokenizedCorpus:
    """Tokenize texts (without special tokens) into a cache directory, or load it if already built.

    The cache is reused only when it was built from the same texts (by hash) and the same tokenizer fingerprint;
    otherwise it is rebuilt. Files are written atomically, the fingerprint last, so an interrupted build is
    never mistaken for a finished one. The arrays come back memory-mapped read-only.
    """
    cache_dir = Path(cache_path)
    dtype = _id_dtype(tokenizer.vocab_size)
    fingerprint = {
        "format": _FORMAT_VERSION,
        "texts": texts_fingerprint(texts),
        "n_docs": len(texts),
        "tokenizer": tokenizer_fingerprint,
        "dtype": dtype.name,
    }
    cached = _load_cache(cache_dir, fingerprint)
    if cached is not None:
        return cached

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the new fingerprint lands, the directory holds no valid cache.
    (cache_dir / "fingerprint.json").unlink(missing_ok=True)

    chunks: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    show = len(texts) >= 100_000 and sys.stderr.isatty()
    with tqdm(total=len(texts), unit="text", desc="tokenizing", disable=not show) as progress:
        for start in range(0, len(texts), _ENCODE_BATCH):
            batch = list(texts[start : start + _ENCODE_BATCH])
            encoded = tokenizer.encode_plain(batch)
            for i, doc in enumerate(encoded):
                lengths[start + i] = len(doc)
                chunks.append(np.asarray(doc, dtype=dtype))
            progress.update(len(batch))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)  # (n_tokens,)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)  # (n_docs + 1,)
    np.cumsum(lengths, out=offsets[1:])

    _save_atomic(cache_dir / "ids.npy", lambda f: np.save(f, ids))
    _save_atomic(cache_dir / "offsets.npy", lambda f: np.save(f, offsets))
    _save_atomic(cache_dir / "fingerprint.json", lambda f: f.write(json.dumps(fingerprint, indent=1).encode()))
    return _load_cache(cache_dir, fingerprint) or TokenizedCorpus(ids, offsets)


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
        raise InputError(
            f"corpus has {n_tokens} tokens, fewer than one block of {block_size}; "
            "add text or lower --max-seq-length"
        )
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


def split_blocks(blocks: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out round(eval_fraction * N) blocks (at least one when eval_fraction > 0) chosen at random by seed.

    The choice depends only on N, eval_fraction and seed, so a restarted run holds out the same blocks. Both
    parts keep the blocks' original order. Returns (train_blocks, eval_blocks).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"eval fraction {eval_fraction} must be at least 0 and below 1")
    n = len(blocks)
    n_eval = max(1, round(eval_fraction * n)) if eval_fraction > 0 else 0
    if n - n_eval < 1:
        raise InputError(
            f"the corpus gives only {n} block(s), too few to hold out {n_eval} for evaluation; "
            "add text, lower --max-seq-length or lower the eval fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    eval_index = np.sort(order[:n_eval])
    train_index = np.sort(order[n_eval:])
    return blocks[train_index], blocks[eval_index]


class BlockStream:
    """Global batches of block indices in a seeded order, epoch after epoch; its position is two integers."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_blocks, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

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


def block_batch(blocks: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(blocks[idx].astype(np.int64))  # (B, T)
