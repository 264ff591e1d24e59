"""Pretraining on a streamed corpus: the token shards, the workers that write them, their cache and its resumption,
bad files, and, first, that the streamed path gives the blocks, batches and losses of the path it replaced."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minibert.errors import InputError
from tokenizer import SentencePieceTokenizer
from train import pretrain, pretrain_data, shards
from train.builtin_data import builtin_pretraining_texts, people_daily_lines
from train.corpus_files import BadFiles, read_texts
from train.device import Dist
from train.packing import BlockStream, pack_blocks
from train.pretrain_data import Data
from train.pretrain_options import PretrainArgs
from train.shards import Tokenization, read_record, tokenize_files

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "hidden_size=32", "num_attention_heads=2", "intermediate_size=64", "num_hidden_layers=2",
        "--no-progress", "--eval-batches", "2"]
TIMING = ("tokens_per_s", "time_s")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A character tokenizer trained on People's Daily lines (fast to train, and it covers the reviews too)."""
    root = tmp_path_factory.mktemp("tok")
    SentencePieceTokenizer.train(people_daily_lines()[:3000], 2000, root / "tok", model_type="char", verbose=False)
    return root / "tok"


def write_corpus(root: Path, lines: list[str]) -> Path:
    """`lines` as a directory of every kind of corpus file: text, JSONL, gzipped text, and a text file below."""
    root.mkdir(parents=True, exist_ok=True)
    quarter = len(lines) // 4
    (root / "a.txt").write_text("\n".join(lines[:quarter]) + "\n", encoding="utf-8")
    (root / "b.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                          for t in lines[quarter:2 * quarter]), encoding="utf-8")
    with gzip.open(root / "c.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(lines[2 * quarter:3 * quarter]))
    (root / "d").mkdir(exist_ok=True)
    (root / "d" / "e.txt").write_text("\n".join(lines[3 * quarter:]) + "\n", encoding="utf-8")
    return root


def todays_blocks(texts: list[str], tok, args: PretrainArgs) -> tuple[np.ndarray, np.ndarray]:
    """The path the shards replaced, as it was: every text encoded in memory into one id array and document
    offsets, all blocks packed by `pack_blocks`, and the held-out blocks the first of a seeded permutation of
    them, both parts copied out in their order."""
    encoded = tok.encode_plain(texts)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    ids = np.concatenate([np.asarray(e, dtype=np.uint16) for e in encoded])
    blocks = pack_blocks(ids, offsets, args.max_seq_length, tok.cls_token_id, tok.sep_token_id)
    n_eval = max(1, round(args.eval_fraction * len(blocks)))
    order = np.random.default_rng(args.seed).permutation(len(blocks))
    return blocks[np.sort(order[n_eval:])], blocks[np.sort(order[:n_eval])]


def todays_texts(args: PretrainArgs) -> list[str]:
    return read_texts(args.corpus) if args.corpus else builtin_pretraining_texts(part=args.builtin_corpus or "reviews")


def metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("corpus", ["builtin", "files"])
def test_the_streamed_path_gives_todays_blocks_batches_and_losses(tmp_path, tok_dir, monkeypatch, corpus):
    """Bit for bit, on the built-in corpus and on a corpus of files that fits in memory (cut into many tasks for
    two workers): the same training and held-out blocks, the same batches, the same losses as the path before."""
    import tokenizer

    monkeypatch.setattr(shards, "CHUNK_BYTES", 50_000)
    paths = [] if corpus == "builtin" else ["--corpus", str(write_corpus(tmp_path / "c", people_daily_lines()[:4000]))]
    argv = [*paths, "--tokenizer", str(tok_dir), "--workers", "2", "--max-seq-length", "64"]
    args = pretrain.parse_options(PretrainArgs, argv, "", "p")[0]
    tok = tokenizer.load(tok_dir)
    train_then, held_then = todays_blocks(todays_texts(args), tok, args)

    out = tmp_path / "out"
    shutil.copytree(tok_dir, out / "tokenizer")
    data = pretrain_data.prepare_data(args, out, pretrain_data.open_corpus(args), Dist(), resumed=True)
    assert len(data.train_blocks) == len(train_then) > 500 and len(data.eval_blocks) == len(held_then)
    np.testing.assert_array_equal(data.train_blocks[np.arange(len(train_then))], train_then)
    np.testing.assert_array_equal(data.eval_blocks[np.arange(len(held_then))], held_then)
    stream = BlockStream(len(train_then), args.batch_size, args.seed)
    for _ in range(60):  # more than an epoch
        idx = stream.next_batch()
        np.testing.assert_array_equal(data.train_blocks[idx], train_then[idx])

    steps = ["--max-steps", "4", "--log-every", "1", "--eval-every", "2", "--warmup-steps", "1", *TINY]
    assert pretrain.main([*argv, *steps, "--out", str(tmp_path / "now")]) == 0

    def as_before(args, out, source, d, resumed):
        new = pretrain_data.prepare_data(args, out, source, d, resumed)  # the tokenizer and objectives
        train_blocks, eval_blocks = todays_blocks(todays_texts(args), new.tok, args)
        return Data(new.tok, len(train_blocks) + len(eval_blocks), train_blocks, eval_blocks, new.objective,
                    new.eval_objective)

    monkeypatch.setattr(pretrain, "prepare_data", as_before)
    assert pretrain.main([*argv, *steps, "--out", str(tmp_path / "then")]) == 0
    assert metrics(tmp_path / "now") == metrics(tmp_path / "then")
    assert len(metrics(tmp_path / "now")) == 7  # 4 steps, 3 evaluations


def test_a_new_tokenizer_on_a_corpus_that_fits_memory_is_todays(tmp_path):
    """A corpus of fewer lines than --tokenizer-sample: the tokenizer learns from all of them, in order, as before."""
    corpus = write_corpus(tmp_path / "c", people_daily_lines()[:1200])
    assert pretrain.main(["--corpus", str(corpus), "--vocab-size", "1500", "--tokenizer-model", "char",
                          "--max-steps", "1", "--out", str(tmp_path / "r"), *TINY]) == 0
    SentencePieceTokenizer.train(read_texts([corpus]), 1500, tmp_path / "then", model_type="char", verbose=False)
    assert (tmp_path / "r" / "tokenizer" / "spm.model").read_bytes() == (tmp_path / "then" / "spm.model").read_bytes()


def test_a_large_corpus_trains_the_tokenizer_on_a_sample(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c", [f"第{i}行" for i in range(2000)])
    args = PretrainArgs(corpus=[str(corpus)], tokenizer_sample=100, progress=False)
    lines = pretrain_data.tokenizer_text(args, pretrain_data.open_corpus(args), BadFiles())
    assert len(lines) == 100 and len(set(lines)) == 100 and set(lines) <= {f"第{i}行" for i in range(2000)}
    assert "a sample of 100 of the corpus's 2,000 lines" in capsys.readouterr().out
    args.tokenizer_sample = 5000
    assert pretrain_data.tokenizer_text(args, pretrain_data.open_corpus(args), BadFiles()) == read_texts([corpus])


# -- the shards --------------------------------------------------------------------------------------------------


def tokenization(tok_dir: Path, cache: Path, workers: int = 2, policy: str = "stop", log=None, progress=False):
    import tokenizer

    return Tokenization(tokenizer.load(tok_dir), tok_dir, cache, workers, BadFiles(policy, warn=lambda line: None),
                        progress=progress, log=log or (lambda line: None))


def whole(stream) -> np.ndarray:
    return stream.read(0, len(stream))


def test_shards_are_reused_and_only_the_missing_tasks_tokenized(tmp_path, tok_dir, monkeypatch, capsys):
    monkeypatch.setattr(shards, "CHUNK_BYTES", 20_000)
    files = sorted((write_corpus(tmp_path / "c", people_daily_lines()[:1000])).rglob("*.*"))
    done = []
    real_run = shards.Pool.run

    def counting_run(self, tasks, stop_at_bad):
        done.append([t.name for t in tasks])
        return real_run(self, tasks, stop_at_bad)

    monkeypatch.setattr(shards.Pool, "run", counting_run)
    first = tokenize_files(tokenization(tok_dir, tmp_path / "cache", progress=True), files)
    assert len(done[0]) > 6 and "tokenizing (2 workers)" in capsys.readouterr().err
    tokens = whole(first)
    assert first.n_docs == len(read_texts(files)) and len(tokens) == first.n_ids + first.n_docs  # a [SEP] each

    log = []
    again = tokenize_files(tokenization(tok_dir, tmp_path / "cache", log=log.append), files)
    assert len(done) == 1 and log[0].startswith("tokenized corpus found")  # nothing read again
    np.testing.assert_array_equal(whole(again), tokens)

    directory = again.directory
    for manifest in directory.glob("corpus-*.json"):
        manifest.unlink()
    records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    records[3].unlink()  # a task whose record never landed: its parts may be there, but it is not complete
    part = directory / json.loads(records[5].read_text())["parts"][0]["file"]
    part.write_bytes(part.read_bytes()[:-2])  # a part cut short: its task is not complete either
    resumed = tokenize_files(tokenization(tok_dir, tmp_path / "cache"), files)
    assert sorted(done[1]) == sorted([records[3].stem, records[5].stem])
    np.testing.assert_array_equal(whole(resumed), tokens)
    assert not list(directory.glob(".*tmp*"))


@pytest.mark.parametrize("own", [True, False])
def test_the_runs_own_cache_keeps_only_its_corpus_a_shared_one_everything(tmp_path, tok_dir, own):
    (tmp_path / "a.txt").write_text("今天天气很好\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("明天也很好\n", encoding="utf-8")
    t = tokenization(tok_dir, tmp_path / "cache")
    t.own_cache = own
    tokenize_files(t, [tmp_path / "a.txt", tmp_path / "b.txt"])
    (tmp_path / "cache" / "ids.npy").write_bytes(b"an older cache")
    (tmp_path / "cache" / "tokens-0123").mkdir()
    before = sorted(p.name for p in t.directory.iterdir())
    (tmp_path / "b.txt").write_text("明天也很好，后天呢\n", encoding="utf-8")  # changed: tokenized again
    stream = tokenize_files(t, [tmp_path / "a.txt", tmp_path / "b.txt"])
    after = sorted(p.name for p in t.directory.iterdir())
    assert len(after) == len(before) + (0 if own else 4)  # b's task (record, tokens, ends) and the corpus
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == (
        [t.directory.name] if own else ["ids.npy", "tokens-0123", t.directory.name])
    assert stream.n_docs == 2


def test_leftovers_of_a_dead_writer_are_removed_not_those_of_a_live_one(tmp_path, tok_dir):
    t = tokenization(tok_dir, tmp_path / "cache")
    t.directory.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    (t.directory / f".x-0.tokens.tmp-{dead.pid}").write_bytes(b"12")
    (t.directory / f".y-0.tokens.tmp-{os.getpid()}").write_bytes(b"34")
    (tmp_path / "a.txt").write_text("今天天气很好\n", encoding="utf-8")
    tokenize_files(t, [tmp_path / "a.txt"])
    assert [p.name for p in t.directory.glob(".*tmp*")] == [f".y-0.tokens.tmp-{os.getpid()}"]


def test_a_worker_killed_is_named_and_leaves_no_temporary_file(tmp_path, tok_dir, monkeypatch):
    """A worker that dies in the middle of a task (here: SIGKILL on its first report) is an error that says so,
    the other workers are ended, and no file of the task looks written."""
    (tmp_path / "a.txt").write_text("今天天气很好\n" * 200_000, encoding="utf-8")
    real_read = shards.Pool._read

    def killing_read(self, w):
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
        return real_read(self, w)

    monkeypatch.setattr(shards.Pool, "_read", killing_read)
    t = tokenization(tok_dir, tmp_path / "cache")
    with pytest.raises(InputError, match="a tokenization worker process was killed by SIGKILL while reading"):
        tokenize_files(t, [tmp_path / "a.txt"])
    assert not [p for p in t.directory.iterdir() if "tmp" in p.name or p.suffix == ".json"]
    assert all(read_record(t.directory, p.stem, 2) is None for p in t.directory.glob("*.tokens"))


# -- a run: stopped in its tokenization, bad files, a shared cache ------------------------------------------------


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train.pretrain", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_command(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "train.pretrain", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_a_tokenization_stopped_by_a_signal_continues_where_it_stopped(tmp_path, tok_dir):
    corpus = tmp_path / "c"
    corpus.mkdir()
    lines = people_daily_lines()
    for i in range(60):  # 60 tasks of about 150 KB, for one worker
        (corpus / f"{i:02d}.txt").write_text("\n".join(lines[i * 100:(i + 1) * 100] * 4) + "\n", encoding="utf-8")
    argv = ["--corpus", str(corpus), "--tokenizer", str(tok_dir), "--workers", "1", "--max-steps", "2", *TINY]
    out = tmp_path / "r"
    job = start([*argv, "--out", str(out)])
    deadline = time.monotonic() + 300
    while not list(out.glob("data/tokens-*/*.json")):  # the first task done
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "token shards written so far are kept" in err
    directory = next(out.glob("data/tokens-*"))
    kept = [p.stem for p in directory.glob("*.json")]
    assert 1 <= len(kept) < 60 and not list(directory.glob(".*tmp*"))
    assert all(read_record(directory, name, 2) is not None for name in kept)

    again = run_command([*argv, "--out", str(out)])
    assert "keeping the token shards" in again.stdout
    megabytes = float(again.stdout.split("tokenized ")[1].split(" MB")[0])
    total = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6
    assert megabytes < total - 0.1  # only what was not done before
    run_command([*argv, "--out", str(tmp_path / "never-stopped")])  # in a process with the same threads
    assert metrics(out) == metrics(tmp_path / "never-stopped")


def test_bad_files_stop_the_run_or_are_skipped(tmp_path, tok_dir, capsys):
    """Both where a new tokenizer's sample finds them and where the workers do (--tokenizer)."""
    good = people_daily_lines()[:1500]
    corpus = write_corpus(tmp_path / "c", good)
    (corpus / "a0-empty.txt").write_bytes(b"")
    (corpus / "b0-binary.txt").write_bytes(b"\x7fELF\0\0\0\0" * 1000)
    (corpus / "b1-gbk.txt").write_bytes("\n".join(good[:50]).encode() + "\n第二".encode("gbk"))
    (corpus / "d" / "z.jsonl").write_text('{"text": "好"}\n[1, 2]\n', encoding="utf-8")
    names = ["a0-empty.txt", "b0-binary.txt, line 1", "b1-gbk.txt, line 51", "z.jsonl, line 2"]
    only_good = write_corpus(tmp_path / "good", good)
    new_tok = ["--vocab-size", "1500", "--tokenizer-model", "char"]
    for how in (["--tokenizer", str(tok_dir)], new_tok):
        common = [*how, "--max-steps", "2", "--log-every", "1", *TINY]
        capsys.readouterr()
        assert pretrain.main(["--corpus", str(corpus), *common, "--out", str(tmp_path / "stop")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {corpus / 'a0-empty.txt'}: file is empty") and err.count("\n") == 1, err
        assert "--bad-files skip" in err and not (tmp_path / "stop").exists()

        assert pretrain.main(["--corpus", str(corpus), *common, "--bad-files", "skip", "--out",
                              str(tmp_path / "skip")]) == 0
        out, err = capsys.readouterr()
        warnings = [line for line in err.splitlines() if line.startswith("warning: skipping")]
        assert [w.split(str(corpus))[1].split(": ")[0].lstrip("/").removeprefix("d/") for w in warnings] == names
        assert "note: 4 of 8 corpus files skipped as unreadable (--bad-files skip)" in out
        assert pretrain.main(["--corpus", str(only_good), *common, "--out", str(tmp_path / "good-run")]) == 0
        assert metrics(tmp_path / "skip") == metrics(tmp_path / "good-run")  # as if the bad files were not there
        shutil.rmtree(tmp_path / "skip")
        shutil.rmtree(tmp_path / "good-run")


def test_a_shared_data_cache_tokenizes_a_corpus_once_and_the_options_are_recorded(tmp_path, tok_dir, capsys):
    corpus = write_corpus(tmp_path / "c", people_daily_lines()[:1000])
    common = ["--corpus", str(corpus), "--tokenizer", str(tok_dir), "--data-cache", str(tmp_path / "cache"),
              "--max-steps", "2", "--log-every", "1", "--save-every", "1", *TINY]
    assert pretrain.main([*common, "--out", str(tmp_path / "a"), "--stop-at-step", "1"]) == 0
    assert "tokenized 0." in capsys.readouterr().out
    assert pretrain.main([*common, "--out", str(tmp_path / "b"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "tokenized corpus found" in out and "MB/s" not in out and not (tmp_path / "b" / "data").exists()
    recorded = json.loads((tmp_path / "b" / "args.json").read_text())
    assert (recorded["workers"], recorded["bad_files"], recorded["tokenizer_sample"]) == (1, "stop", 50_000)
    assert recorded["data_cache"] == str(tmp_path / "cache")
    assert pretrain.main(["--out", str(tmp_path / "a"), "--resume", "--workers", "3"]) == 0  # may change
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_the_options_are_checked_before_any_work(tmp_path, capsys):
    for bad, message in ((["--workers", "0"], "--workers must be at least 1"),
                         (["--tokenizer-sample", "0"], "--tokenizer-sample must be at least 1"),
                         (["--corpus", str(tmp_path / "*.none")], "the pattern matches no files")):
        assert pretrain.main([*bad, "--out", str(tmp_path / "r"), *TINY]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        pretrain.main(["--bad-files", "ignore"])
