"""train.baseline: the TF-IDF + logistic regression baseline, chosen on validation, on train.finetune's data; and
with --task ner the CRF of train.ner_crf on the named-entity data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_finetune_helpers import REPO, cli_env, make_pretrain_run, review_rows, write_rows
from train import baseline as bl
from train import ner_crf
from train.ner_metrics import ner_report

SMALL_GRID = ["--ngram-max", "1", "2", "--c-values", "0.1", "1", "10"]


@pytest.fixture
def files(tmp_path):
    """Separate train / validation / test files of short two-label reviews."""
    rows = review_rows(120, seed=3)
    return {split: str(write_rows(tmp_path / f"{split}.csv", part))
            for split, part in (("train", rows[:80]), ("validation", rows[80:100]), ("test", rows[100:]))}


def run_main(tmp_path, name, *args):
    out = tmp_path / name
    assert bl.main(["--out", str(out), *args]) == 0
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def split_args(files):
    return ["--train", files["train"], "--validation", files["validation"], "--test", files["test"]]


@given(st.lists(st.text(alphabet="ab cD好不", min_size=1, max_size=12), min_size=2, max_size=8),
       st.integers(1, 3), st.booleans())
def test_features_cut_from_one_count_equal_tfidf_vectorizer(texts, n, sublinear):
    from sklearn.feature_extraction.text import TfidfVectorizer

    counts = bl.NgramCounts(texts, 3)
    features = bl.Features.fit(counts, n, sublinear)
    reference = TfidfVectorizer(analyzer="char", ngram_range=(1, n), sublinear_tf=sublinear)
    expected = reference.fit_transform(texts)
    assert features.train.shape == expected.shape
    np.testing.assert_allclose(features.train.toarray(), expected.toarray(), rtol=1e-12, atol=1e-12)
    unseen = ["aD 好", "zz"]
    np.testing.assert_allclose(features.transform(counts.counts(unseen)).toarray(),
                               reference.transform(unseen).toarray(), rtol=1e-12, atol=1e-12)


def test_the_choice_is_made_on_validation_and_test_labels_cannot_change_it(tmp_path, files):
    first = run_main(tmp_path, "first", *split_args(files), *SMALL_GRID)
    # The best validation score wins; a tie goes to the earlier setting of the grid.
    scores = [g["validation"]["macro_f1"] for g in first["grid"]]
    chosen = first["grid"][int(np.argmax(scores))]
    assert {k: first["chosen"][k] for k in ("ngram_range", "sublinear_tf", "C")} == \
        {k: chosen[k] for k in ("ngram_range", "sublinear_tf", "C")}
    assert first["validation"]["macro_f1"] == max(scores)
    # Flip every test label: the grid and the choice stay, the test score turns into its complement.
    rows = [{"text": r["text"], "label": "positive" if r["label"] == "negative" else "negative"}
            for r in review_rows(120, seed=3)[100:]]
    flipped = {**files, "test": str(write_rows(tmp_path / "flipped.csv", rows))}
    second = run_main(tmp_path, "second", *split_args(flipped), *SMALL_GRID)
    assert second["grid"] == [{**g, "seconds": s["seconds"]} for g, s in zip(first["grid"], second["grid"])]
    assert second["chosen"] == first["chosen"]
    assert second["test"]["accuracy"] == pytest.approx(1 - first["test"]["accuracy"])


def test_results_json_and_tables(tmp_path, files, capsys):
    results = run_main(tmp_path, "out", *split_args(files))
    assert len(results["grid"]) == 3 * 2 * 4  # the default grid: (1,2),(1,3),(1,4) x sublinear x C
    assert {tuple(g["ngram_range"]) for g in results["grid"]} == {(1, 2), (1, 3), (1, 4)}
    assert {g["C"] for g in results["grid"]} == {1.0, 3.0, 10.0, 30.0}
    for key in ("task", "label_names", "sizes", "label_counts", "options", "chosen", "grid", "validation", "test"):
        assert key in results, key
    assert results["label_names"] == ["negative", "positive"]
    assert results["sizes"] == {"train": 80, "validation": 20, "test": 20}
    assert sum(results["label_counts"]["train"].values()) == 80
    for split in ("validation", "test"):
        report = results[split]
        assert set(report) >= {"loss", "accuracy", "macro_f1", "per_class", "confusion_matrix", "n"}
        assert sum(map(sum, report["confusion_matrix"])) == results["sizes"][split] == report["n"]
        assert report["loss"] > 0
    printed = capsys.readouterr().out
    assert "test (scored once, chosen setting)" in printed and "confusion matrix" in printed


def test_several_seeds_are_summarised_and_agree(tmp_path, files):
    results = run_main(tmp_path, "out", *split_args(files), *SMALL_GRID, "--seeds", "0", "1")
    assert set(results["runs"]) == {"0", "1"}
    summary = results["summary"]["test"]["accuracy"]
    assert summary["n"] == 2 and summary["std"] == 0.0  # lbfgs is deterministic
    assert results["runs"]["0"]["chosen"] == results["runs"]["1"]["chosen"]


def test_train_examples_draw_is_train_finetune_s(tmp_path, monkeypatch):
    """Same options, same training examples in the same order: caught where train.finetune encodes them."""
    from train import finetune as ft
    from train import finetune_tasks

    data = str(write_rows(tmp_path / "data.csv", review_rows(100, labels=("a", "b", "c"))))
    run = make_pretrain_run(tmp_path / "runs")
    seen = []
    encode = finetune_tasks.encode_examples
    monkeypatch.setattr(finetune_tasks, "encode_examples", lambda tok, examples, n: seen.append(list(examples)) or
                        encode(tok, examples, n))
    ft.run(ft.Options(init=str(run), train=data, train_examples=25, split_seed=4, epochs=1, batch_size=8,
                      max_length=16, out=str(tmp_path / "ft")))
    finetune_train = seen[0]
    ours = bl.load_data(bl.BaselineOptions(train=data, train_examples=25, split_seed=4))
    assert len(ours.train) == 25 and ours.train == finetune_train
    assert (ours.validation, ours.test) == (seen[1], seen[2])
    other = bl.load_data(bl.BaselineOptions(train=data, train_examples=25, split_seed=5))
    assert other.train != finetune_train  # another seed, another draw


def test_bad_column_exits_2_naming_the_columns(tmp_path, files, capsys):
    out = tmp_path / "out"
    code = bl.main(["--out", str(out), "--train", files["train"], "--text-column", "review"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'review'" in err and "'text'" in err and "--text-column" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--train-examples", "1"], "--train-examples 1"),
    (["--c-values", "0"], "--c-values"),
    (["--seeds", "1", "1"], "--seeds"),
])
def test_other_bad_input_exits_2(tmp_path, files, capsys, args, message):
    assert bl.main(["--out", str(tmp_path / "out"), "--train", files["train"], *args]) == 2
    assert message in capsys.readouterr().err


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        bl.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--train", "--validation", "--test", "--text-column", "--text-pair-column",
                 "--label-column", "--split-seed", "--train-examples", "--ngram-max", "--c-values", "--metric",
                 "--seeds"):
        assert flag in text, flag


# -- --task ner: the CRF of train.ner_crf -------------------------------------------------------------------

ONE_SETTING = ["--c1-values", "0.05", "--c2-values", "0.1"]
SURNAMES, GIVEN, PLACES, FILLER = "张王李赵孙", "伟芳军华明", "京沪川粤浙", "的了是在有我他这个们说到"


def tagged_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences of filler characters, person names (a surname and a given name) and provinces (a place and 省)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 5)):
            kind = rng.choice(["O", "O", "PER", "LOC"])
            if kind == "PER":
                tokens += [rng.choice(SURNAMES), rng.choice(GIVEN)]
                tags += ["B-PER", "I-PER"]
            elif kind == "LOC":
                tokens += [rng.choice(PLACES), "省"]
                tags += ["B-LOC", "I-LOC"]
            else:
                k = rng.randint(1, 3)
                tokens += [rng.choice(FILLER) for _ in range(k)]
                tags += ["O"] * k
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences) -> str:
    path.write_text("".join("".join(f"{t} {g}\n" for t, g in zip(*s)) + "\n" for s in sentences), encoding="utf-8")
    return str(path)


def sentences_of(pairs):
    from train.ner_data import Sentence

    return [Sentence(tuple(t), tuple(g)) for t, g in pairs]


@pytest.fixture
def ner_files(tmp_path):
    pairs = tagged_sentences(140, seed=1)
    return {split: write_conll(tmp_path / f"{split}.conll", part)
            for split, part in (("train", pairs[:100]), ("validation", pairs[100:120]), ("test", pairs[120:]))}


def test_token_features_by_hand():
    f = ner_crf.token_features(["在", "1", "a", "，", "京"])
    assert f[1] == ["bias", "w[0]=1", "w[-2]=<s>", "w[-1]=在", "w[+1]=a", "w[+2]=，",
                    "w[-2:-1]=<s>|在", "w[-1:+0]=在|1", "w[+0:+1]=1|a", "w[+1:+2]=a|，", "digit"]
    assert "sentence_begin" in f[0] and "sentence_begin" not in f[1] and "sentence_end" in f[4]
    assert "ascii_letters" in f[2] and "punctuation" in f[3]
    assert f[4][2:6] == ["w[-2]=a", "w[-1]=，", "w[+1]=</s>", "w[+2]=</s>"]
    only = ner_crf.token_features(["X"])[0]
    assert "sentence_begin" in only and "sentence_end" in only and "ascii_letters" in only
    assert ner_crf.token_features([]) == []


def test_the_crf_learns_entities_and_leaves_no_model_file(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the model file is written
    train, test = sentences_of(tagged_sentences(60, 2)), sentences_of(tagged_sentences(30, 3))
    model, iterations = ner_crf.CrfTrainer(train).fit(0.0, 0.1, 50)
    assert 1 <= iterations <= 50
    predicted = model.predict(test)
    assert [len(p) for p in predicted] == [len(s.tokens) for s in test]
    assert ner_report([s.tags for s in test], predicted)["f1"] == 1.0
    assert list(scratch.iterdir()) == []  # the temporary model file and its directory are gone
    assert model.info()["state_features"] > 0


def test_a_fit_does_not_inherit_the_previous_fit_s_settings():
    train = sentences_of(tagged_sentences(40, 4))
    reused = ner_crf.CrfTrainer(train)
    reused.fit(0.5, 1.0, 3)
    model, iterations = reused.fit(0.0, 0.1, None)  # no cap: runs until converged, not the 3 of before
    fresh_model, fresh_iterations = ner_crf.CrfTrainer(train).fit(0.0, 0.1, None)
    assert iterations == fresh_iterations > 3
    assert model.data == fresh_model.data


def test_the_default_grid_is_smaller_for_many_sentences():
    small = ner_crf.grid_settings(None, None, ner_crf.LARGE_TRAIN)
    assert [(g["c1"], g["c2"]) for g in small] == [(c1, c2) for c1 in (0, 0.05, 0.2) for c2 in (0.01, 0.1, 1)]
    large = ner_crf.grid_settings(None, None, ner_crf.LARGE_TRAIN + 1)
    assert [(g["c1"], g["c2"]) for g in large] == [(0, 0.01), (0, 0.1), (0.05, 0.01), (0.05, 0.1)]
    given = ner_crf.grid_settings([0.3, 0.0], [2.0], 10**6)  # given values: sorted, whatever the size
    assert [(g["c1"], g["c2"]) for g in given] == [(0.0, 2.0), (0.3, 2.0)]


def run_ner(tmp_path, name, *args):
    out = tmp_path / name
    assert bl.main(["--task", "ner", "--out", str(out), *args]) == 0
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_ner_choice_is_made_on_validation_and_test_tags_cannot_change_it(tmp_path, ner_files):
    grid = ["--c1-values", "0", "3", "--c2-values", "0.01", "30", "--max-iterations", "30"]
    first = run_ner(tmp_path, "first", *split_args(ner_files), *grid)
    assert [(g["c1"], g["c2"]) for g in first["grid"]] == [(0, 0.01), (0, 30), (3, 0.01), (3, 30)]
    scores = [g["validation"]["f1"] for g in first["grid"]]
    best = first["grid"][int(np.argmax(scores))]  # the first of the best: a tie keeps the earlier setting
    assert (first["chosen"]["c1"], first["chosen"]["c2"]) == (best["c1"], best["c2"])
    assert first["validation"]["f1"] == max(scores) > min(scores)
    # The test split with every PER and LOC swapped: the grid and the choice stay, the test score collapses.
    swap = {"B-PER": "B-LOC", "I-PER": "I-LOC", "B-LOC": "B-PER", "I-LOC": "I-PER", "O": "O"}
    swapped = [(t, [swap[g] for g in tags]) for t, tags in tagged_sentences(140, seed=1)[120:]]
    files = {**ner_files, "test": write_conll(tmp_path / "swapped.conll", swapped)}
    second = run_ner(tmp_path, "second", *split_args(files), *grid)
    assert second["grid"] == [{**g, "seconds": s["seconds"]} for g, s in zip(first["grid"], second["grid"])]
    assert second["chosen"] == first["chosen"] and second["validation"] == first["validation"]
    assert first["test"]["f1"] > 0.9 and second["test"]["f1"] < 0.1


def test_ner_draws_are_subsample_ner_train_s(tmp_path, monkeypatch):
    """Without --seeds the draw is --split-seed's (every command's); with --seeds, seed S draws with S."""
    from train.ner_data import load_ner_task, subsample_ner_train

    data = write_conll(tmp_path / "all.conll", tagged_sentences(200, seed=5))
    seen = []
    real = ner_crf.run_draw
    monkeypatch.setattr(ner_crf, "run_draw", lambda train, *a, **k: seen.append(list(train)) or real(train, *a, **k))
    one = run_ner(tmp_path, "one", "--train", data, "--train-examples", "30", "--split-seed", "3", *ONE_SETTING)
    task = load_ner_task(data, None, None, 3)
    assert seen == [subsample_ner_train(task, 30, 3).train] and one["seed"] == 3
    assert one["sizes"] == {"train": 30, "validation": len(task.validation), "test": len(task.test)}
    seen.clear()
    several = run_ner(tmp_path, "several", "--train", data, "--train-examples", "30", "--split-seed", "3",
                      "--seeds", "5", "7", *ONE_SETTING)
    assert seen == [subsample_ner_train(task, 30, s).train for s in (5, 7)] and seen[0] != seen[1]
    assert set(several["runs"]) == {"5", "7"} and set(several["entity_counts"]["train"]) == {"5", "7"}
    summary = several["summary"]["test"]["f1"]
    assert summary["n"] == 2 and summary["values"] == [several["runs"][s]["test"]["f1"] for s in ("5", "7")]


def test_ner_seeds_without_a_draw_fit_once(tmp_path, ner_files, monkeypatch):
    calls = []
    real = ner_crf.run_draw
    monkeypatch.setattr(ner_crf, "run_draw", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = run_ner(tmp_path, "out", *split_args(ner_files), *ONE_SETTING, "--seeds", "0", "1", "2")
    assert len(calls) == 1  # the same sentences every time, and the fit is deterministic
    assert results["summary"]["validation"]["f1"]["std"] == 0.0 and results["summary"]["test"]["f1"]["n"] == 3


def test_ner_builtin_results_json_and_tables(tmp_path, capsys):
    results = run_ner(tmp_path, "out", "--train-examples", "50", *ONE_SETTING, "--max-iterations", "20")
    assert results["sizes"]["train"] == 50 and results["sizes"]["validation"] > 1000
    assert results["label_names"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert results["options"]["task"] == "ner" and "People's Daily" in results["task"]
    assert (results["chosen"]["c1"], results["chosen"]["c2"]) == (0.05, 0.1) and len(results["grid"]) == 1
    assert results["grid"][0]["iterations"] <= 20
    for split in ("validation", "test"):
        report = results[split]
        assert 0 < report["f1"] < 1 and set(report["per_type"]) == {"LOC", "ORG", "PER"}  # the curve reads test.f1
        assert report["entities"]["gold"] == sum(results["entity_counts"][split].values())
    printed = capsys.readouterr()
    assert "test (scored once, chosen setting)" in printed.out and "micro" in printed.out
    assert "training on 50 of the" in printed.err


@pytest.mark.parametrize("args, needles", [
    (["--task", "ner", "--ngram-max", "2"], ["--ngram-max", "--task ner", "--task classification"]),
    (["--task", "ner", "--label-column", "tag"], ["--label-column", "--task ner"]),
    (["--task", "ner", "--metric", "accuracy"], ["--metric", "--task ner"]),
    (["--c1-values", "0.1"], ["--c1-values", "--task classification", "--task ner"]),
    (["--max-iterations", "10"], ["--max-iterations", "--task classification"]),
    (["--task", "ner", "--c1-values", "-1"], ["--c1-values", "0 or more"]),
    (["--task", "ner", "--c2-values", "inf"], ["--c2-values", "finite"]),
    (["--task", "ner", "--max-iterations", "-1"], ["--max-iterations", "between 0"]),
    (["--task", "ner", "--seeds", "2", "2"], ["--seeds", "distinct"]),
    (["--task", "ner", "--train-examples", "500"], ["--train-examples 500", "between 1 and"]),
    (["--task", "tagging"], ["--task", "invalid choice"]),
])
def test_ner_bad_options_exit_2_with_one_line(tmp_path, ner_files, capsys, args, needles):
    out = tmp_path / "out"
    with_files = [*split_args(ner_files)] if "--task" in args and "ner" in args else ["--train", ner_files["train"]]
    try:
        code = bl.main(["--out", str(out), *with_files, *args])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "validation grid" not in captured.out and not out.exists()


def test_ner_bad_data_names_file_and_line_and_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("张 B-PER\n三 I-PER\n\n在 O\n京 I-LOC\n", encoding="utf-8")
    out = tmp_path / "out"
    assert bl.main(["--task", "ner", "--out", str(out), "--train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "line 5" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_help_names_the_ner_options(capsys):
    with pytest.raises(SystemExit) as stop:
        bl.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--task", "{classification,ner}", "--c1-values", "--c2-values", "--max-iterations"):
        assert flag in text, flag


def test_sigterm_mid_fit_leaves_no_run_and_no_model_file(tmp_path):
    """A real process stopped while CRFsuite is fitting: exit 143, one line, no --out, no temporary model file."""
    scratch, out, logs = tmp_path / "tmp", tmp_path / "out", tmp_path / "logs"
    scratch.mkdir()
    logs.mkdir()
    env = {**cli_env(), "TMPDIR": str(scratch)}
    argv = [sys.executable, "-m", "train.baseline", "--task", "ner", "--out", str(out), "--train-examples", "300",
            "--max-iterations", "0", *ONE_SETTING]
    with open(logs / "stdout.txt", "w") as stdout, open(logs / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(p.name.startswith("minibert-crf-") for p in scratch.iterdir()):  # the fit has begun
            assert process.poll() is None, (logs / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the fit never began"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=300) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert (logs / "stderr.txt").read_text().strip().splitlines()[-1] == "stopped by SIGTERM"
    assert not out.exists() and list(scratch.iterdir()) == []
