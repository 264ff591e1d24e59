"""A tokenization worker: `python -m train.shard_worker CONFIG`, started by `train.shards`, one per core.

It imports the standard library, numpy and SentencePiece (torch only for a tokenizer that is not SentencePiece),
reads tasks from stdin and answers on stdout, one JSON object a line:

    argv[1]   {"spm_model": FILE or null, "tokenizer": DIR, "dtype": "uint16", "sep": 3, "out": DIR}
    stdin     a task: {"name": ..., "path": FILE, "start": 0, "end": 16777216 or null}
    stdout    {"read": N} for every N bytes of the file read, then {"done": NAME, "result": {...}}: the task's
              parts and counts, or {"bad": {"line": L, "reason": ...}} when the file cannot be read as text

A task's documents (`train.corpus_reader`) become one stream of token ids, each document's ids followed by [SEP],
written in parts (`PartWriter`); the task's record, `<name>.json`, is written last (`train.shards` reads it).
End of stdin ends the worker. Ctrl-C ends it at once, silently: the parent reports it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

ENCODE_BATCH = 2048  # documents per encode call: big enough for SentencePiece's batch path, small for memory
PART_TOKENS = 8 << 20  # stream tokens a part holds at most (16 MB of uint16): a .gz file is cut into parts
TYPECODES = {"uint16": "H", "int32": "i"}  # array's codes for the stored id types


def temporary(path: Path) -> Path:
    """The name a file is written under until it is complete (then renamed onto `path`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: Path, record: dict) -> None:
    tmp = temporary(path)
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


class PartWriter:
    """The parts of one task: the documents' ids, each document followed by [SEP], appended to `<name>-<k>.tokens`
    (raw ids of `dtype`), and the stream positions of those [SEP]s in `<name>-<k>.ends.npy`; a part is closed at
    PART_TOKENS. A document with no ids adds nothing to the stream (as `train.packing.pack_blocks` skips it)."""

    def __init__(self, out: Path, name: str, dtype: str, sep: int, part_tokens: int = PART_TOKENS):
        self.out, self.name, self.dtype, self.sep, self.part_tokens = Path(out), name, dtype, sep, part_tokens
        self.parts: list[dict] = []
        self.docs = self.ids = 0
        self._file = None

    def _open(self) -> None:
        self._path = self.out / f"{self.name}-{len(self.parts)}.tokens"
        self._file = open(temporary(self._path), "wb")
        self._length, self._docs, self._ends = 0, 0, array("q")

    def add(self, encoded: Iterable[Sequence[int]]) -> None:
        """The ids of a batch of documents, in order."""
        buffer = array(TYPECODES[self.dtype])
        for ids in encoded:
            if self._file is None:
                self._open()
            self.docs += 1
            self._docs += 1
            if not len(ids):
                continue
            buffer.extend(ids)
            buffer.append(self.sep)
            self.ids += len(ids)
            self._ends.append(self._length + len(buffer) - 1)
            if self._length + len(buffer) >= self.part_tokens:
                self._flush(buffer)
                buffer = array(TYPECODES[self.dtype])
                self._close()
        if len(buffer):
            self._flush(buffer)

    def _flush(self, buffer: array) -> None:
        buffer.tofile(self._file)
        self._length += len(buffer)

    def _close(self) -> None:
        """Finish the open part: its [SEP] positions, then the ids under their own name (a part whose documents
        gave no ids at all is dropped)."""
        self._file.close()
        if self._length:
            ends = self._path.with_name(self._path.name.replace(".tokens", ".ends.npy"))
            with open(temporary(ends), "wb") as f:
                np.save(f, np.frombuffer(self._ends, dtype=np.int64))
            os.replace(temporary(ends), ends)
            os.replace(temporary(self._path), self._path)
            self.parts.append({"file": self._path.name, "length": self._length, "docs": self._docs})
        else:
            os.unlink(temporary(self._path))
        self._file = None

    def finish(self) -> dict:
        """Close the last part; the task's record (its parts, in order, and its counts)."""
        if self._file is not None:
            self._close()
        return {"parts": self.parts, "docs": self.docs, "ids": self.ids}

    def abandon(self) -> None:
        """Remove the part being written (the task failed); the parts already closed stay, unreferenced."""
        if self._file is not None:
            self._file.close()
            temporary(self._path).unlink(missing_ok=True)
            self._file = None


def encode_into(writer: PartWriter, texts: Iterable[str], encode: Callable[[list[str]], list]) -> None:
    """Tokenize `texts` in batches of ENCODE_BATCH into `writer`."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == ENCODE_BATCH:
            writer.add(encode(batch))
            batch = []
    if batch:
        writer.add(encode(batch))


def run_task(task: dict, config: dict, encode, on_bytes: Callable[[int], None]) -> dict:
    """One task: the documents of a byte range of a file, tokenized into parts; returns the task's record, which
    is also written to `<name>.json` in the output directory (last: its presence says the task is complete)."""
    from train.corpus_reader import BadText, TextReader, documents

    out = Path(config["out"])
    writer = PartWriter(out, task["name"], config["dtype"], config["sep"])
    reader = TextReader(Path(task["path"]), task["start"], task["end"], on_bytes)
    try:
        encode_into(writer, (text for _, text in documents(reader)), encode)
        record = {**writer.finish(), "lines": reader.lines, "bad": None}
    except BadText as bad:
        writer.abandon()
        record = {"parts": [], "docs": 0, "ids": 0, "lines": reader.lines, "bad": {"line": bad.line,
                                                                                  "reason": bad.reason}}
    write_json(out / f"{task['name']}.json", record)
    return record


def encoder(config: dict) -> Callable[[list[str]], list]:
    """The tokenizer's text -> ids, one thread (the workers are the parallelism): SentencePiece itself when the
    tokenizer is one (its `encode_plain` is this call), else the tokenizer package's."""
    if config.get("spm_model"):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(Path(config["spm_model"]).read_bytes())
        return lambda texts: sp.encode(texts, out_type=int, num_threads=1)
    import tokenizer

    tok = tokenizer.load(config["tokenizer"])
    if hasattr(tok, "num_threads"):
        tok.num_threads = 1
    return tok.encode_plain


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C reaches the process group: end at once
    config = json.loads(sys.argv[1])
    encode = encoder(config)

    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        task = json.loads(line)
        record = run_task(task, config, encode, lambda n: say({"read": n}))
        say({"done": task["name"], "result": record})
    return 0


if __name__ == "__main__":
    sys.exit(main())
