"""Faults and bad inputs against the real commands, in a temporary directory: nothing a user owns is lost, a run
stopped any way resumes exactly, and nonsense is refused with one line before any work.

Each test names the case it guards. The pretraining runs are tiny (one block of width 32, a character tokenizer
trained once for the module), so a run costs well under a second; only the signal tests start a process.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_finetune_helpers import REPO, cli_env, make_pretrain_run, news_corpus, review_rows, write_rows
from train import finetune, predict, pretrain
from train.checkpoints import checkpoint_dirs, latest_checkpoint
from train.signals import StopSignals
from train.builtin_data import people_daily_lines
from minibert.rundir import RUN_MARKER

TINY = ["--preset", "tiny", "--set", "num_hidden_layers=1", "hidden_size=32", "num_attention_heads=2",
        "intermediate_size=64", "--max-seq-length", "32", "--no-progress", "--eval-batches", "1", "--batch-size", "4",
        "--eval-every", "1000", "--warmup-steps", "1", "--log-every", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A small corpus, two tokenizers trained on it, a finetuning CSV and a fake pretraining run."""
    from tokenizer import SentencePieceTokenizer

    root = tmp_path_factory.mktemp("faults")
    corpus, _ = news_corpus(root)
    SentencePieceTokenizer.train(people_daily_lines()[:30], 2000, root / "tok_small", model_type="char",
                                 verbose=False)  # fewer characters: a smaller vocabulary
    return {"root": root, "corpus": corpus, "tok": root / "tok", "tok_small": root / "tok_small",
            "csv": write_rows(root / "reviews.csv", review_rows(40)), "init": make_pretrain_run(root / "runs")}


def pre(data, out, *extra) -> int:
    return pretrain.main(["--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(out),
                          *TINY, *extra])


def ft(data, out, *extra) -> int:
    return finetune.main(["--init", str(data["init"]), "--train", str(data["csv"]), "--out", str(out),
                          "--epochs", "1", "--batch-size", "8", *extra])


def losses(out) -> dict[int, float]:
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- 1. --force and --out: only a run's own files -------------------------------------------------------------


def test_force_never_empties_a_directory_that_is_not_a_run(tmp_path, data, capsys):
    d = tmp_path / "d"
    (d / "Docs").mkdir(parents=True)
    (d / "Docs" / "thesis.tex").write_text("x")
    (d / "metrics.jsonl").write_text("{}\n")
    before = tree(d)
    for flags in (["--force"], [], ["--resume"]):
        assert pre(data, d, "--max-steps", "1", *flags) == 2, flags
        assert "no .minibert-run" in capsys.readouterr().err
        assert tree(d) == before, flags  # nothing removed, nothing written (no config.json, args.json, marker)


def test_force_removes_only_what_the_run_wrote(tmp_path, data):
    r = tmp_path / "r"
    assert pre(data, r, "--max-steps", "2", "--save-every", "1") == 0
    assert json.loads((r / RUN_MARKER).read_text())["kind"] == "pretrain"
    (r / "notes.txt").write_text("mine")
    (r / "Docs").mkdir()
    (r / "Docs" / "thesis.tex").write_text("mine too")
    assert pre(data, r, "--max-steps", "1") == 2  # a run: --resume or --force
    assert pre(data, r, "--max-steps", "1", "--force") == 0
    assert (r / "notes.txt").read_text() == "mine" and (r / "Docs" / "thesis.tex").read_text() == "mine too"
    assert [p.name for p in (r / "checkpoints").iterdir()] == ["step_000001"]
    assert max(losses(r)) == 1


