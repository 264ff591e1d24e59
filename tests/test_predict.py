"""train.predict on saved fine-tuning runs, and the Hugging Face export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_finetune_helpers import make_pretrain_run, review_rows, run_cli, write_rows
from train import finetune as ft
from train import predict
from train.batches import collate, encode_examples
from train.finetune_data import Columns, load_task
from train.classifier import load_classifier

LABELS = ["bad", "good"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    make_pretrain_run(root / "runs")
    write_rows(root / "data.csv", review_rows(60, labels=LABELS))
    return root


def finetune(root: Path, name: str, *args: str) -> Path:
    out = root / name
    code = ft.main(["--runs-dir", str(root / "runs"), "--train", str(root / "data.csv"), "--out", str(out),
                    "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--dropout", "0", *args])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def pooler_run(workspace) -> Path:
    return finetune(workspace, "ft-pooler", "--pooling", "pooler")


@pytest.fixture(scope="module")
def fusion_run(workspace) -> Path:
    return finetune(workspace, "ft-fusion", "--strategy", "layer-fusion", "--pooling", "mean")


@pytest.mark.parametrize("which", ["pooler_run", "fusion_run"])
def test_saved_run_reproduces_its_test_accuracy_with_string_labels(which, workspace, request):
    run = request.getfixturevalue(which)
    results = json.loads((run / "results.json").read_text())
    task = load_task(str(workspace / "data.csv"), columns=Columns())
    predictor = predict.Predictor(run)
    out = predictor.predict([e.text for e in task.test])
    assert {r["label"] for r in out} <= set(LABELS)
    accuracy = np.mean([r["label"] == LABELS[e.label] for r, e in zip(out, task.test)])
    assert accuracy == pytest.approx(results["test"]["accuracy"])
    for r in out:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["probability"] == max(r["probabilities"].values())


def test_predict_cli_prints_json_with_labels(pooler_run, tmp_path):
    result = run_cli("train.predict", str(pooler_run), "很好很满意", "太差了很失望", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["text"] for r in out] == ["很好很满意", "太差了很失望"]
    assert all(r["label"] in LABELS and set(r["probabilities"]) == set(LABELS) for r in out)


def test_predict_from_file_prints_a_table(pooler_run, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("很好\n\n太差\n", encoding="utf-8")
    assert predict.main([str(pooler_run), "--file", str(texts)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in LABELS and lines[1].endswith("太差")


def test_predict_errors_exit_2(pooler_run, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好\n".encode() + "差".encode("gbk") + b"\n")
    cases = [
        ([str(pooler_run), "--file", str(bad)], "bad.txt, line 2"),
        ([str(tmp_path / "nope"), "x"], "no such run directory"),
        ([str(tmp_path), "x"], "no finetune.json"),
        ([str(pooler_run)], "nothing to do"),
    ]
    for args, expected in cases:
        assert predict.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, err


def test_hf_export_loads_in_transformers_with_the_same_logits(pooler_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    assert predict.main([str(pooler_run), "--export-hf", str(hf_dir)]) == 0
    hf, info = transformers.BertForSequenceClassification.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == dict(enumerate(LABELS))
    hf.eval()
    classifier, meta = load_classifier(pooler_run)
    predictor = predict.Predictor(pooler_run)
    data = predictor.encode(["很好很满意的东西", "差", "物流太慢了不满意质量也差"])
    batch = collate(data, range(3), predictor.tok.pad_token_id)
    with torch.no_grad():
        ours = classifier(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)


def test_hf_export_refuses_a_custom_head(fusion_run, tmp_path, capsys):
    assert predict.main([str(fusion_run), "--export-hf", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "--pooling pooler" in err and "layer fusion" in err
    assert not (tmp_path / "hf").exists()


def test_sentence_pair_model_takes_tab_separated_inputs(workspace, tmp_path):
    rows = [{"q": r["text"], "a": r["text"][::-1], "y": r["label"]} for r in review_rows(30, labels=LABELS)]
    data = write_rows(tmp_path / "pairs.tsv", rows)
    out = tmp_path / "ft-pairs"
    assert ft.main(["--init", str(workspace / "runs" / "pretrain-20240101-000000"), "--train", str(data),
                    "--text-column", "q", "--text-pair-column", "a", "--label-column", "y", "--out", str(out),
                    "--epochs", "1", "--batch-size", "8"]) == 0
    predictor = predict.Predictor(out)
    encoded = predictor.encode(["很好\t好很"])
    assert encoded.token_type_ids[0] == [0, 0, 0, 0, 1, 1, 1]
    assert predictor.predict(["很好\t好很"])[0]["label"] in LABELS
    with pytest.raises(Exception, match="sentence pairs"):
        predictor.predict(["no tab here"])
    # The encoding at training time is the same as at prediction time.
    task = load_task(str(data), columns=Columns("q", "a", "y"))
    e = task.test[0]
    assert encode_examples(predictor.tok, [e], 64).input_ids == predictor.encode([f"{e.text}\t{e.text_pair}"]).input_ids


def test_rotary_model_reproduces_its_accuracy_and_refuses_hf_export(tmp_path, capsys):
    make_pretrain_run(tmp_path / "runs", position_embedding_type="rotary")
    write_rows(tmp_path / "data.csv", review_rows(60, labels=LABELS))
    run = finetune(tmp_path, "ft-rotary", "--pooling", "pooler")
    results = json.loads((run / "results.json").read_text())
    task = load_task(str(tmp_path / "data.csv"), columns=Columns())
    predictor = predict.Predictor(run)
    out = predictor.predict([e.text for e in task.test])
    accuracy = np.mean([r["label"] == LABELS[e.label] for r, e in zip(out, task.test)])
    assert accuracy == pytest.approx(results["test"]["accuracy"])
    assert predict.main([str(run), "--export-hf", str(tmp_path / "hf")]) == 2
    assert "rotary positions have no Hugging Face BERT equivalent" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
