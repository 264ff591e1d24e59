"""A directory minibert owns (`minibert/rundir.py`): ownership by record and one process at a time.

The module on its own first (the manifest, the clash check, the temporary files of killed writes, the lock held by
a real second process and taken over from a killed one), then the commands: two real pretraining processes on one
`--out`, and `python -m minibert.explain --plot` beside a user's picture.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minibert.errors import InputError
from minibert.rundir import (LOCK_NAME, RUN_MARKER, OutState, RunKind, check_usable, claim, holder, inspect_out,
                             read_marker)
from test_finetune_helpers import REPO, cli_env, news_corpus

KIND = RunKind("demo", "demo run")


def claim_new(path: Path, kind: RunKind, entries: list[str]):
    """Look, then claim: what every command does with its output directory."""
    return claim(inspect_out(Path(path), kind), kind, entries)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- the manifest ------------------------------------------------------------------------------------------------


def test_a_new_directory_records_its_entries_before_they_are_written_and_release_removes_only_them(tmp_path):
    d = tmp_path / "new" / "run"
    run = claim(inspect_out(d, KIND), KIND, ["metrics.jsonl", "checkpoints"])
    assert run.created and read_marker(d) == {"kind": "demo", "written_by": "minibert",
                                               "entries": ["checkpoints", "metrics.jsonl"]}
    assert (d / LOCK_NAME).is_file()
    (d / "metrics.jsonl").write_text("{}\n")
    (d / "checkpoints").mkdir()
    run.record("loss.png")
    assert read_marker(d)["entries"] == ["checkpoints", "loss.png", "metrics.jsonl"]
    run.release()
    assert not d.exists() and (tmp_path / "new").is_dir()  # the directory it made, not its parent


def test_starting_over_removes_recorded_entries_and_their_temp_files_and_nothing_else(tmp_path):
    d = tmp_path / "r"
    with claim(inspect_out(d, KIND), KIND, ["a.json", "ckpt"]):
        (d / "a.json").write_text("run")
        (d / "ckpt").mkdir()
        (d / "ckpt" / "w.bin").write_text("run")
        (d / ".a.json.tmp-123").write_text("half a write")  # minibert.files.atomic_write's temporary file
    for name in ("seed-ideas.txt", ".b.json.tmp-5", "ckpt-notes.txt"):  # a user's, whatever the name looks like
        (d / name).write_text("mine")
    out = inspect_out(d, KIND)
    assert out.state is OutState.RUN
    with claim(out, KIND, ["a.json"]):
        pass
    assert {p.name for p in d.iterdir()} == {RUN_MARKER, "seed-ideas.txt", ".b.json.tmp-5", "ckpt-notes.txt"}
    assert read_marker(d)["entries"] == ["a.json"]


def test_a_run_that_continues_keeps_its_entries(tmp_path):
    d = tmp_path / "r"
    with claim(inspect_out(d, KIND), KIND, ["a"]):
        (d / "a").write_text("1")
    with claim(inspect_out(d, KIND), KIND, ["b"], clear=False):
        pass
    assert (d / "a").read_text() == "1" and read_marker(d)["entries"] == ["a", "b"]


def test_a_file_with_an_entrys_name_that_minibert_did_not_record_is_refused(tmp_path):
    d = tmp_path / "r"
    with claim(inspect_out(d, KIND), KIND, ["a"]):
        pass
    (d / "a").write_text("the earlier run's")  # kept too: the refusal comes before anything is removed
    (d / "b").write_text("mine")
    before = tree(d)
    with pytest.raises(InputError, match="b, which minibert did not write"):
        claim(inspect_out(d, KIND), KIND, ["a", "b"])
    assert tree(d) == before and not (d / LOCK_NAME).exists()


@pytest.mark.parametrize("content,why", [(None, "no .minibert-run"), ('{"kind": "other"}', "minibert other run"),
                                         ("not json", "cannot be read")])
def test_a_directory_that_is_not_this_kinds_run_is_refused_untouched(tmp_path, content, why):
    d = tmp_path / "d"
    d.mkdir()
    (d / "metrics.jsonl").write_text("mine")
    if content is not None:
        (d / RUN_MARKER).write_text(content)
    before = tree(d)
    out = inspect_out(d, KIND, option="--plot")
    assert out.state is OutState.FOREIGN
    with pytest.raises(InputError, match=f"--plot {d} .*{why}"):
        check_usable(out)
    with pytest.raises(InputError):
        claim(out, KIND, ["x"])
    assert tree(d) == before


def test_an_unwritable_place_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        claim_new(tmp_path / "file" / "run", KIND, ["a"])
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(InputError, match="read-only"):
            claim_new(ro / "run", KIND, ["a"])


# -- the lock ----------------------------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from minibert.rundir import RunKind, claim, inspect_out
    kind = RunKind("demo", "demo run")
    run = claim(inspect_out(Path(sys.argv[1]), kind), kind, ["a"])
    print("claimed", flush=True)
    time.sleep(600)
""")