@pytest.mark.parametrize("layout", ["checkpoints", "top-level files"])
def test_a_directory_that_only_looks_like_a_run_is_never_cleared(tmp_path, data, capsys, layout):
    """Ownership by record, never by look: without minibert's marker, --force, --resume and a plain run all refuse a
    directory whose files have a run's names, and nothing in it changes."""
    u = tmp_path / "u"
    if layout == "checkpoints":
        (u / "checkpoints" / "step_100").mkdir(parents=True)
        (u / "checkpoints" / "step_100" / "w.bin").write_text("x")
        (u / "data").mkdir()
        (u / "data" / "train.csv").write_text("x")
    else:
        u.mkdir()
        for name in ("config.json", "model.safetensors", "metrics.jsonl"):
            (u / name).write_text("mine")
    before = tree(u)
    for flags in (["--force"], ["--resume"], []):
        assert pre(data, u, "--max-steps", "2", *flags) == 2, flags
        assert "no .minibert-run" in capsys.readouterr().err
        assert tree(u) == before, flags


def test_force_removes_only_the_entries_the_marker_records(tmp_path, data, capsys):
    """A marker that records no entries (hand-written, or cut short) gives --force nothing to remove: a file with
    the name of one the run writes is refused, not overwritten."""
    r = tmp_path / "r"
    assert pre(data, r, "--max-steps", "2") == 0
    assert set(json.loads((r / RUN_MARKER).read_text())["entries"]) >= {"checkpoints", "metrics.jsonl", "args.json"}
    (r / RUN_MARKER).write_text('{"kind": "pretrain"}')
    before = tree(r)
    assert pre(data, r, "--max-steps", "1", "--force") == 2
    assert "minibert did not write" in capsys.readouterr().err and tree(r) == before


def test_finetune_out_is_a_run_directory_too(tmp_path, data, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": 1}')
    for flags in ([], ["--force"]):
        assert ft(data, foreign, *flags) == 2
        assert "no .minibert-run" in capsys.readouterr().err
        assert tree(foreign) == {"config.json": b'{"mine": 1}'}
    out = tmp_path / "ft"
    assert ft(data, out) == 0
    assert json.loads((out / RUN_MARKER).read_text())["kind"] == "finetune"
    (out / "mine.txt").write_text("keep")
    assert ft(data, out) == 2
    assert "--force" in capsys.readouterr().err
    assert ft(data, out, "--force") == 0
    assert (out / "mine.txt").read_text() == "keep" and (out / "results.json").is_file()
    pretraining = tmp_path / "p"  # a pretraining run is not a fine-tuning run, with or without --force
    assert pre(data, pretraining, "--max-steps", "1") == 0
    before = tree(pretraining)
    assert ft(data, pretraining, "--force") == 2
    assert "pretrain run" in capsys.readouterr().err and tree(pretraining) == before


# -- 3, 4. Ctrl-C and SIGTERM between steps ----------------------------------------------------------------


def start_pretraining(data, out, *extra) -> subprocess.Popen:
    """`python -m train.pretrain` as a job with its own session, SIGINT at its default (a background job of a
    non-interactive shell would have it ignored)."""
    cmd = [sys.executable, "-m", "train.pretrain", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]),
           "--out", str(out), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_step(out: Path, step: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if any(s >= step for s in losses(out)):
                return
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or a line half written
            pass
        time.sleep(0.005)
    raise AssertionError(f"no step {step} within {timeout} s")


SIGNAL_RUN = ["--max-steps", "60", "--save-every", "100000"]


@pytest.fixture(scope="module")
def never_stopped(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    assert pre(data, out, *SIGNAL_RUN) == 0
    return out


def test_a_signal_saves_the_last_whole_step_and_resume_is_exact(tmp_path, data, never_stopped):
    jobs = {signum: start_pretraining(data, tmp_path / signum.name, *SIGNAL_RUN)  # both at once: start-up is slow
            for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, job in jobs.items():
        wait_for_step(tmp_path / signum.name, 3, job)
        os.kill(job.pid, signum)
    for signum, job in jobs.items():
        out = tmp_path / signum.name
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 128 + signum == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], stderr
        stopped_at = max(losses(out))
        assert latest_checkpoint(out).name == f"step_{stopped_at:06d}" and stopped_at < 60
        assert pre(data, out, *SIGNAL_RUN, "--resume") == 0
        a, b = losses(never_stopped), losses(out)
        assert a.keys() == b.keys() == set(range(1, 61))
        assert [b[s] for s in a] == [a[s] for s in a], (signum, stopped_at)  # exact: the same arithmetic
        assert same_weights(never_stopped / "model.safetensors", out / "model.safetensors")
        assert f"{signum.name} received: stopped after step {stopped_at}" in stdout and "--resume" in stdout


def test_the_loop_restores_the_signal_handlers_and_keeps_an_ignored_signal_ignored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # the first: a flag, no KeyboardInterrupt
            assert stop.signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):  # the second: as without the loop
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is before[0]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[1])


