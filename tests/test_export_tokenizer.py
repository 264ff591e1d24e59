"""The tokenizer of an --export-hf directory: `transformers.AutoTokenizer.from_pretrained` opens it and gives the ids
minibert gives (input_ids, token_type_ids, attention_mask; single texts and pairs, padded, truncated at the model's
max length), for SentencePiece unigram, bpe and char models (with and without byte fallback) and for WordPiece, on
real reviews and news lines and on texts made to be awkward; and end to end, a model fine-tuned on reviews and
exported predicts through transformers alone what `train.predict` predicts."""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tokenizer
from minibert.errors import InputError
from test_export_roformer import CODE_START, export
from test_finetune_helpers import make_pretrain_run, write_rows
from tokenizer.hf_export import TRANSFORMERS_FILES, SentencePieceModel, save_for_transformers, unsupported_reason
from train import finetune as ft
from train import predict
from train.builtin_data import people_daily_lines, review_split

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# Texts made to be awkward: runs of spaces and other whitespace, latin letters in both widths, digits, punctuation
# (ASCII and full-width), emoji (also joined and with a variation selector), characters no vocabulary holds,
# literal special-token and byte-piece names, brackets, empty and blank texts.
AWKWARD = [
    "", " ", "\t\n", "  质量  很好\t物流\u3000也快  ", "Hello World, iPhone 12 Pro Max 很好用!!", "ＨＥＬＬＯ　ｗｏｒｌｄ１２３",
    "价格 99.5 元，3 天到货；好评！！！", "😀😀 好评 👍🏻 ❤️ 👨‍👩‍👧", "[MASK] 好 [CLS][SEP][PAD][UNK] 差", "［CLS］ <0xE4> <s> </s>",
    "a[b<c]>d", "[[<<", "ǅ ﬁ ① ⑴ ㈱ ㍿", "e\u0301 café naïve", "卍卐龘靐齉 ꙮ ᚠᛇᚻ ⵜⴰ", "哈哈哈哈哈哈哈哈哈哈", "。。。。。。!!!!!!......",
    "还没有收到书111", "1111111 2222 3.14159", "x▁y ▁ z", "tab\there", "a\u200bb\u00a0c", "\x00控制\x07字符\ufffd",
]


@functools.cache
def builtin_text() -> tuple[list[str], list[str]]:
    """The People's Daily lines and the test-split reviews, read once."""
    return people_daily_lines(), [e.text for e in review_split().test]


def real_lines(n_reviews: int = 200, n_news: int = 100) -> list[str]:
    """Test-split reviews and news lines (the ones not trained on), a few hundred in all."""
    news, reviews = builtin_text()
    return reviews[:n_reviews] + news[-n_news:]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """Text to train tiny tokenizers on: news lines and training reviews, and a little English."""
    news = builtin_text()[0][:-1000]
    random.Random(0).shuffle(news)
    reviews = [e.text for e in review_split().train[:2500]]
    return news[:2500] + reviews + ["Hello World, this is English text 123 456.", "iPhone 12 Pro Max 很好用"] * 5


def train_spm(corpus: list[str], out: Path, model_type: str, byte_fallback: bool = False):
    return tokenizer.train(corpus, vocab_size=3000, out_dir=out, model_type=model_type, character_coverage=0.995,
                           byte_fallback=byte_fallback, verbose=False)


def auto_tokenizer(directory: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(directory))


def export_tokenizer(tok, directory: Path, max_length: int):
    """`tok` saved for transformers into `directory`, opened with AutoTokenizer."""
    directory.mkdir(parents=True)
    assert save_for_transformers(tok, directory, max_length) == TRANSFORMERS_FILES
    return auto_tokenizer(directory)


