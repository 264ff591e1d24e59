"""SIGINT and SIGTERM sent to the long commands' real processes mid-work: fine-tuning and the learning curve.

The contract (tokenizer.command, train.signals): a signal stops the work between two steps, what was done is saved
(a fine-tuning run's last whole epoch, a curve's finished cells), one line says so, the exit status is 128 + the
signal's number, and the same command with `--resume` (fine-tuning) or again (the curve) continues with the same
figures as a run that was never stopped. Nothing half-written is left looking complete, and no child process
outlives the command. (Pretraining's signal tests are in test_faults.py, with its fixtures.)

Each child runs in its own session with SIGINT at its default (a background job of a non-interactive shell would
have it ignored). Signals sent from outside are sent after a line the child printed, never after a fixed sleep;
those that must land at one exact point are sent by the child to itself, from a wrapper around one function.
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

from test_finetune_helpers import REPO, cli_env, make_pretrain_run, review_rows, write_rows
from train import curve, finetune

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the children run on one thread too

SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("signals")
    return {"run": str(make_pretrain_run(tmp / "runs")), "data": str(write_rows(tmp / "data.csv", review_rows(60))),
            "tmp": tmp}


def start(argv: list[str], out_dir: Path) -> subprocess.Popen:
    """`python ARGV` as a job with its own session and SIGINT at its default; stdout and stderr to files in
    `out_dir` (read with `printed`), so that a long run never blocks on a full pipe."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "stdout.txt", "w") as stdout, open(out_dir / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=cli_env(), stdout=stdout, stderr=stderr,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def printed(out_dir: Path, stream: str = "stdout") -> str:
    return (out_dir / f"{stream}.txt").read_text(encoding="utf-8", errors="replace")


def wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Until `text` appears in the file `path` (which the running `process` writes)."""
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text(encoding="utf-8", errors="replace")):
        assert process.poll() is None, f"the process ended (exit {process.returncode}) before printing {text!r}"
        assert time.monotonic() < deadline, f"no {text!r} in {path} within {timeout} s"
        time.sleep(0.02)


def alive(pattern: str) -> str:
    """The command lines of the processes whose command line holds `pattern` ('' when there is none)."""
    ps = subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True)
    return ps.stdout.strip()


# -- fine-tuning ----------------------------------------------------------------------------------------------


def ft_args(setup, *more: str) -> list[str]:
    """A tiny fine-tuning run: 48 training reviews, 6 steps an epoch; dropout and token dropout on, so that a
    resumed run is exact only if every random state is restored."""
    return ["--init", setup["run"], "--train", setup["data"], "--batch-size", "8", "--max-length", "24",
            "--token-dropout", "0.1", *more]


TWO_SEEDS = ["--epochs", "2", "--seeds", "0", "1"]

# The child fine-tunes with a wrapper around one function of train.finetune, which sends it a signal at one exact
# point. argv: WHEN SIGNAL finetune-options...
#   after-epoch-1-of-seed-1: once the state after seed 1's first epoch is saved
#   first-step:              as the first epoch of the first seed begins (nothing is saved yet)
#   reading-data:            while the task is read, before the run directory is claimed
#   saving-model-twice:      two signals once the last seed's model files are written, before its results.json
SELF_SIGNAL = textwrap.dedent("""
    import os, sys
    from train import finetune, finetune_state, finetune_tasks
    when, signum = sys.argv[1], int(sys.argv[2])

    def kill(times=1):
        for _ in range(times):
            os.kill(os.getpid(), signum)

    def wrap(module, name, before=False, times=1, only=lambda *a: True):
        original = getattr(module, name)
        def wrapper(*args, **kwargs):
            if before and only(*args):
                kill(times)
            result = original(*args, **kwargs)
            if not before and only(*args):
                kill(times)
            return result
        setattr(module, name, wrapper)

    if when == "after-epoch-1-of-seed-1":
        wrap(finetune_state, "save_state", only=lambda where, *a: where.name == "seed-1" and a[-1].epoch == 1)
    elif when == "first-step":
        wrap(finetune, "train_epoch", before=True)
    elif when == "reading-data":
        wrap(finetune_tasks, "load_task", before=True)  # the classification task's reader
    elif when == "saving-model-twice":
        wrap(finetune, "save_classifier", times=2, only=lambda c, where, *a: where.name == "seed-1")
    sys.exit(finetune.main(sys.argv[3:]))
