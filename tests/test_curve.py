"""train.curve: the learning curve over (model, budget, seed) cells, each its own process, resumable."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from test_finetune_helpers import cli_env, make_pretrain_run, review_rows, write_rows
from train import curve


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("curve")
    return {"run": str(make_pretrain_run(tmp / "runs")), "data": str(write_rows(tmp / "data.csv", review_rows(60))),
            "tmp": tmp}


def curve_args(setup, out, *more) -> list[str]:
    return ["--out", str(out), "--init", setup["run"], "--labels", "tiny", "--train", setup["data"],
            "--budgets", "all", "12", "--seeds", "0", "--epochs", "1",
            "--finetune-args", "--batch-size 8 --max-length 24 --eval-batch-size 64",
            "--baseline-args", "--ngram-max 2 --c-values 1", "--no-scratch", *more]


def ran(printed: str) -> list[str]:
    """The cells a run started: '[i/n] model budget=B seed=S ...'."""
    return re.findall(r"\[\d+/\d+\] (\S+ budget=\S+ seed=\d+) \.\.\.", printed)


def test_curve_end_to_end_resumes_where_it_stopped(setup, capsys):
    out = setup["tmp"] / "curve"
    # 1. Stop after 2 of the 4 cells (2 budgets x 1 seed x 2 models), as an interrupted curve would.
    assert curve.main(curve_args(setup, out, "--max-cells", "2")) == 0
    first = capsys.readouterr().out
    assert ran(first) == ["tiny budget=12 seed=0", "baseline budget=12 seed=0"]
    assert re.search(r"\[1/4\] tiny budget=12 seed=0 \.\.\. \d+\.\d% in \d+ s", first)
    done = json.loads((out / "curve.json").read_text())["cells"]
    assert len(done) == 2
    # A killed cell leaves a partial directory behind; the rerun starts that cell afresh.
    partial = out / "cells" / "tiny-nall-s0"
    partial.mkdir(parents=True)
    (partial / "leftover.txt").write_text("from a killed run")
    # 2. The same command again runs only the two cells not done.
    assert curve.main(curve_args(setup, out)) == 0
    second = capsys.readouterr().out
    assert ran(second) == ["tiny budget=all seed=0", "baseline budget=all seed=0"]
    assert second.count(": done before") == 2
    assert not (partial / "leftover.txt").exists() and (partial / "results.json").is_file()
    record = json.loads((out / "curve.json").read_text())
    cells = record["cells"]
    assert len(cells) == 4 and all(cells[name] == done[name] for name in done)  # the done cells were not rerun
    for name, cell in cells.items():
        assert set(cell) >= {"accuracy", "macro_f1", "seconds", "model", "budget", "seed", "args"}
        assert 0 <= cell["accuracy"] <= 1 and cell["seconds"] > 0
        assert (out / cell["dir"] / "results.json").is_file()
    # Every model of a budget trained on the same number of examples: 12 drawn, or all 48 of the 80% split.
    assert {c["train_examples"] for c in cells.values() if c["budget"] == "12"} == {12}
    assert {c["train_examples"] for c in cells.values() if c["budget"] == "all"} == {48}
    table = (out / "curve.md").read_text()
    assert "| training labels | tiny | baseline |" in table
    # One seed: the mean alone, since a single value has no sample spread to show.
    assert re.search(r"\| 12 \| [\d.]+ \| [\d.]+ \|", table) and "±" not in table.split("### Time")[0].split("\n", 3)[3]
    assert "| 48 (all) |" in table and "Time per cell" in table
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 3. Nothing left: a rerun runs nothing; --plot-only redraws from curve.json alone.
    (out / "curve.png").unlink()
    (out / "curve.md").unlink()
    assert curve.main(["--plot-only", "--out", str(out)]) == 0
    assert (out / "curve.png").is_file() and (out / "curve.md").read_text() == table
    # 4. Another recipe in the same directory is refused before anything runs.
    capsys.readouterr()
    changed = curve_args(setup, out)
    changed[changed.index("--epochs") + 1] = "2"
    assert curve.main(changed) == 2
    assert "use a new --out" in capsys.readouterr().err


def plan_for(*argv, n_train=13891):
    o = curve.parse_options(list(argv))
    models = [curve.Model("mlm", "pretrained", "runs/a"), curve.Model("electra", "pretrained", "runs/b"),
              curve.Model("scratch", "scratch", "runs/a"), curve.Model("baseline", "baseline", None)]
    return curve.plan(o, models, curve.check_budgets(o.budgets, n_train, 2), n_train)


def epochs_by_budget(cells) -> dict:
    return {c.budget: option(c, "--epochs") for c in cells if c.module == "train.finetune"}


def option(cell, flag):
    return cell.args[cell.args.index(flag) + 1] if flag in cell.args else None


def test_every_model_of_a_budget_and_seed_gets_the_same_draw():
    cells = plan_for("--budgets", "all", "1000", "500", "--seeds", "0", "1", "2", "--train", "d.csv")
    assert len(cells) == 3 * 3 * 4
    assert [c.budget for c in cells[::12]] == ["500", "1000", "all"]  # small budgets first
    for budget in ("500", "1000", "all"):
        for seed in (0, 1, 2):
            group = [c for c in cells if (c.budget, c.seed) == (budget, seed)]
            assert len(group) == 4
            for c in group:
                assert option(c, "--split-seed") == option(c, "--seeds") == str(seed)
                assert option(c, "--train-examples") == (None if budget == "all" else budget)
                assert option(c, "--train") == "d.csv"
    scratch = [c for c in cells if c.model.kind == "scratch"]
    assert all("--from-scratch" in c.args and option(c, "--init") == "runs/a" for c in scratch)
    assert all(c.module == "train.baseline" and "--epochs" not in c.args for c in cells if c.model.kind == "baseline")


def test_epochs_scale_with_the_budget_unless_given():
    assert [curve.epochs_for(n, 32) for n in (100, 500, 1000, 3000, 13891)] == [10, 10, 10, 10, 3]
    assert curve.epochs_for(13891, 8) == 3 and curve.epochs_for(3000, 8) == 3  # 375 steps per epoch
    auto = epochs_by_budget(plan_for("--budgets", "1000", "all"))
    assert auto == {"1000": "10", "all": "3"}
    given = epochs_by_budget(plan_for("--budgets", "1000", "all", "--epochs", "7", "2"))
    assert given == {"1000": "7", "all": "2"}
    batch = epochs_by_budget(plan_for("--budgets", "3000", "--finetune-args", "--batch-size 16"))
    assert batch == {"3000": "6"}  # 188 steps per epoch


@pytest.mark.parametrize("argv, message", [
    (["--finetune-args", "--epochs 3"], "--epochs, which the curve sets"),
    (["--finetune-args", "--init x"], "--init, which the curve sets"),
    (["--finetune-args", "--no-such-option 1"], "does not take"),
    (["--baseline-args", "--seeds 3"], "--seeds, which the curve sets"),
    (["--budgets", "ten"], "--budgets ten"),
    (["--budgets", "99999"], "--budgets 99999"),
    (["--epochs", "1", "2", "3"], "--epochs"),
])
def test_bad_options_exit_2_before_anything_runs(argv, message, tmp_path, capsys):
    run = make_pretrain_run(tmp_path / "runs")
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    out = tmp_path / "out"
    assert curve.main(["--out", str(out), "--init", str(run), "--train", str(data), "--budgets", "10", "all",
                       *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_directory_that_is_not_a_curve_is_left_alone(tmp_path, capsys):
    run = make_pretrain_run(tmp_path / "runs")
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert curve.main(["--out", str(tmp_path / "mine"), "--init", str(run), "--train", str(data),
                       "--budgets", "10"]) == 2
    assert "not a curve to resume" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_labels_must_match_the_runs(tmp_path, capsys):
    run = make_pretrain_run(tmp_path / "runs")
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    for labels, message in ((["a", "b"], "2 name(s) for 1"), (["scratch"], "not 'scratch'"), (["a/b"], "letters")):
        assert curve.main(["--out", str(tmp_path / "o"), "--init", str(run), "--train", str(data),
                           "--budgets", "10", "--labels", *labels]) == 2
        assert message in capsys.readouterr().err


def test_init_is_repeatable_or_a_list():
    assert curve.parse_options(["--init", "a", "--init", "b", "c"]).init == ["a", "b", "c"]
    assert curve.parse_options([]).init == []


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        curve.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--budgets", "--seeds", "--init", "--labels", "--no-scratch", "--no-baseline", "--epochs",
                 "--finetune-args", "--baseline-args", "--resume", "--plot-only", "--max-cells", "--train"):
        assert flag in text, flag


def test_jobs_run_cells_at_once_with_the_same_results(setup, capsys):
    """--jobs 2 runs two cells at a time; every cell is recorded, with the same command line as one at a time."""
    one, two = setup["tmp"] / "jobs1", setup["tmp"] / "jobs2"
    assert curve.main(curve_args(setup, one, "--budgets", "12")) == 0
    capsys.readouterr()
    assert curve.main(curve_args(setup, two, "--budgets", "12", "--jobs", "2")) == 0
    printed = capsys.readouterr().out
    assert sorted(ran(printed)) == ["baseline budget=12 seed=0", "tiny budget=12 seed=0"]
    assert re.search(r"\[\d/2\] tiny budget=12 seed=0: \d+\.\d% in \d+ s", printed)
    a, b = (json.loads((d / "curve.json").read_text())["cells"] for d in (one, two))
    assert set(a) == set(b) and all(a[k]["args"] == b[k]["args"] for k in a)
    assert a["baseline-n12-s0"]["accuracy"] == b["baseline-n12-s0"]["accuracy"]  # deterministic: the same draw
    assert curve.main(curve_args(setup, setup["tmp"] / "jobs0", "--jobs", "0")) == 2
    assert "--jobs 0" in capsys.readouterr().err


# -- one curve per directory; a failed cell stops the curve, never hangs it -----------------------------------


def start_curve(argv: list[str], logs) -> subprocess.Popen:
    """`python -m train.curve` as a job of its own, its output to files in `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout.txt", "w") as stdout, open(logs / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "train.curve", *argv], env=cli_env(), stdout=stdout,
                                stderr=stderr, start_new_session=True)


def wait_for(path, text: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text(encoding="utf-8", errors="replace")):
        assert process.poll() is None, f"the curve ended (exit {process.returncode}) before {text!r}"
        assert time.monotonic() < deadline, f"no {text!r} in {path} within {timeout} s"
        time.sleep(0.05)


def no_cell_alive(out) -> bool:
    return subprocess.run(["pgrep", "-f", "--", f"--out {out}/cells"], capture_output=True).returncode == 1


def test_a_second_curve_on_the_same_directory_is_refused_and_changes_nothing(setup, tmp_path):
    """Two real curve processes on one --out: the second is refused with one line naming the directory and the
    first's process, before reading anything, and the first's running cell is left alone."""
    out = tmp_path / "curve"
    argv = curve_args(setup, out, "--budgets", "12", "--epochs", "200")
    first = start_curve(argv, tmp_path / "first")
    cell_log = out / "logs" / "tiny-n12-s0.log"
    try:
        wait_for(cell_log, "epoch 1/200", first)
        second = subprocess.run([sys.executable, "-m", "train.curve", *argv], env=cli_env(), capture_output=True,
                                text=True, timeout=180)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and second.stderr.startswith("error: "), second.stderr
        assert str(out) in second.stderr and f"in use by process {first.pid}" in second.stderr
        assert first.poll() is None  # still running its cell, whose directory is still there
        assert (out / "cells" / "tiny-n12-s0").is_dir() and cell_log.read_text().startswith("$ ")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=180)
    assert first.returncode == 143
    assert (out / "cells" / "tiny-n12-s0" / "checkpoint" / "state.pt").is_file()
    assert no_cell_alive(out)


def test_a_failed_cell_stops_the_curve_with_its_error_and_keeps_the_cells_done(setup, tmp_path):
    """A cell that fails (here: an --init run whose weights are garbage) while more cells are queued: the curve
    stops with one line holding the cell's error, exits 2 as the cell did, and keeps what finished. With --jobs 2
    the cell running beside it is stopped, and the curve ends instead of waiting forever."""
    bad = make_pretrain_run(tmp_path / "runs", "pretrain-bad")
    (bad / "model.safetensors").write_bytes(b"not safetensors at all")
    out = tmp_path / "one-at-a-time"
    argv = ["--out", str(out), "--init", setup["run"], str(bad), "--labels", "tiny", "bad",
            *curve_args(setup, out)[6:], "--no-baseline", "--budgets", "12", "all"]
    result = subprocess.run([sys.executable, "-m", "train.curve", *argv], env=cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cell bad-n12-s0 failed (exit 2): "), result.stderr
    assert "model.safetensors" in lines[0] and "bad-n12-s0.log" in lines[0]
    assert list(json.loads((out / "curve.json").read_text())["cells"]) == ["tiny-n12-s0"]  # done first, kept
    assert not (out / "logs" / "tiny-nall-s0.log").exists()  # nothing started after the failure
    # Two at a time, the failing cell first and a long one beside it.
    out = tmp_path / "two-at-a-time"
    argv = ["--out", str(out), "--init", str(bad), setup["run"], "--labels", "bad", "tiny",
            *curve_args(setup, out)[6:], "--budgets", "12", "all", "--epochs", "200", "--jobs", "2"]
    result = subprocess.run([sys.executable, "-m", "train.curve", *argv], env=cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cell bad-n12-s0 failed (exit 2): ")
    assert no_cell_alive(out)
    assert "tiny-n12-s0" not in json.loads((out / "curve.json").read_text())["cells"]  # stopped, not finished
    assert not (out / "logs" / "bad-nall-s0.log").exists()


# -- messages: one line, exit 2, before any work --------------------------------------------------------------


@pytest.mark.parametrize("content, named", [
    ("{not json", "not valid JSON"),
    ("[]", 'no "cells" object'),
    ('{"cells": {"tiny-n12-s0": {"model": "tiny"}}}', "cell 'tiny-n12-s0' has no valid"),
    ('{"cells": {"x": 3}}', "cell 'x' is not an object"),
])
def test_plot_only_names_what_is_wrong_with_a_malformed_record(tmp_path, capsys, content, named):
    from minibert.rundir import RUN_MARKER

    out = tmp_path / "curve"
    out.mkdir()
    (out / RUN_MARKER).write_text('{"kind": "curve", "written_by": "minibert", "entries": ["curve.json"]}')
    (out / "curve.json").write_text(content)
    assert curve.main(["--plot-only", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err and "curve.json" in err, err
    assert not (out / "curve.md").exists()


def test_labels_taken_from_directory_names_are_named_as_such(tmp_path, capsys):
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    a, b = make_pretrain_run(tmp_path / "a", "run"), make_pretrain_run(tmp_path / "b", "run")
    odd = make_pretrain_run(tmp_path, "my run")
    for inits, named in (([a, b], "the --init runs' directory names"), ([odd], "its directory name 'my run'")):
        argv = ["--out", str(tmp_path / "o"), "--train", str(data), "--budgets", "10"]
        assert curve.main([*argv, "--init", *map(str, inits)]) == 2
        err = capsys.readouterr().err
        assert named in err and "give --labels" in err and "--labels must" not in err, err
    assert not (tmp_path / "o").exists()


def test_bad_curve_options_and_places_exit_2_before_anything_runs(setup, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for argv, named in ((["--seeds", "-1"], "--seeds -1"),
                        (["--finetune-args", "--max-length 2"], "--finetune-args: --max-length must be at least 3"),
                        (["--baseline-args", "--c-values 0"], "--baseline-args: --c-values must be positive"),
                        (["--out", str(tmp_path / "a-file" / "curve")], "a-file is a file")):
        out = tmp_path / "out"
        code = curve.main(curve_args(setup, out, *argv) if argv[0] != "--out" else
                          curve_args(setup, argv[1]))
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and named in err, (argv, err)
        assert not out.exists()
