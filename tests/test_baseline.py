"""train.baseline: the TF-IDF + logistic regression baseline, chosen on validation, on train.finetune's data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_finetune_helpers import make_pretrain_run, review_rows, write_rows
from train import baseline as bl

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

    data = str(write_rows(tmp_path / "data.csv", review_rows(100, labels=("a", "b", "c"))))
    run = make_pretrain_run(tmp_path / "runs")
    seen = []
    encode = ft.encode_examples
    monkeypatch.setattr(ft, "encode_examples", lambda tok, examples, n: seen.append(list(examples)) or
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