""")


def self_signalled(setup, tmp: Path, when: str, signum: int, out: Path, *args: str) -> tuple[int, str]:
    """Run the fine-tuning child that signals itself at `when`; its exit status and stderr."""
    logs = tmp / f"logs-{when}-{signum}"
    child = start(["-c", SELF_SIGNAL, when, str(int(signum)), *ft_args(setup, "--out", str(out), *args)], logs)
    child.wait(timeout=300)
    return child.returncode, printed(logs, "stderr")


def figures(results: dict) -> dict:
    """A results.json's figures by seed, every timing left out: what a resumed run must reproduce exactly."""
    runs = results.get("runs") or {str(results["seed"]): results}
    by_seed = {seed: {"epochs": [(e["epoch"], e["train_loss"], e["validation"]) for e in r["epochs"]],
                      "best_epoch": r["best_epoch"], "stopped_early": r["stopped_early"],
                      "validation": r["validation"], "test": r["test"]} for seed, r in runs.items()}
    return {"seeds": by_seed, "summary": results.get("summary")}


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def figures_of_a_whole_run(setup, name: str, *options: str) -> dict:
    """The figures of a fine-tuning run with `options` that no signal stopped."""
    out = setup["tmp"] / name
    assert finetune.main(ft_args(setup, "--out", str(out), *options)) == 0
    return figures(results_of(out))


@pytest.fixture(scope="module")
def never_stopped(setup) -> dict:
    """The 2-seed x 2-epoch run."""
    return figures_of_a_whole_run(setup, "never-stopped", *TWO_SEEDS)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_finetune_stopped_after_an_epoch_keeps_the_finished_seed_and_resumes_exactly(setup, tmp_path, signum,
                                                                                    never_stopped, capsys):
    out = tmp_path / "ft"
    code, err = self_signalled(setup, tmp_path, "after-epoch-1-of-seed-1", signum, out, *TWO_SEEDS)
    assert code == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{signum.name} received: stopped during epoch 2 of seed 1") and "--resume" in last, err
    assert "Traceback" not in err and "stopped by" not in err  # one line, the loop's own
    # Seed 0 finished; seed 1 holds its saved state and nothing that looks like a model; no run-level results yet.
    assert (out / "seed-0" / "results.json").is_file() and (out / "seed-0" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "seed-1").iterdir()) == ["checkpoint"]
    assert not (out / "results.json").exists()
    capsys.readouterr()
    assert finetune.main(["--out", str(out), "--resume"]) == 0  # the run's own options, from its args.json
    printed_out = capsys.readouterr().out
    assert "seed 0: finished before" in printed_out and "seed 1: resuming after epoch 1/2" in printed_out
    assert figures(results_of(out)) == never_stopped
    assert not (out / "seed-1" / "checkpoint").exists()  # a finished seed keeps no resumable state


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("when", ["reading-data", "first-step"])
def test_finetune_stopped_before_saving_anything_leaves_nothing(setup, tmp_path, signum, when):
    out = tmp_path / "ft"
    code, err = self_signalled(setup, tmp_path, when, signum, out, *TWO_SEEDS)
    assert code == 128 + signum, err
    assert len([ln for ln in err.splitlines() if "stopped" in ln]) == 1 and "Traceback" not in err, err
    if when == "first-step":
        assert "nothing was saved yet" in err
    assert not out.exists()  # not even the marker: the same command starts afresh


def test_finetune_model_cut_short_by_a_second_signal_is_removed_and_resume_finishes_it(setup, tmp_path,
                                                                                       never_stopped):
    """Two signals while seed 1's model is being saved: the first asks to stop, the second unwinds at once. The
    model files written so far are removed (a directory without results.json is not a finished model), the
    saved state stays, and --resume finishes the seed with the same figures."""
    out = tmp_path / "ft"
    code, err = self_signalled(setup, tmp_path, "saving-model-twice", signal.SIGTERM, out, *TWO_SEEDS)
    assert code == 143 and err.strip().splitlines()[-1] == "stopped by SIGTERM", err
    assert sorted(p.name for p in (out / "seed-1").iterdir()) == ["checkpoint"]
    assert finetune.main(["--out", str(out), "--resume"]) == 0
    assert figures(results_of(out)) == never_stopped


LONG = ["--epochs", "100", "--seeds", "3"]  # seconds of work after the first epoch: a signal finds it running


