"""--task ner end to end: words as token windows and back, fine-tuning, prediction, export, the curve."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from test_finetune_helpers import NEUTRAL_CHARS, make_pretrain_run
from minibert.heads import IGNORE_INDEX
from tokenizer import SentencePieceTokenizer
from tokenizer.loader import load as load_tokenizer
from tokenizer.spm_proto import without_dummy_prefix
from train import curve, finetune as ft, predict
from train.ner_encoding import encode_sentences, window_cuts, word_tags
from train.ner_metrics import entities

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PERSONS = ["好很", "满意喜", "欢快"]  # names made of characters the tiny vocabulary has
PLACES = ["便宜", "棒赞优"]


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Neutral characters with a person and a place name in them, as characters and BIO tags."""
    chars, tags = [], []
    for kind, names in (("PER", PERSONS), ("LOC", PLACES)):
        filler = [rng.choice(NEUTRAL_CHARS) for _ in range(rng.randint(1, 4))]
        chars += filler
        tags += ["O"] * len(filler)
        name = rng.choice(names)
        chars += list(name)
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
    return chars, tags


def write_conll(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    seen, blocks = set(), []
    while len(blocks) < n:
        chars, tags = sentence(rng)
        if "".join(chars) in seen:
            continue
        seen.add("".join(chars))
        blocks.append("".join(f"{c} {t}\n" for c, t in zip(chars, tags)))
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ner")
    return {"run": make_pretrain_run(tmp / "runs"), "data": write_conll(tmp / "ner.conll", 120), "tmp": tmp}


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> SentencePieceTokenizer:
    """A small unigram SentencePiece model, whose pieces span several characters."""
    from train.builtin_data import people_daily_lines

    tmp = tmp_path_factory.mktemp("spm")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(people_daily_lines()[:400]) + "\n", encoding="utf-8")
    return SentencePieceTokenizer.train(corpus, 3000, tmp / "tok", verbose=False)


# -- words as tokens --------------------------------------------------------------------------------------------


def test_characters_are_tokenized_as_inside_running_text(spm):
    text = "江泽民在北京会见了新华社记者"
    assert any(len(p.lstrip("▁")) > 1 for p in spm.tokenize(text))  # the tokenizer merges characters in a text...
    pieces = [[spm.id_to_token(i) for i in ids] for ids in spm.encode_words(list(text))]
    assert ["".join(p) for p in pieces] == list(text)  # ...but each character alone is its own, without "▁"
    spaced = spm.encode_words(["北京", "记者"], " ")
    assert [spm.id_to_token(ids[0]).startswith("▁") for ids in spaced] == [True, True]
    assert spm.encode_words([" "]) == [[spm.unk_token_id]]  # a word with no piece is [UNK], never lost


def test_the_model_without_its_dummy_prefix_is_the_same_model_otherwise(spm):
    import sentencepiece

    inside = sentencepiece.SentencePieceProcessor()
    inside.LoadFromSerializedProto(without_dummy_prefix(spm._proto))
    assert inside.get_piece_size() == spm.vocab_size
    assert inside.encode("北京", out_type=str)[0] != "▁"
    assert inside.decode(inside.encode("中国人民")) == "中国人民"


def test_window_cuts_prefer_sentence_ends_then_pauses_and_cover_every_word():
    words = list("一二三。四五，六七八九十")
    assert window_cuts(words, [1] * len(words), 6) == [(0, 4), (4, 7), (7, 12)]
    assert window_cuts(words, [1] * len(words), 100) == [(0, 12)]
    assert window_cuts(list("一二三四五"), [1, 1, 9, 1, 1], 4) == [(0, 2), (2, 3), (3, 5)]  # a long word alone


def test_labels_sit_on_first_pieces_and_predictions_come_back_per_character(spm):
    rng = random.Random(3)
    sentences, tags = [], []
    for _ in range(20):
        chars, t = sentence(rng)
        sentences.append(chars * 6)  # long enough to need several windows
        tags.append(t * 6)
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    ids = {n: i for i, n in enumerate(names)}
    windows = encode_sentences(spm, sentences, tags, ids, max_length=16, joiner="")
    assert max(windows.lengths) <= 16 and len(windows) > len(sentences)
    for w in range(len(windows)):
        first = [t for t, word in enumerate(windows.word_ids[w]) if word is not None and
                 (t == 0 or windows.word_ids[w][t - 1] != word)]
        labelled = np.flatnonzero(windows.labels[w] != IGNORE_INDEX).tolist()
        assert labelled == first  # one label per word, on its first piece
    # Logits that put each window's gold label on every token give back the gold tags, character for character.
    logits = []
    for w in range(len(windows)):
        lg = np.zeros((len(windows.input_ids[w]), len(names)), dtype=np.float32)
        for t, y in enumerate(windows.labels[w]):
            if y != IGNORE_INDEX:
                lg[t, y] = 1
        logits.append(lg)
    assert word_tags(logits, windows, names) == [list(t) for t in tags]


