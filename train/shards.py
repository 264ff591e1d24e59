"""Token shards: a corpus tokenized in parallel into files on disk, and read back as one stream through numpy.memmap.

In the cache directory (the run's data/, or --data-cache), one directory per tokenizer:

    tokens-<K>/                       K: a hash of the tokenizer's files and the stored id type
        <task>.json                   a finished task: its parts in order and its counts, or why its file is bad
        <task>-<k>.tokens             part k of the task: its documents as one stream, each document's ids followed
                                      by [SEP] (raw ids, uint16, or int32 for a vocabulary over 65,536)
        <task>-<k>.ends.npy           the positions of those [SEP]s in the part (int64)
        corpus-<C>.json               a finished corpus: its parts in order, its counts, the files it skipped
        blocks-<C>-<T>.starts/.closed the layout of its blocks of T tokens (`train.packing`)

A task is a byte range of a file (about CHUNK_BYTES, cut after a line end), a whole .gz file (gzip cannot start in
the middle), or the in-memory built-in text. Its name is a hash of the file's path, size and modification time and
the range (of the texts themselves, for the built-in text), so a task's shards stay valid whatever other files come
and go, and an unchanged file is never tokenized twice; C hashes the tasks in order. Worker processes
(`train.shard_worker`, --workers of them) do the tasks; every file is written under a temporary name and renamed
when complete, the task's .json last, so a killed run leaves no shard that looks complete but is not, and the next
run does only the tasks that have no .json.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minibert.errors import InputError
from minibert.rundir import process_alive
from tokenizer.command import Stopped
from train.corpus_files import BLANK_FILE, EMPTY_FILE, BadFile, BadFiles
from train.corpus_reader import is_gzip
from train.shard_worker import PartWriter, encode_into, write_json

FORMAT = 2  # of the shards; a new one is never read as an old one
CHUNK_BYTES = 16 << 20  # bytes of text a task reads: 64 tasks a gigabyte, for the workers to share
REPO = Path(__file__).resolve().parent.parent


def default_workers() -> int:
    """The number of cores this process may run on (--workers' default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest stored id type: uint16 holds ids below 65536, halving the shards against int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def digest(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=10).hexdigest()


def tokenizer_key(tok, tok_dir: Path) -> str:
    """What the shards depend on besides the text: the tokenizer's hash (of the files it is saved as: its pieces,
    its normalisation, its settings), the stored id type and the [SEP] id."""
    files = hashlib.sha256()
    for path in sorted(p for p in Path(tok_dir).iterdir() if p.is_file()):
        data = path.read_bytes()
        files.update(f"{path.name}\0{len(data)}\0".encode())
        files.update(data)
    return digest(FORMAT, files.hexdigest(), id_dtype(tok.vocab_size).name, tok.sep_token_id)


@dataclass
class Task:
    """A piece of the corpus one worker tokenizes: bytes [start, end) of `path` (end None: to the end), or the
    in-memory texts (path None)."""

    name: str
    path: Path | None
    start: int = 0
    end: int | None = None
    size: int = 0  # bytes of the file it reads, for the progress bar


def line_end_after(f, position: int, size: int) -> int:
    """The offset just after the first line end at or after `position` (the file's size if there is none)."""
    f.seek(position)
    while position < size:
        block = f.read(1 << 16)
        if not block:
            break
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return size


def file_tasks(path: Path, chunk_bytes: int = 0) -> list[Task]:
    """A file as tasks: byte ranges of about `chunk_bytes` (CHUNK_BYTES by default) cut after line ends, or one
    task for a .gz file; none for an empty file. Named by the file's path, size, modification time and range."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if stat.st_size == 0:
        return []
    if is_gzip(path):
        return [Task(digest(*identity, 0, None), path, 0, None, stat.st_size)]
    tasks, start = [], 0
    with open(path, "rb") as f:
        while start < stat.st_size:
            end = line_end_after(f, start + chunk_bytes - 1, stat.st_size) if start + chunk_bytes < stat.st_size \
                else stat.st_size
            tasks.append(Task(digest(*identity, start, end), path, start, end, end - start))
            start = end
    return tasks


def texts_task(texts: list[str]) -> Task:
    """The in-memory texts as one task, named by a hash of the texts themselves, in order."""
    h = hashlib.blake2b(digest_size=10)
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # ["ab", "c"] and ["a", "bc"] differ
        h.update(data)
    return Task(f"texts-{h.hexdigest()}", None, size=sum(len(t) for t in texts))


# ----------------------------------------------------------------------------------------------------------------
# the records of finished tasks


def read_record(directory: Path, name: str, itemsize: int) -> dict | None:
    """A task's record if the task is complete: its .json readable and every part it lists there, of its length."""
    try:
        record = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
        for part in record["parts"]:
            ends = directory / part["file"].replace(".tokens", ".ends.npy")
            if (directory / part["file"]).stat().st_size != part["length"] * itemsize or not ends.is_file():
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def remove_dead_leftovers(directory: Path) -> None:
    """The temporary files (`.NAME.tmp-PID`) of writers that are no longer running: a killed run's, never those
    of a run writing the same shared cache now."""
    for p in directory.glob(".*.tmp-*"):
        pid = p.name.rpartition(".tmp-")[2]
        if not pid.isdigit() or not process_alive(int(pid)):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# the workers


@dataclass
class Worker:
    proc: subprocess.Popen
    errors: object  # the file its stderr goes to (a pipe could fill and stall it), read if it dies
    task: Task | None = None
    buffer: bytes = b""


@dataclass
class Pool:
    """Worker processes (`train.shard_worker`) doing tasks one at a time each, until none is left; `records` by
    task name, `progress` told of the bytes read. On any exception, the workers are killed and their temporary
    files removed before it propagates."""

    config: dict
    n: int
    progress: tqdm
    records: dict = field(default_factory=dict)
    cpu_seconds: float = 0.0  # the workers' own, user and system
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector, repr=False)

    def run(self, tasks: list[Task], stop_at_bad: bool) -> dict[str, dict]:
        """Do `tasks` (in order); with `stop_at_bad`, none is started after one finds its file bad."""
        queue = list(reversed(tasks))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "train.shard_worker", json.dumps(self.config)]
        workers = []
        try:
            for _ in range(min(self.n, len(tasks))):
                errors = tempfile.TemporaryFile()
                workers.append(Worker(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                       stderr=errors, env=env), errors))
            for w in workers:
                self.selector.register(w.proc.stdout, selectors.EVENT_READ, w)
                self._give(w, queue)
            while any(w.task is not None for w in workers):
                for key, _ in self.selector.select():
                    bad = self._read(key.data)
                    if bad and stop_at_bad:
                        queue.clear()
                    if key.data.task is None:
                        self._give(key.data, queue)
            for w in workers:
                self._reap(w)
        finally:
            self.selector.close()
            self._end(workers)
        return self.records

    def _give(self, w: Worker, queue: list[Task]) -> None:
        """The next task to an idle worker; none left: its stdin closed, so that it ends, and no longer listened to."""
        if not queue:
            self.selector.unregister(w.proc.stdout)
            w.proc.stdin.close()
            return
        w.task = queue.pop()
        try:
            w.proc.stdin.write((json.dumps({"name": w.task.name, "path": str(w.task.path), "start": w.task.start,
                                            "end": w.task.end}) + "\n").encode())
            w.proc.stdin.flush()
        except BrokenPipeError:  # it ended before its task: its status and message say why
            self._died(w)

    def _read(self, w: Worker) -> bool:
        """What a worker said; True when it finished a task that found its file bad."""
        data = os.read(w.proc.stdout.fileno(), 1 << 16)
        if not data:
            self._died(w)
        w.buffer += data
        *lines, w.buffer = w.buffer.split(b"\n")
        bad = False
        for line in lines:
            message = json.loads(line)
            if "read" in message:
                self.progress.update(message["read"])
            else:
                self.records[message["done"]] = message["result"]
                bad = bad or message["result"]["bad"] is not None
                w.task = None
        return bad

    def _reap(self, w: Worker) -> None:
        """Wait for a worker that ended, counting its CPU time."""
        _, status, usage = os.wait4(w.proc.pid, 0)
        w.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds += usage.ru_utime + usage.ru_stime

    def _died(self, w: Worker) -> None:
        """A worker that ended in the middle of a task: a signal (Stopped, as for the command), or a failure."""
        code = w.proc.wait()
        w.errors.seek(0)
        message = w.errors.read().decode("utf-8", errors="replace").strip()
        if -code in (signal.SIGINT, signal.SIGTERM):
            raise Stopped(-code)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with status {code}"
        raise InputError(f"a tokenization worker process {how} while reading {w.task.path}"
                         f"{': ' + message.splitlines()[-1] if message else ''}; if it ran out of memory, give "
                         "fewer --workers")

    def _end(self, workers: list[Worker]) -> None:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()
            for stream in (w.proc.stdin, w.proc.stdout, w.errors):
                if not stream.closed:
                    stream.close()
            for p in Path(self.config["out"]).glob(f".*.tmp-{w.proc.pid}"):
                p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# the stream


