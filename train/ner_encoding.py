"""Sentences of labelled words as token windows for a token classifier, and its predictions back as word tags.

Shapes: B batch, T tokens, K tags.

A token classifier reads tokens but is scored on words (a Chinese character, or a word of a CoNLL file). The map
between them is explicit, as Hugging Face's `word_ids()`:

    pieces   = tok.encode_words(words, joiner)        each word tokenized on its own: no token spans two words
    word_ids = [None, 0, 1, 1, 2, ..., None]           which word each token is a piece of ([CLS], [SEP]: None)
    labels   = [-100, y_0, y_1, -100, y_2, ..., -100]  a word's tag on its first piece only; -100 carries no loss

and a prediction comes back per word from its first piece (`word_tags`), so every word gets exactly one tag and
no entity can be split inside a token, whatever the tokenizer merges.

A sentence longer than the model's positions is cut into windows of at most `max_length` tokens ([CLS] and [SEP]
included) between words, never inside one: at the last sentence-ending punctuation that fits (。！？；), else the
last pause (，、：), else the last word that fits. The cut depends on the words alone, never on their tags, and the
windows' predictions are joined back into the whole sentence, which is what is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minibert.heads import IGNORE_INDEX

SENTENCE_ENDS = frozenset("。！？；!?;")
PAUSES = frozenset("，、：,:")


@dataclass
class TokenWindows:
    """Every window of every sentence: token ids ([CLS] pieces [SEP]), unpadded, with the word map and labels.

    `input_ids`, `token_type_ids`, `labels` and `word_ids` hold one list per window; `sentence` and `first_word`
    say which sentence a window is part of and where in it its first word stands."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[np.ndarray]  # per window (T,) int64: a tag id on each word's first piece, IGNORE_INDEX elsewhere
    word_ids: list[list[int | None]]  # per window: the index (within the window) of the word each token belongs to
    sentence: list[int]
    first_word: list[int]
    n_words: list[int]  # words per sentence, to join the windows back
    gold: list[list[str]] | None = None  # each sentence's tags as given, what its predictions are scored against

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def window_cuts(words: Sequence[str], sizes: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """[start, end) word ranges covering `words`, each of at most `budget` tokens (`sizes`: tokens per word), cut
    after the last sentence end, else the last pause, else the last word that fits. A single word longer than
    the budget is a window of its own (its pieces are cut to fit by `encode_sentences`)."""
    cuts = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and used + sizes[end] <= budget:
            used += sizes[end]
            end += 1
        if end == len(words):
            cuts.append((start, end))
            break
        if end == start:  # one word alone exceeds the budget
            end = start + 1
        else:
            for marks in (SENTENCE_ENDS, PAUSES):
                after = [i + 1 for i in range(start, end) if words[i] in marks]
                if after:
                    end = after[-1]
                    break
        cuts.append((start, end))
        start = end
    return cuts


def encode_sentences(tok, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None,
                     label_ids: dict[str, int], max_length: int, joiner: str = "") -> TokenWindows:
    """Token windows for `sentences` (lists of words), with their tags as label ids (`tags` None: labels all
    IGNORE_INDEX, for prediction)."""
    budget = max_length - 2  # [CLS] and [SEP]
    out = TokenWindows([], [], [], [], [], [], [], [list(t) for t in tags] if tags is not None else None)
    flat = [w for words in sentences for w in words]
    pieces_flat = tok.encode_words(flat, joiner) if flat else []
    at = 0
    for s, words in enumerate(sentences):
        pieces = pieces_flat[at : at + len(words)]
        at += len(words)
        out.n_words.append(len(words))
        for start, end in window_cuts(words, [len(p) for p in pieces], budget):
            ids, word_ids, labels = [tok.cls_token_id], [None], [IGNORE_INDEX]
            for w in range(start, end):
                word_pieces = pieces[w][:budget]  # a word longer than a window keeps its first pieces
                ids += word_pieces
                word_ids += [w - start] * len(word_pieces)
                first = label_ids[tags[s][w]] if tags is not None else IGNORE_INDEX
                labels += [first] + [IGNORE_INDEX] * (len(word_pieces) - 1)
            ids.append(tok.sep_token_id)
            word_ids.append(None)
            labels.append(IGNORE_INDEX)
            out.input_ids.append(ids)
            out.token_type_ids.append([0] * len(ids))
            out.labels.append(np.array(labels, dtype=np.int64))
            out.word_ids.append(word_ids)
            out.sentence.append(s)
            out.first_word.append(start)
    return out


def word_logits(window_logits: Sequence[np.ndarray], windows: TokenWindows) -> list[np.ndarray]:
    """Per sentence, (words, K) logits: each word's from its first piece, the windows joined back in order."""
    K = window_logits[0].shape[-1] if len(window_logits) else 0
    out = [np.zeros((n, K), dtype=np.float32) for n in windows.n_words]
    for w, logits in enumerate(window_logits):
        seen: set[int] = set()
        for t, word in enumerate(windows.word_ids[w]):
            if word is not None and word not in seen:  # the word's first piece
                seen.add(word)
                out[windows.sentence[w]][windows.first_word[w] + word] = logits[t]
    return out


def word_tags(window_logits: Sequence[np.ndarray], windows: TokenWindows, label_names: Sequence[str]) -> list[list[str]]:
    """Per sentence, one predicted tag per word: the argmax of its first piece's logits."""
    return [[label_names[k] for k in logits.argmax(axis=-1)] for logits in word_logits(window_logits, windows)]