@pytest.fixture(scope="module")
def long_never_stopped(setup) -> dict:
    return figures_of_a_whole_run(setup, "long-never-stopped", *LONG)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_finetune_stopped_from_outside_mid_run_resumes_exactly(setup, tmp_path, signum, long_never_stopped):
    """A signal from another process, at whatever point the run has reached after its first epoch."""
    out, logs = tmp_path / "ft", tmp_path / "logs"
    child = start(["-m", "train.finetune", "--out", str(out), *ft_args(setup, *LONG)], logs)
    wait_for(logs / "stdout.txt", "epoch 1/100", child)
    os.kill(child.pid, signum)
    child.wait(timeout=300)
    err = printed(logs, "stderr")
    assert child.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1].startswith(f"{signum.name} received: stopped during epoch "), err
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "results.json").exists()
    assert not (out / "model.safetensors").exists()
    assert finetune.main(["--out", str(out), "--resume"]) == 0
    assert [e["epoch"] for e in results_of(out)["epochs"]] == list(range(1, 101))
    assert figures(results_of(out)) == long_never_stopped


# -- the learning curve ---------------------------------------------------------------------------------------


def curve_args(setup, out: Path, *more: str) -> list[str]:
    """One budget of 12 reviews, one seed: the tiny model's cell and then the baseline's."""
    return ["--out", str(out), "--init", setup["run"], "--labels", "tiny", "--train", setup["data"],
            "--budgets", "12", "--seeds", "0", "--no-scratch",
            "--finetune-args", "--batch-size 8 --max-length 24 --eval-batch-size 64",
            "--baseline-args", "--ngram-max 2 --c-values 1", *more]


@pytest.mark.parametrize("to, signum", [("curve", signal.SIGINT), ("curve", signal.SIGTERM),
                                        ("group", signal.SIGINT)], ids=["SIGINT", "SIGTERM", "Ctrl-C"])
def test_a_signal_stops_the_curve_and_its_running_cell_and_the_same_command_continues(setup, tmp_path, to, signum,
                                                                                      capsys):
    """A real signal to the curve alone, or to its whole process group as a Ctrl-C at a terminal sends it: the
    running cell is stopped with its epochs saved, no other starts, the curve exits 128 + N with one line, and no
    cell's process outlives it. Running the same command again resumes the cell and finishes the curve."""
    out, logs = tmp_path / "curve", tmp_path / "logs"
    argv = curve_args(setup, out, "--epochs", "200")  # a cell long enough to be interrupted
    child = start(["-m", "train.curve", *argv], logs)
    cell_log = out / "logs" / "tiny-n12-s0.log"
    wait_for(cell_log, "epoch 1/200", child)
    if to == "curve":
        os.kill(child.pid, signum)
    else:
        os.killpg(child.pid, signum)  # the child leads its own session, its cells in its group
    child.wait(timeout=180)
    err = printed(logs, "stderr")
    assert child.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signum.name}: stopped tiny-n12-s0;") and "rerun" in last, err
    assert "Traceback" not in err
    assert not alive(f"--out {out}/cells"), "a cell's process outlived the curve"
    record = json.loads((out / "curve.json").read_text())
    assert record["cells"] == {}  # neither cell finished
    assert not (out / "logs" / "baseline-n12-s0.log").exists()  # and the next one never started
    assert (out / "cells" / "tiny-n12-s0" / "checkpoint" / "state.pt").is_file()
    if to == "curve":  # asked once, the cell stopped between two steps with its own line
        assert "SIGTERM received: stopped during epoch" in cell_log.read_text()
    # The same command again: the cell resumes from its last whole epoch, then the baseline runs.
    capsys.readouterr()
    assert curve.main(argv) == 0
    again = capsys.readouterr().out
    assert "[1/2] tiny budget=12 seed=0 ... (resumed)" in again
    assert "resuming after epoch" in cell_log.read_text()
    cells = json.loads((out / "curve.json").read_text())["cells"]
    assert sorted(cells) == ["baseline-n12-s0", "tiny-n12-s0"] and cells["tiny-n12-s0"]["epochs"] == 200
    results = json.loads((out / "cells" / "tiny-n12-s0" / "results.json").read_text())
    assert [e["epoch"] for e in results["epochs"]] == list(range(1, 201))


def test_a_signal_before_any_cell_finished_leaves_a_curve_that_the_same_command_continues(setup, tmp_path):
    """Stopped while its first cell is still starting: the directory is the curve's (its marker), not something
    the rerun refuses as 'not a curve'."""
    out, logs = tmp_path / "curve", tmp_path / "logs"
    argv = curve_args(setup, out, "--epochs", "1", "--no-baseline")
    child = start(["-m", "train.curve", *argv], logs)
    wait_for(logs / "stdout.txt", "[1/1] tiny budget=12 seed=0 ...", child)
    os.kill(child.pid, signal.SIGTERM)
    child.wait(timeout=180)
    assert child.returncode == 143, printed(logs, "stderr")
    assert not alive(f"--out {out}/cells")
    assert curve.main(argv) == 0
    assert list(json.loads((out / "curve.json").read_text())["cells"]) == ["tiny-n12-s0"]