class TokenStream:
    """A tokenized corpus as one stream of token ids, its documents each followed by [SEP], over the parts in
    order. A read maps the part's file for the read and unmaps it after, so the pages read do not stay in the
    process's memory."""

    def __init__(self, directory: Path, manifest: dict, dtype: np.dtype):
        self.directory, self.dtype = Path(directory), np.dtype(dtype)
        self.name = manifest["name"]
        self.files = [p["file"] for p in manifest["parts"]]
        self.bounds = np.zeros(len(self.files) + 1, dtype=np.int64)  # (P + 1,) where each part starts
        np.cumsum([p["length"] for p in manifest["parts"]], out=self.bounds[1:])
        self.n_docs, self.n_ids, self.n_files = manifest["docs"], manifest["ids"], manifest["files"]

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def part(self, k: int) -> np.memmap:
        return np.memmap(self.directory / self.files[k], dtype=self.dtype, mode="r")

    def ends(self, k: int) -> np.ndarray:
        """The positions of the [SEP]s that end documents in part k, within the part."""
        return np.load(self.directory / self.files[k].replace(".tokens", ".ends.npy"))

    def rows(self, starts: np.ndarray, n: int) -> np.ndarray:
        """(B, n): stream tokens [s, s + n) for each s of `starts` (B,). Each part the rows lie in is mapped once
        for all of them (a memory map per batch, not per row); a row across parts is read piece by piece."""
        starts = np.asarray(starts, dtype=np.int64)  # (B,)
        out = np.empty((len(starts), n), dtype=self.dtype)  # (B, n)
        first = np.searchsorted(self.bounds, starts, side="right") - 1  # (B,) the part each row starts in
        inside = first == np.searchsorted(self.bounds, starts + n - 1, side="right") - 1  # (B,) and ends in
        for k in np.unique(first[inside]).tolist():
            rows = np.flatnonzero(inside & (first == k))
            part = self.part(k)
            out[rows] = part[(starts[rows] - self.bounds[k])[:, None] + np.arange(n)]  # (m, n) gathered
            del part  # unmapped
        for r in np.flatnonzero(~inside).tolist():
            out[r] = self.read(int(starts[r]), n)
        return out

    def read(self, position: int, n: int) -> np.ndarray:
        """Stream tokens [position, position + n), across parts as need be."""
        k = int(np.searchsorted(self.bounds, position, side="right")) - 1
        pieces = []
        while n > 0:
            offset = position - int(self.bounds[k])
            take = min(n, int(self.bounds[k + 1]) - position)
            mapped = np.memmap(self.directory / self.files[k], dtype=self.dtype, mode="r",
                               offset=offset * self.dtype.itemsize, shape=(take,))
            pieces.append(np.array(mapped))
            del mapped  # unmapped
            position, n, k = position + take, n - take, k + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