def hold(path: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "claimed", process.communicate(timeout=60)
    return process


def test_a_second_process_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(tmp_path, capfd):
    d = tmp_path / "r"
    first = hold(d)
    try:
        assert str(first.pid) in holder(d)
        for attempt in (lambda: inspect_out(d, KIND), lambda: claim_new(d, KIND, ["a"])):
            with pytest.raises(InputError, match=f"in use by process {first.pid} "):
                attempt()
        assert read_marker(d)["entries"] == ["a"]
    finally:
        first.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        first.communicate(timeout=60)
    assert (d / LOCK_NAME).is_file() and holder(d) is None  # the OS dropped the lock with its holder
    capfd.readouterr()
    with claim_new(d, KIND, ["a"]):
        assert f"locked by process {first.pid}, which is no longer running; taking it over" in capfd.readouterr().err
    assert not (d / LOCK_NAME).exists()  # a normal end leaves no lock file


# -- the commands ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    text, tok = news_corpus(tmp_path_factory.mktemp("rundir"))
    return {"corpus": text, "tok": tok}


def pretrain_cmd(corpus, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train.pretrain", "--corpus", str(corpus["corpus"]), "--tokenizer",
            str(corpus["tok"]), "--out", str(out), "--preset", "tiny", "--set", "num_hidden_layers=1",
            "hidden_size=32", "num_attention_heads=2", "intermediate_size=64", "--max-seq-length", "32",
            "--no-progress", "--eval-batches", "1", "--batch-size", "4", "--eval-every", "1000", "--warmup-steps",
            "1", "--log-every", "1", "--save-every", "5", *extra]


def metrics_steps(out: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if line.strip().endswith("}")]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_two_pretraining_processes_on_one_directory(tmp_path, corpus):
    """The second one, with the same command, with --resume or with --force, is refused with one line naming the
    directory and the first's pid, exit 2, and changes nothing; the first runs on and stops cleanly."""
    out = tmp_path / "p"
    first = subprocess.Popen(pretrain_cmd(corpus, out, "--max-steps", "100000"), cwd=REPO, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any(s >= 6 for s in metrics_steps(out)):  # past its first checkpoint, so --resume has one
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        for extra in ([], ["--resume"], ["--force"]):
            before = metrics_steps(out)
            second = subprocess.run(pretrain_cmd(corpus, out, "--max-steps", "100000", *extra), cwd=REPO,
                                    env=cli_env(), capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, (extra, second.stderr)
            [line] = second.stderr.strip().splitlines()
            assert line.startswith(f"error: --out {out} is in use by process {first.pid} (python")
            assert "-m train.pretrain --corpus" in line
            assert line.endswith("; wait for it to finish (or stop it), or choose another --out (nothing was changed)")
            assert metrics_steps(out)[:len(before)] == before  # nothing truncated, the first still writing
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr
    assert not (out / LOCK_NAME).exists()
    steps = metrics_steps(out)
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one writer: no interleaved lines


def test_explain_plot_never_overwrites_a_users_picture(tmp_path, capsys):
    from minibert.explain import main as explain_main

    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "attention_layer0_head0.png").write_bytes(b"my picture")
    assert explain_main(["--plot", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --plot {mine} is not empty") and err.count("\n") == 1
    assert tree(mine) == {"attention_layer0_head0.png": b"my picture"}
    plots = tmp_path / "plots"
    for _ in range(2):  # a folder of its own plots is rewritten
        assert explain_main(["--plot", str(plots)]) == 0
        capsys.readouterr()
    assert {p.name for p in plots.iterdir()} >= {"attention_layer0_head0.png", RUN_MARKER}