# -- fine-tuning, prediction, export ------------------------------------------------------------------------------


def test_finetune_ner_end_to_end_then_predict_and_export(setup, tmp_path, capsys):
    out = tmp_path / "ner"
    code = ft.main(["--task", "ner", "--init", str(setup["run"]), "--train", str(setup["data"]), "--out", str(out),
                    "--epochs", "12", "--batch-size", "8", "--lr", "3e-3", "--dropout", "0"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["label_names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert results["options"]["metric"] == "f1"
    assert sum(results["sizes"].values()) == 120  # sentences; the windows a model reads counted beside them
    assert results["windows"]["train"] >= results["sizes"]["train"]
    test = results["test"]
    assert set(test) >= {"loss", "precision", "recall", "f1", "per_type", "token_accuracy", "entities"}
    assert test["f1"] > 0.8  # names of fixed characters among neutral ones: easy to learn
    assert "micro" in printed and "F1" in printed
    assert json.loads((out / "finetune.json").read_text())["task"] == "ner"
    # Prediction: the entities of a new text, with their characters.
    text = "的是" + PERSONS[0] + "了我" + PLACES[0] + "这"
    assert predict.main([str(out), text, "--jsonl"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert len(row["tags"]) == len(text)
    assert {(e["type"], e["text"]) for e in row["entities"]} == {("PER", PERSONS[0]), ("LOC", PLACES[0])}
    # Export: transformers' AutoModelForTokenClassification gives the run's logits.
    transformers = pytest.importorskip("transformers")
    assert predict.main([str(out), "--export-hf", str(tmp_path / "hf")]) == 0
    assert "AutoModelForTokenClassification" in capsys.readouterr().err
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.id2label[3] == "B-PER"
    mine = predict.Predictor(out)
    ids = [mine.tok.cls_token_id, *sum(mine.tok.encode_words(list(text)), []), mine.tok.sep_token_id]
    with torch.no_grad():
        expected = mine.classifier(torch.tensor([ids]))
        got = hf(torch.tensor([ids])).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("more, message", [
    (["--token-dropout", "0.1"], "--token-dropout"),
    (["--strategy", "layer-fusion"], "layer-fusion"),
    (["--metric", "accuracy"], "--metric accuracy is not a score of --task ner"),
])
def test_options_that_ner_has_no_use_for_are_refused(setup, tmp_path, capsys, more, message):
    code = ft.main(["--task", "ner", "--init", str(setup["run"]), "--train", str(setup["data"]),
                    "--out", str(tmp_path / "x"), *more])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ner_curve_scores_entity_f1_with_the_crf_baseline(setup, capsys):
    pytest.importorskip("pycrfsuite")
    out = setup["tmp"] / "curve"
    code = curve.main(["--task", "ner", "--out", str(out), "--init", str(setup["run"]), "--labels", "tiny",
                       "--train", str(setup["data"]), "--budgets", "30", "--seeds", "0", "--epochs", "2",
                       "--no-scratch", "--finetune-args", "--batch-size 8 --eval-batch-size 64",
                       "--baseline-args", "--c1-values 0.05 --c2-values 0.01"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "curve.json").read_text())
    assert record["task_kind"] == "ner"
    assert set(record["cells"]) == {"tiny-n30-s0", "baseline-n30-s0"}
    for cell in record["cells"].values():
        assert 0 <= cell["f1"] <= 1 and "precision" in cell and "accuracy" not in cell
        assert "--task" in cell["args"] and cell["train_examples"] == 30  # sentences, not windows
    table = (out / "curve.md").read_text()
    assert "Test entity F1 (%)" in table and "CRF" in table
    assert (out / "curve.png").is_file()


def test_entities_of_predicted_tags_follow_the_conll_rule():
    assert entities(["O", "I-PER", "I-PER", "B-LOC", "I-PER"]) == [("PER", 1, 3), ("LOC", 3, 4), ("PER", 4, 5)]


def test_a_rotary_token_classifier_exports_as_roformer_for_token_classification(setup, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    run = make_pretrain_run(tmp_path / "runs", position_embedding_type="rotary")
    out = tmp_path / "ner"
    assert ft.main(["--task", "ner", "--init", str(run), "--train", str(setup["data"]), "--out", str(out),
                    "--epochs", "1", "--batch-size", "16"]) == 0
    capsys.readouterr()
    assert predict.main([str(out), "--export-hf", str(tmp_path / "hf")]) == 0
    assert "RoFormerForTokenClassification" in capsys.readouterr().err
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "RoFormerForTokenClassification"
    mine = predict.Predictor(out)
    rows = [list("的是好很了我便宜"), list("满意喜这个")]
    ids = [[mine.tok.cls_token_id, *sum(mine.tok.encode_words(r), []), mine.tok.sep_token_id] for r in rows]
    width = max(map(len, ids))
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in ids])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in ids])[:, None]).long()
    with torch.no_grad():
        expected = mine.classifier(input_ids, mask)
        got = hf(input_ids=input_ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