# ----------------------------------------------------------------------------------------------------------------
# a corpus, tokenized


@dataclass
class Tokenization:
    """How to tokenize: the tokenizer (and, for the workers, its SentencePiece model file or directory), where the
    shards go, how many workers, what to do with bad files, whether to show progress and what to print."""

    tok: object
    tok_dir: Path
    cache: Path
    workers: int
    bad: BadFiles
    progress: bool = False
    log: object = print
    own_cache: bool = False  # the cache is the run's own data/, which holds the shards of its corpus alone

    @cached_property
    def key(self) -> str:
        return tokenizer_key(self.tok, self.tok_dir)

    @property
    def directory(self) -> Path:
        return self.cache / f"tokens-{self.key}"

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(self.tok.vocab_size)

    def worker_config(self) -> dict:
        spm_model = self.tok_dir / "spm.model"
        return {"spm_model": str(spm_model) if self.tok.kind == "sentencepiece" and spm_model.is_file() else None,
                "tokenizer": str(self.tok_dir), "dtype": self.dtype.name, "sep": self.tok.sep_token_id,
                "out": str(self.directory)}


def corpus_name(key: str, plan: list[tuple[Path | None, list[Task]]]) -> str:
    return digest(key, [[t.name for t in tasks] or [str(path)] for path, tasks in plan])