# -- 5. a kill between the checkpoint and the top-level weights ----------------------------------------------


def test_resume_repairs_top_level_weights_older_than_the_last_checkpoint(tmp_path, data, capsys):
    r = tmp_path / "r"
    assert pre(data, r, "--max-steps", "4", "--save-every", "2") == 0
    last = r / "checkpoints" / "step_000004"
    for crash in ("older", "missing"):
        if crash == "older":
            shutil.copyfile(r / "checkpoints" / "step_000002" / "model.safetensors", r / "model.safetensors")
        else:
            (r / "model.safetensors").unlink()
        (r / ".model.safetensors.tmp-12345").write_bytes(b"half")  # what the killed write left
        (r / "checkpoints" / ".tmp-step_000006").mkdir()
        assert pre(data, r, "--max-steps", "4", "--resume") == 0
        assert "done" in capsys.readouterr().out
        assert same_weights(r / "model.safetensors", last / "model.safetensors"), crash
        assert not (r / ".model.safetensors.tmp-12345").exists()
        assert not (r / "checkpoints" / ".tmp-step_000006").exists()


# -- 6. a truncated checkpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["state.pt", "model.safetensors"])
def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, data, capsys, name):
    common = ["--max-steps", "4", "--save-every", "2"]
    assert pre(data, tmp_path / "whole", *common) == 0
    r = tmp_path / "r"
    assert pre(data, r, *common) == 0
    bad = r / "checkpoints" / "step_000004" / name
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    capsys.readouterr()
    assert pre(data, r, *common, "--resume") == 0
    err = capsys.readouterr().err
    assert f"step_000004/{name}" in err and "step_000002" in err
    assert losses(r) == losses(tmp_path / "whole")  # exact
    assert same_weights(r / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    # With every checkpoint cut short there is nothing to fall back to: a message, no traceback.
    for ckpt in checkpoint_dirs(r):
        (ckpt / name).write_bytes((ckpt / name).read_bytes()[:100])
    assert pre(data, r, *common, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and name in err and "--force" in err


# -- 7. killed during the first save ------------------------------------------------------------------------


def test_a_run_killed_during_its_first_save_says_what_to_do_and_starts_over(tmp_path, data, capsys):
    r = tmp_path / "r"
    assert pre(data, r, "--max-steps", "1") == 0
    shutil.rmtree(r / "checkpoints")  # the state a kill during the first save leaves
    (r / "model.safetensors").unlink()
    (r / "config.json").unlink()
    (r / "checkpoints" / ".tmp-step_000001").mkdir(parents=True)
    capsys.readouterr()
    assert pre(data, r, "--max-steps", "2", "--resume") == 2
    assert "without --resume" in capsys.readouterr().err
    assert pre(data, r, "--max-steps", "2") == 0
    assert max(losses(r)) == 2 and latest_checkpoint(r).name == "step_000002"


# -- 8. a leftover tokenizer ------------------------------------------------------------------------------


def test_a_leftover_tokenizer_is_never_taken_for_the_one_asked_for(tmp_path, data):
    import tokenizer

    r = tmp_path / "r"
    r.mkdir()
    (r / RUN_MARKER).write_text('{"kind": "pretrain", "entries": ["tokenizer"]}')  # failed after its tokenizer
    shutil.copytree(data["tok"], r / "tokenizer")
    assert pretrain.main(["--corpus", str(data["corpus"]), "--tokenizer", str(data["tok_small"]), "--out", str(r),
                          *TINY, "--max-steps", "1"]) == 0
    assert tokenizer.load(r / "tokenizer").vocab_size == tokenizer.load(data["tok_small"]).vocab_size
    assert json.loads((r / "args.json").read_text())["tokenizer"] == str(data["tok_small"])
    # A resumed run keeps its own tokenizer; asking for another one is refused.
    assert pretrain.main(["--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(r),
                          *TINY, "--max-steps", "2", "--resume"]) == 2


# -- 9. options on --resume --------------------------------------------------------------------------------


def test_resume_takes_the_runs_options_refuses_changes_and_allows_a_longer_budget(tmp_path, data, capsys):
    assert pre(data, tmp_path / "whole", "--max-steps", "6") == 0
    r = tmp_path / "r"
    assert pre(data, r, "--max-steps", "4", "--stop-at-step", "2") == 0
    for changed in (["--batch-size", "8"], ["--lr", "1e-3", "--seed", "3"], ["--set", "hidden_size=64"]):
        assert pre(data, r, "--resume", *changed) == 2
        err = capsys.readouterr().err
        assert all(flag in err for flag in changed if flag.startswith("--")), err
    assert pre(data, r, "--resume", "--max-steps", "1") == 2  # fewer steps than the run already took
    assert "at least 2" in capsys.readouterr().err
    assert max(losses(r)) == 2
    # The README's command, with nothing but --out and --resume, continues the run with its own options; a longer
    # --max-steps is applied, and the schedule becomes that of a 6-step run (the same LR so far: warm-up 1 step).
    assert pretrain.main(["--out", str(r), "--resume", "--max-steps", "6"]) == 0
    assert losses(r) == losses(tmp_path / "whole")  # exact
    assert same_weights(r / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    assert json.loads((r / "args.json").read_text())["max_steps"] == 6


# -- 10. nonsense options: one line, exit 2, nothing written -------------------------------------------------


def _pretrain_cases(tmp: Path) -> dict[str, list[str]]:
    """Each case by the name its message must hold."""
    (tmp / "wrong-type.json").write_text('{"num_hidden_layers": "three"}')
    (tmp / "nul.txt").write_bytes(b"\0" * 4000)
    (tmp / "a-file").write_text("")
    return {
        "--lr": ["--lr", "-1"],
        "--mlm-probability": ["--mlm-probability", "1.5"],
        "--save-every": ["--save-every", "0"],
        "--eval-every": ["--eval-every", "0"],
        "--log-every": ["--log-every", "0"],
        "--max-steps": ["--max-steps", "-5"],
        "--eval-fraction": ["--eval-fraction", "0"],
        "--keep-last": ["--keep-last", "0"],
        "--device": ["--device", "tpu"],
        "--max-time": ["--max-time", "-1"],
        "--weight-decay": ["--weight-decay", "-0.1"],
        "--max-seq-length": ["--max-seq-length", "100000"],
        "--seed": ["--seed", "-1"],
        "hidden_size": ["--set", "hidden_size=abc"],
        "wrong-type.json": ["--config", str(tmp / "wrong-type.json")],
        "nul.txt": ["--corpus", str(tmp / "nul.txt")],
        "cannot be created": ["--out", str(tmp / "a-file" / "run")],
    }


NONSENSE = ["--lr", "--mlm-probability", "--save-every", "--eval-every", "--log-every", "--max-steps",
            "--eval-fraction", "--keep-last", "--device", "--max-time", "--weight-decay", "--max-seq-length", "--seed",
            "hidden_size", "wrong-type.json", "nul.txt", "cannot be created"]


@pytest.mark.parametrize("named", NONSENSE)
def test_pretraining_refuses_nonsense_with_one_line_before_any_work(tmp_path, data, capsys, named):
    args = _pretrain_cases(tmp_path)[named]
    out = tmp_path / "out"
    started = time.perf_counter()
    code = pre(data, out, "--max-steps", "2", *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert not out.exists() and time.perf_counter() - started < 5


def test_finetune_predict_and_tokenizer_refuse_nonsense(tmp_path, data, capsys):
    import tokenizer.cli as tokenizer_train

    garbage = make_pretrain_run(tmp_path, "garbage")
    (garbage / "model.safetensors").write_bytes(b"not safetensors at all")
    (tmp_path / "nul.csv").write_bytes(b"text,label\n" + b"\0" * 100 + b",a\n")
    (tmp_path / "nul.txt").write_bytes(b"\0" * 100)
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "out"
    for args, named in ((["--init", str(garbage)], "model.safetensors"), (["--lr", "inf"], "--lr"),
                        (["--train", str(tmp_path / "nul.csv")], "nul.csv"), (["--seeds", "-1"], "--seeds"),
                        (["--out", str(tmp_path / "a-file" / "x")], "cannot be created")):
        code = finetune.main(["--init", str(data["init"]), "--train", str(data["csv"]), "--out", str(out),
                              "--epochs", "1", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and named in err and "Traceback" not in err, (args, err)
        assert not out.exists()
    run = tmp_path / "ft"
    assert ft(data, run) == 0
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for args, named in ((["--file", str(tmp_path / "nul.txt")], "nul.txt"),
                        (["--export-hf", str(tmp_path / "mine")], "no .minibert-run")):
        assert predict.main([str(run), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err, err
    assert tree(tmp_path / "mine") == {"notes.txt": b"keep"}
    shutil.copyfile(garbage / "model.safetensors", run / "model.safetensors")
    assert predict.main([str(run), "好"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    for args, named in ((["--input", str(tmp_path / "nul.txt")], "nul.txt"), (["--num-threads", "0"], "--num-threads"),
                        (["--seed", "-1"], "--seed"), (["--out", str(tmp_path / "a-file" / "t")], "a-file")):
        argv = ["--input", str(data["corpus"]), "--out", str(tmp_path / "tok"), "--model-type", "char", *args]
        assert tokenizer_train.main(argv) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err, err
        assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_garbage_weights_in_a_hugging_face_init_directory_are_named(tmp_path, data, capsys, weights):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n好\n", encoding="utf-8")
    (hf_dir / "config.json").write_text('{"model_type": "bert", "vocab_size": 6, "hidden_size": 8, "num_hidden_layers": '
                                        '1, "num_attention_heads": 2, "intermediate_size": 16}', encoding="utf-8")
    (hf_dir / weights).write_bytes(b"\x80" * 300)
    out = tmp_path / "out"
    assert finetune.main(["--init", str(hf_dir), "--train", str(data["csv"]), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and weights in err and "Traceback" not in err, err
    assert not out.exists()


# -- 11. --config over the preset ---------------------------------------------------------------------------


def test_a_config_file_is_applied_over_the_preset(tmp_path, data):
    (tmp_path / "three.json").write_text('{"num_hidden_layers": 3}')
    r = tmp_path / "r"
    assert pretrain.main(["--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(r),
                          "--preset", "tiny", "--config", str(tmp_path / "three.json"), "--max-seq-length", "32",
                          "--batch-size", "2", "--max-steps", "1", "--eval-batches", "1", "--no-progress"]) == 0
    config = json.loads((r / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert (config["hidden_size"], config["intermediate_size"]) == (128, 512)  # the tiny preset's
    assert config["position_embedding_type"] == "rotary" and config["hidden_dropout_prob"] == 0.0  # pretraining's
    assert config["max_position_embeddings"] == 32


# -- 12. a failed run leaves nothing behind -----------------------------------------------------------------


def test_a_failed_run_leaves_no_directory_behind(tmp_path, data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("一二三\n", encoding="utf-8")  # fewer tokens than one block
    argv = ["--corpus", str(tmp_path / "short.txt"), "--tokenizer", str(data["tok"]), *TINY, "--max-steps", "1"]
    assert pretrain.main(argv) == 2
    assert "fewer than one block" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pretrain.main([*argv, "--out", str(empty)]) == 2
    assert empty.is_dir() and not list(empty.iterdir())  # it was there before: emptied again, not removed
