"""`python -m benchmarks.corpus_memory`: the memory of pretraining on corpora of growing size.

For each size it writes a corpus of that many bytes into --dir (files of at most 64 MB, from the built-in text:
the first copy as it is, every later copy with each line rotated at a random point, so that no two copies are
the same text), then runs `python -m train.pretrain --corpus DIR --max-steps 1` on it as a user would, and
measures, every 50 ms:

    peak RSS, training process   the high-water mark of the pretraining process's resident set (VmHWM)
    peak RSS, all processes      the largest sum of the resident sets of it and the processes it starts (the
                                 tokenization workers, SentencePiece's training), read together (and at least
                                 the training process's own peak, which a sample can miss)
    tokenization MB/s            text tokenized per second, as the run reports it
    time to first step           from the start of the command to its first optimiser step, logged

The built-in corpus (no --corpus) is measured first, as the reference the others are compared with. Then the
tokenization of the largest corpus is timed with --workers 1 and --workers 2 (the tokenizer of its run given, a
new cache each), and their ratio reported, with the text each worker tokenizes per CPU-second of its own: on a
machine whose cores are busy with other work the ratio of wall-clock rates says how many cores were free, the
rate per CPU-second what each free core adds. The table goes to stdout and to DIR/results.md, the figures to
DIR/results.json. A corpus already in DIR with the size asked for is used as it is.

    nice -n 10 python -m benchmarks.corpus_memory --sizes 10MB 100MB 1GB --dir runs/corpus-memory
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from minibert.errors import InputError
from tokenizer.command import command_main, opt, parse_options

FILE_BYTES = 64 << 20  # bytes of corpus per file at most
UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
POLL_SECONDS = 0.05


@dataclass
class Options:
    sizes: list[str] = opt(["10MB", "100MB", "1GB"], "corpus sizes to measure, e.g. 10MB 5GB", metavar="SIZE")
    dir: str | None = opt(None, "where the corpora and the runs go; default runs/corpus-memory-<date>-<time>")
    workers: int | None = opt(None, "--workers of the pretraining runs; default: theirs (the number of cores)")
    builtin: bool = opt(True, "measure the built-in corpus first, the reference; then what reading a batch from its "
                              "shards costs a training step, against blocks held in memory")
    ratio: bool = opt(True, "time the tokenization of the largest corpus with 1 and with 2 workers")
    remove_corpora: bool = opt(False, "remove each corpus and its run once measured (disk)")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B)", text.strip().upper())
    if not match:
        raise InputError(f"--sizes {text!r}: give a size like 10MB, 100MB or 1GB")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def write_corpus(directory: Path, size: int) -> Path:
    """`size` bytes of text (whole lines) from the built-in text, in files of at most FILE_BYTES; kept if there."""
    done = directory / "complete"
    if done.is_file() and int(done.read_text()) == size:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    from train.builtin_data import builtin_pretraining_texts

    base = [line + "\n" for line in builtin_pretraining_texts(part="all")]
    written, copy, index = 0, 0, 0
    f = open(directory / f"part-{index:04d}.txt", "w", encoding="utf-8")
    in_file = 0
    while written < size:
        rng = random.Random(copy)
        for line in base:
            if copy:
                cut = rng.randrange(len(line) - 1)  # the line rotated, its newline kept at the end
                line = line[cut:-1] + line[:cut] + "\n"
            n = len(line.encode("utf-8"))
            if written + n > size:
                break
            if in_file + n > FILE_BYTES:
                f.close()
                index, in_file = index + 1, 0
                f = open(directory / f"part-{index:04d}.txt", "w", encoding="utf-8")
            f.write(line)
            written, in_file = written + n, in_file + n
        else:
            copy += 1
            continue
        break
    f.close()
    done.write_text(str(size))
    return directory


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc's children lists."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    corpus: str
    corpus_bytes: int
    peak_rss_mb: float
    peak_rss_all_mb: float
    tokenize_mb_s: float | None
    first_step_s: float | None
    seconds: float
    mb_per_cpu_s: float | None  # text tokenized per CPU-second of a worker process


def measure(name: str, corpus_bytes: int, argv: list[str], out: Path) -> Measured:
    """One `python -m train.pretrain` run, its memory sampled until it ends."""
    shutil.rmtree(out, ignore_errors=True)
    log = open(out.with_suffix(".log"), "w", encoding="utf-8")
    cmd = [sys.executable, "-m", "train.pretrain", *argv, "--out", str(out), "--max-steps", "1", "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    peak = peak_all = 0
    first_step = None
    metrics = out / "metrics.jsonl"
    while proc.poll() is None:
        peak = max(peak, status_kib(proc.pid, "VmHWM"))
        peak_all = max(peak_all, sum(status_kib(p, "VmRSS") for p in process_tree(proc.pid)))
        if first_step is None and metrics.is_file() and '"loss"' in metrics.read_text(encoding="utf-8"):
            first_step = time.perf_counter() - started
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    log.close()
    text = out.with_suffix(".log").read_text(encoding="utf-8")
    if proc.returncode != 0:
        raise InputError(f"{' '.join(cmd)} failed (status {proc.returncode}); see {out.with_suffix('.log')}:\n"
                         f"{text[-2000:]}")
    rate, per_cpu = (re.search(pattern, text) for pattern in (r"\(([\d,.]+) MB/s", r"([\d,.]+) MB per CPU-second"))
    # The sum is sampled, so it can miss the moment the training process peaked: it is at least that peak.
    return Measured(name, corpus_bytes, peak / 1024, max(peak, peak_all) / 1024,
                    float(rate.group(1).replace(",", "")) if rate else None, first_step, seconds,
                    float(per_cpu.group(1).replace(",", "")) if per_cpu else None)


def read_cost(run: Path, repeats: int = 3, n_batches: int = 3000, n_steps: int = 40) -> str:
    """What the streamed data path costs a training step on the built-in corpus (the run in `run`, its tokenizer
    and shards): CPU time of a batch of blocks read from the shards and of one taken from the same blocks copied
    into memory (the path before), interleaved, the best of `repeats`; and of a whole training step (the median)."""
    import numpy as np
    import torch

    from train import pretrain
    from train.device import Dist
    from train.packing import BlockStream, block_batch
    from train.pretrain_data import open_corpus, prepare_data
    from train.pretrain_options import PretrainArgs
    from train.pretrain_state import build_state

    args = PretrainArgs(progress=False)
    data = prepare_data(args, run, open_corpus(args), Dist(), resumed=True)
    in_memory = data.train_blocks[np.arange(len(data.train_blocks))]  # (N, T)
    stream = BlockStream(len(in_memory), args.batch_size, args.seed)
    batches = [stream.next_batch() for _ in range(n_batches)]
    cost = {"shards": [], "memory": []}
    for _ in range(repeats):
        for name, blocks in (("shards", data.train_blocks), ("memory", in_memory)):
            started = time.process_time()
            for idx in batches:
                block_batch(blocks, idx)
            cost[name].append((time.process_time() - started) / n_batches)
    shards, memory = min(cost["shards"]), min(cost["memory"])
    d, device = Dist(), torch.device("cpu")
    state = build_state(args, d, device, run, data, None, [])
    runner = pretrain.runner_for(state.model, args, d, device)
    steps = []
    for _ in range(n_steps):
        started = time.process_time()
        pretrain.train_step(state, runner, data, args, d, device)
        steps.append(time.process_time() - started)
    step = sorted(steps[5:])[len(steps[5:]) // 2]
    return (f"A batch of {args.batch_size} blocks of {args.max_seq_length} read from the shards: {shards * 1e6:,.0f} "
            f"us of CPU, from memory {memory * 1e6:,.0f} us; a training step (tiny preset, the read included) "
            f"{step * 1e3:,.1f} ms: training tokens/s with the shards / in memory = "
            f"{(step - shards + memory) / step:.4f}")


def table(rows: list[Measured]) -> str:
    lines = ["| corpus | peak RSS, training process | peak RSS, all processes | tokenization | time to first step |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        rate = f"{r.tokenize_mb_s:,.1f} MB/s" if r.tokenize_mb_s is not None else "-"
        first = f"{r.first_step_s:,.0f} s" if r.first_step_s is not None else "-"
        lines.append(f"| {r.corpus} | {r.peak_rss_mb:,.0f} MB | {r.peak_rss_all_mb:,.0f} MB | {rate} | {first} |")
    return "\n".join(lines)


def human(size: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if size >= UNITS[unit]:
            return f"{size / UNITS[unit]:g} {unit}"
    return f"{size} B"


def run(o: Options) -> int:
    sizes = sorted(parse_size(s) for s in o.sizes)
    root = Path(o.dir or f"runs/corpus-memory-{datetime.now():%Y%m%d-%H%M%S}")
    root.mkdir(parents=True, exist_ok=True)
    workers = ["--workers", str(o.workers)] if o.workers else []
    rows, cost = [], None
    if o.builtin:
        rows.append(measure("built-in corpus (the reviews, 2.9 MB)", 0, [], root / "run-builtin"))
        print(table(rows), flush=True)
        cost = read_cost(root / "run-builtin")
        print(cost, flush=True)
    for size in sizes:
        corpus = write_corpus(root / f"corpus-{size}", size)
        rows.append(measure(human(size), size, ["--corpus", str(corpus), *workers], root / f"run-{size}"))
        print(table(rows), flush=True)
    ratio, timed = None, []
    if o.ratio and sizes:
        largest, tok = root / f"corpus-{sizes[-1]}", root / f"run-{sizes[-1]}" / "tokenizer"
        timed = [measure(f"{human(sizes[-1])}, {n} worker(s)", sizes[-1],
                         ["--corpus", str(largest), "--tokenizer", str(tok), "--workers", str(n)],
                         root / f"ratio-{n}") for n in (1, 2)]
        ratio = timed[1].tokenize_mb_s / timed[0].tokenize_mb_s
    if o.remove_corpora:
        for size in sizes:
            shutil.rmtree(root / f"corpus-{size}", ignore_errors=True)
            shutil.rmtree(root / f"run-{size}", ignore_errors=True)
    report = table(rows) + (f"\n\n{cost}" if cost else "")
    if ratio is not None:
        one, two = timed
        report += (f"\n\nTokenization of the {human(sizes[-1])} corpus, 2 workers against 1: "
                   f"{two.tokenize_mb_s:,.1f} / "
                   f"{one.tokenize_mb_s:,.1f} MB/s = {ratio:.2f}x; per CPU-second of a worker "
                   f"{two.mb_per_cpu_s:,.1f} and {one.mb_per_cpu_s:,.1f} MB (on {os.cpu_count()} cores, load "
                   f"{os.getloadavg()[0]:.1f} at the end)")
    print("\n" + report)
    (root / "results.md").write_text(report + "\n", encoding="utf-8")
    (root / "results.json").write_text(json.dumps({"rows": [asdict(r) for r in rows], "workers_2_over_1": ratio,
                                                   "workers": [asdict(r) for r in timed] if ratio else []},
                                                  indent=1) + "\n", encoding="utf-8")
    return 0


@command_main
def main(argv: list[str] | None = None) -> int:
    options, _ = parse_options(Options, argv, __doc__.split("\n\n")[0], "python -m benchmarks.corpus_memory")
    for s in options.sizes:
        parse_size(s)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