def load_manifest(t: Tokenization, name: str) -> TokenStream | None:
    """The finished corpus `name`, if its manifest is there and every part it lists is whole; its skipped files
    go to the bad-file policy again (warned once more, or the first one stops the run)."""
    try:
        manifest = json.loads((t.directory / f"corpus-{name}.json").read_text(encoding="utf-8"))
        parts_whole = all((t.directory / p["file"]).stat().st_size == p["length"] * t.dtype.itemsize
                          for p in manifest["parts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not parts_whole:
        return None
    for path, reason, line in manifest["skipped"]:
        t.bad.found(BadFile(Path(path), reason, line))
    return TokenStream(t.directory, manifest, t.dtype)


def file_verdict(path: Path, tasks: list[Task], records: dict[str, dict]) -> BadFile | None:
    """Whether a file is bad, from its tasks' records: the first task that found it bad (its line counted from the
    file's start), or none that found a document in it."""
    if not tasks:
        return BadFile(path, EMPTY_FILE)
    lines_before = 0
    for task in tasks:
        record = records[task.name]
        if record["bad"] is not None:
            line = record["bad"]["line"]
            return BadFile(path, record["bad"]["reason"], None if line is None else lines_before + line)
        lines_before += record["lines"]
    if not any(records[task.name]["docs"] for task in tasks):
        return BadFile(path, BLANK_FILE)
    return None


def assemble(t: Tokenization, plan: list[tuple[Path, list[Task]]], records: dict[str, dict]) -> dict:
    """The manifest of the corpus: the parts of its readable files in order, its counts, the files skipped. Files
    are judged in order, so that --bad-files stop names the first bad one."""
    parts, skipped, docs, ids = [], [], 0, 0
    for path, tasks in plan:
        verdict = t.bad.skipped.get(path) or file_verdict(path, tasks, records)
        if verdict is not None:
            t.bad.found(verdict)  # stops, or skips with a warning (once)
            skipped.append((str(path), verdict.reason, verdict.line))
            continue
        for task in tasks:
            parts.extend(records[task.name]["parts"])
            docs, ids = docs + records[task.name]["docs"], ids + records[task.name]["ids"]
    if not parts:
        raise InputError("no corpus file could be read as text; give UTF-8 text or JSONL files")
    return {"parts": parts, "docs": docs, "ids": ids, "files": len(plan) - len(skipped), "skipped": skipped}


def missing(t: Tokenization) -> InputError:
    return InputError(f"{t.directory}: the tokenized corpus is missing; run the command again")


def tokenize_files(t: Tokenization, files: list[Path], build: bool = True) -> TokenStream:
    """The corpus files as a TokenStream: the finished corpus if it is cached, else (with `build`) its tasks done
    (those not done yet) by the workers, the bad files dealt with in order, and the manifest written."""
    plan = [(path, file_tasks(path)) for path in files]
    name = corpus_name(t.key, plan)
    if (cached := load_manifest(t, name)) is not None:
        if build:
            t.log(f"tokenized corpus found in {t.directory} ({cached.n_docs:,} texts, {cached.n_ids:,} tokens)")
        return cached
    if not build:
        raise missing(t)
    t.directory.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(t.directory)
    itemsize = t.dtype.itemsize
    records = {task.name: r for _, tasks in plan for task in tasks
               if (r := read_record(t.directory, task.name, itemsize)) is not None}
    todo = [task for path, tasks in plan if path not in t.bad for task in tasks if task.name not in records]
    if todo:
        records.update(run_workers(t, todo))
    manifest = {"name": name, **assemble(t, plan, records)}
    write_json(t.directory / f"corpus-{name}.json", manifest)
    prune(t, name, {task.name for _, tasks in plan for task in tasks})
    return TokenStream(t.directory, manifest, t.dtype)


def run_workers(t: Tokenization, todo: list[Task]) -> dict[str, dict]:
    """`todo` done by up to --workers worker processes, with a progress bar in bytes; says how fast it went."""
    total = sum(task.size for task in todo)
    started = time.perf_counter()
    n = min(t.workers, len(todo))
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"tokenizing ({n} worker{'s' * (n > 1)})",
              disable=not t.progress, dynamic_ncols=True) as bar:
        pool = Pool(t.worker_config(), t.workers, bar)
        records = pool.run(todo, stop_at_bad=t.bad.policy == "stop")
    seconds = time.perf_counter() - started
    done = [task for task in todo if task.name in records]
    megabytes = sum(task.size for task in done) / 1e6
    # MB per CPU-second is what each core adds: the rate N free cores reach is about N times it
    t.log(f"tokenized {megabytes:,.1f} MB of text in {seconds:.1f} s ({megabytes / max(seconds, 1e-9):,.1f} MB/s, "
          f"{n} worker process{'es' * (n > 1)}, {megabytes / max(pool.cpu_seconds, 1e-9):,.1f} MB per CPU-second "
          f"of a worker): {sum(records[x.name]['docs'] for x in done):,} texts, "
          f"{sum(records[x.name]['ids'] for x in done):,} tokens")
    return records


def tokenize_texts(t: Tokenization, texts: list[str], build: bool = True) -> TokenStream:
    """In-memory texts (the built-in corpus) as a TokenStream, tokenized in this process into one task's parts;
    each text is a document as it is (the built-in texts are stripped and non-blank already)."""
    task = texts_task(texts)
    name = corpus_name(t.key, [(None, [task])])
    if (cached := load_manifest(t, name)) is not None:
        return cached
    if not build:
        raise missing(t)
    t.directory.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(t.directory)
    record = read_record(t.directory, task.name, t.dtype.itemsize)
    if record is None:
        writer = PartWriter(t.directory, task.name, t.dtype.name, t.tok.sep_token_id)
        try:
            encode_into(writer, texts, t.tok.encode_plain)
            record = {**writer.finish(), "lines": len(texts), "bad": None}
        finally:
            writer.abandon()
        write_json(t.directory / f"{task.name}.json", record)
    manifest = {"name": name, "parts": record["parts"], "docs": record["docs"], "ids": record["ids"], "files": 0,
                "skipped": []}
    write_json(t.directory / f"corpus-{name}.json", manifest)
    prune(t, name, {task.name})
    return TokenStream(t.directory, manifest, t.dtype)


def prune(t: Tokenization, corpus: str, tasks: set[str]) -> None:
    """In the run's own cache only (never --data-cache, which other runs share): remove what is not the corpus
    just tokenized (the shards of files since changed, those of another tokenizer, an older cache's files), so
    that the run's data/ holds one corpus."""
    if not t.own_cache:
        return
    for p in t.cache.iterdir():
        if p != t.directory:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in t.directory.iterdir():
        name = p.name
        ours = (name.startswith((f"corpus-{corpus}.", f"blocks-{corpus}-", ".")) or
                name.partition(".")[0].rpartition("-")[0] in tasks or name.partition(".")[0] in tasks)
        if not ours:
            p.unlink()