def scores_tie(tok_dir: Path, a: list[int], b: list[int]) -> bool:
    """Whether two segmentations are of the same text and score the same up to float32 rounding, where a unigram
    SentencePiece model (float32 sums) and `tokenizers` (float64) may choose differently (`tokenizer.hf_export`)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "spm.model"))
    if "".join(map(sp.id_to_piece, a)) != "".join(map(sp.id_to_piece, b)):
        return False
    score_a, score_b = (math.fsum(sp.get_score(i) for i in ids) for ids in (a, b))
    return abs(score_a - score_b) <= 2.0 ** -22 * (len(a) + len(b)) * max(1.0, abs(score_a))


def is_unigram(tok_dir: Path) -> bool:
    return SentencePieceModel.parse((tok_dir / "spm.model").read_bytes()).model_type == "unigram"


def compare_rows(tok_dir: Path, ours: dict, theirs: dict, may_tie: bool) -> int:
    """Row by row equality of minibert's padded batch and transformers'; returns how many rows differ (each only
    by a unigram tie, and only if `may_tie`)."""
    assert set(theirs) >= {"input_ids", "token_type_ids", "attention_mask"}
    assert theirs["input_ids"].shape == ours["input_ids"].shape
    differ = 0
    for row in range(ours["input_ids"].shape[0]):
        if all(torch.equal(ours[k][row], theirs[k][row]) for k in ("input_ids", "token_type_ids", "attention_mask")):
            continue
        differ += 1
        assert may_tie, (row, ours["input_ids"][row].tolist(), theirs["input_ids"][row].tolist())
        assert torch.equal(ours["attention_mask"][row], theirs["attention_mask"][row])
        assert torch.equal(ours["token_type_ids"][row], theirs["token_type_ids"][row])
        real = ours["attention_mask"][row].bool()
        a, b = ours["input_ids"][row][real].tolist(), theirs["input_ids"][row][real].tolist()
        assert scores_tie(tok_dir, a, b), (a, b)
    return differ


# -- SentencePiece ------------------------------------------------------------------------------------------------


SPM_KINDS = [("unigram", False), ("bpe", False), ("char", False), ("unigram", True), ("bpe", True)]


@pytest.fixture(scope="module", params=SPM_KINDS, ids=[f"{m}{'-bytes' if b else ''}" for m, b in SPM_KINDS])
def spm_export(request, corpus, tmp_path_factory):
    """(minibert's tokenizer, its directory, transformers' from the export, the max length)."""
    model_type, byte_fallback = request.param
    root = tmp_path_factory.mktemp(f"spm-{model_type}")
    tok = train_spm(corpus, root / "minibert", model_type, byte_fallback)
    return tok, root / "minibert", export_tokenizer(tok, root / "hf", 40), 40


@pytest.mark.parametrize("max_length", [None, 40, 12])
def test_single_texts_get_minibert_ids(spm_export, max_length):
    tok, tok_dir, theirs, model_max = spm_export
    texts = real_lines() + AWKWARD
    truncate = max_length or model_max
    ours = tok.encode_batch(texts, max_length=truncate)
    got = theirs(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    assert compare_rows(tok_dir, ours, got, may_tie=is_unigram(tok_dir)) <= len(texts) // 100


def test_whole_texts_get_minibert_pieces(spm_export):
    tok, tok_dir, theirs, _ = spm_export
    texts = real_lines() + AWKWARD
    plain, expected = theirs(texts, add_special_tokens=False)["input_ids"], tok.encode_plain(texts)
    mismatched = [i for i, (a, b) in enumerate(zip(plain, expected)) if a != b]
    assert not mismatched or is_unigram(tok_dir), [texts[i] for i in mismatched]
    assert all(scores_tie(tok_dir, plain[i], expected[i]) for i in mismatched)
    assert len(mismatched) <= len(texts) // 100


@pytest.mark.parametrize("max_length", [40, 9])
def test_sentence_pairs_get_minibert_ids_and_segments(spm_export, max_length):
    tok, tok_dir, theirs, _ = spm_export
    texts = real_lines(100, 50) + AWKWARD
    pairs = texts[7:] + texts[:7]
    ours = tok.encode_batch(texts, pairs, max_length=max_length)
    got = theirs(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    assert (got["token_type_ids"] == 1).any()
    assert compare_rows(tok_dir, ours, got, may_tie=is_unigram(tok_dir)) <= len(texts) // 100


def test_the_model_max_length_truncates_and_pads_as_minibert(spm_export):
    tok, _, theirs, model_max = spm_export
    assert theirs.model_max_length == model_max
    long_review = max(real_lines(), key=len)
    got = theirs([long_review, "好"], truncation=True, padding="max_length", return_tensors="pt")
    ours = tok.encode_batch([long_review, "好"], max_length=model_max, padding="max_length")
    assert got["input_ids"].shape == (2, model_max)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(got[key], ours[key]), key


def test_literal_special_token_names_are_text_as_in_sentencepiece(spm_export):
    tok, _, theirs, _ = spm_export
    text = "[MASK][CLS] 好 [SEP] [PAD] [UNK] <0xE4>"
    ids = theirs(text)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:-1] == tok.encode_plain([text])[0]
    assert not {tok.mask_token_id, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id} & set(ids[1:-1])
    assert [theirs.cls_token_id, theirs.sep_token_id, theirs.pad_token_id, theirs.unk_token_id,
            theirs.mask_token_id] == [2, 3, 0, 1, 4]


def test_a_word_model_has_no_transformers_form_and_nothing_is_written(corpus, tmp_path):
    tok = train_spm(corpus, tmp_path / "minibert", "word")
    reason = unsupported_reason(tok)
    assert reason and "word model" in reason
    (tmp_path / "hf").mkdir()
    with pytest.raises(InputError, match="word model"):
        save_for_transformers(tok, tmp_path / "hf", 40)
    assert not any((tmp_path / "hf").iterdir())


# -- WordPiece ----------------------------------------------------------------------------------------------------


def wordpiece_vocab(lines: list[str]) -> list[str]:
    """A small BERT vocabulary: the frequent characters, some as continuations, a few English words and pieces."""
    counts: dict[str, int] = {}
    for line in lines:
        for c in line:
            counts[c] = counts.get(c, 0) + 1
    common = [c for c, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= 20 and not c.isspace()]
    words = ["hello", "world", "play", "##ing", "the", "un", "##able", "caf", "##é", "##e", "naive", "iphone", "pro"]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *common, *("##" + c for c in common[:300]), *words]
    return list(dict.fromkeys(tokens))


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_gets_minibert_ids(corpus, tmp_path, lower):
    tok = tokenizer.WordPieceTokenizer(wordpiece_vocab(corpus), do_lower_case=lower)
    theirs = export_tokenizer(tok, tmp_path / "hf", 48)
    texts = real_lines() + AWKWARD + ["Hello WORLD playing [MASK] unable CAFÉ naïve", "x" * 150]
    pairs = texts[3:] + texts[:3]
    for max_length in (48, 10):
        ours = tok.encode_batch(texts, pairs, max_length=max_length)
        got = theirs(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        assert compare_rows(tmp_path, ours, got, may_tie=False) == 0
    # As in BERT, a literal [MASK] in a text is the mask token.
    assert tok.mask_token_id in theirs("好[MASK]")["input_ids"]


# -- end to end ---------------------------------------------------------------------------------------------------


def spm_pretrain_run(runs: Path, tok_dir: Path, **overrides) -> Path:
    """A fake pretraining run (tests/test_finetune_helpers.py) whose tokenizer is the SentencePiece one."""
    tok = tokenizer.load(tok_dir)
    run = make_pretrain_run(runs, vocab_size=tok.vocab_size, **overrides)
    shutil.rmtree(run / "tokenizer")
    tok.save(run / "tokenizer")
    return run


def review_rows(examples, pairs: bool = False) -> list[dict]:
    names = review_split().label_names
    rows = [{"text": e.text, "label": names[e.label]} for e in examples]
    if pairs:
        for i, row in enumerate(rows):
            row["pair"] = rows[(i + 1) % len(rows)]["text"]
    return rows


def agreeing(tok_dir: Path, predictor, theirs, texts: list[str], pairs=None) -> list[int]:
    """The rows whose ids transformers and minibert agree on: all but unigram ties (checked to be ties)."""
    ours = predictor.encode([t if pairs is None else f"{t}\t{p}" for t, p in zip(texts, pairs or texts)])
    got = theirs(texts, pairs, truncation=True)["input_ids"]
    keep = [i for i, (a, b) in enumerate(zip(ours.input_ids, got)) if a == b]
    assert all(scores_tie(tok_dir, ours.input_ids[i], got[i]) for i in set(range(len(texts))) - set(keep))
    assert len(keep) >= 0.99 * len(texts)
    return keep


def test_a_fine_tuned_model_predicts_the_same_through_transformers_alone(corpus, tmp_path, capsys):
    """The default recipe: a unigram SentencePiece tokenizer, rotary positions, mean pooling: RoFormerModel, the
    head, and the code the export prints, fed by AutoTokenizer."""
    train_spm(corpus, tmp_path / "tok", "unigram")
    spm_pretrain_run(tmp_path / "runs", tmp_path / "tok", position_embedding_type="rotary")
    split = review_split()
    write_rows(tmp_path / "train.csv", review_rows(split.train[:160]))
    run = tmp_path / "ft"
    assert ft.main(["--runs-dir", str(tmp_path / "runs"), "--train", str(tmp_path / "train.csv"), "--out", str(run),
                    "--epochs", "1", "--batch-size", "16"]) == 0
    out = tmp_path / "hf"
    code = export(run, out, capsys)
    assert "AutoTokenizer.from_pretrained" in code and "RoFormerModel.from_pretrained" in code
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {p.name for p in out.iterdir()}
    assert (out / "tokenizer" / "spm.model").is_file()  # minibert's own, too

    texts = [e.text for e in split.test[:250]] + [t for t in AWKWARD if t.strip()]
    predictor = predict.Predictor(run)
    keep = agreeing(tmp_path / "tok", predictor, auto_tokenizer(out), texts)
    texts = [texts[i] for i in keep]
    scope = {"texts": texts}
    exec(compile(code, "<printed by --export-hf>", "exec"), scope)  # transformers alone: tokenizer, encoder, head
    theirs = torch.softmax(scope["logits"], dim=-1).numpy()
    ours = predictor.probabilities(texts)
    assert theirs.shape == ours.shape == (len(texts), 2)
    assert np.abs(theirs - ours).max() <= 1e-5
    assert scope["encoder"].config.id2label == {0: "negative", 1: "positive"}


def test_a_pair_model_exported_whole_predicts_the_same_through_transformers_alone(corpus, tmp_path, capsys):
    """Sentence pairs truncated at a short max length, learned positions, BERT's pooler: AutoTokenizer and
    BertForSequenceClassification, nothing else."""
    train_spm(corpus, tmp_path / "tok", "bpe")
    spm_pretrain_run(tmp_path / "runs", tmp_path / "tok", position_embedding_type="absolute")
    split = review_split()
    write_rows(tmp_path / "train.csv", review_rows(split.train[:160], pairs=True))
    run = tmp_path / "ft"
    assert ft.main(["--runs-dir", str(tmp_path / "runs"), "--train", str(tmp_path / "train.csv"), "--out", str(run),
                    "--text-pair-column", "pair", "--pooling", "pooler", "--max-length", "24", "--epochs", "1",
                    "--batch-size", "16"]) == 0
    out = tmp_path / "hf"
    assert export(run, out, capsys) == ""
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 24

    rows = review_rows(split.test[:200], pairs=True)
    texts, pairs = [r["text"] for r in rows], [r["pair"] for r in rows]
    predictor = predict.Predictor(run)
    theirs_tok = auto_tokenizer(out)
    keep = agreeing(tmp_path / "tok", predictor, theirs_tok, texts, pairs)
    assert len(keep) == len(texts)  # bpe: no ties
    batch = theirs_tok(texts, pairs, padding=True, truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 24  # cut at the fine-tuned max length
    model = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        theirs = torch.softmax(model(**batch).logits, dim=-1).numpy()
    ours = predictor.probabilities([f"{t}\t{p}" for t, p in zip(texts, pairs)])
    assert np.abs(theirs - ours).max() <= 1e-5


def test_an_export_whose_tokenizer_has_no_transformers_form_says_so_and_autotokenizer_refuses(corpus, tmp_path,
                                                                                             capsys):
    train_spm(corpus, tmp_path / "tok", "word")
    spm_pretrain_run(tmp_path / "runs", tmp_path / "tok", position_embedding_type="rotary")
    write_rows(tmp_path / "train.csv", review_rows(review_split().train[:40]))
    run = tmp_path / "ft"
    assert ft.main(["--runs-dir", str(tmp_path / "runs"), "--train", str(tmp_path / "train.csv"), "--out", str(run),
                    "--epochs", "1", "--batch-size", "16"]) == 0
    out = tmp_path / "hf"
    capsys.readouterr()
    assert predict.main([str(run), "--export-hf", str(out)]) == 0
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("note: no transformers tokenizer")]
    assert len(note) == 1 and "word model" in note[0] and str(out / "tokenizer") in note[0]
    assert not (out / "tokenizer.json").exists() and (out / "tokenizer" / "spm.model").is_file()
    with pytest.raises(Exception):  # never a tokenizer made up from config.json
        auto_tokenizer(out)
    # The printed code tokenizes with minibert's tokenizer and still gives train.predict's probabilities.
    code = err.split(CODE_START, 1)[1].split("\nnote: ", 1)[0]
    texts = [e.text for e in review_split().test[:20]]
    scope = {"texts": texts}
    exec(compile(code, "<printed by --export-hf>", "exec"), scope)
    theirs = torch.softmax(scope["logits"], dim=-1).numpy()
    assert np.abs(theirs - predict.Predictor(run).probabilities(texts)).max() <= 1e-5
