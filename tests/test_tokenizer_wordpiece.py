"""WordPiece over a BERT vocab.txt: token-for-token parity with transformers.BertTokenizer, loading and saving."""

from __future__ import annotations

import json
import string
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenizer
from minibert.errors import InputError
from tokenizer import WordPieceTokenizer

transformers = pytest.importorskip("transformers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CJK_IN_VOCAB = "中国人民你好世界的了是在有我他这个们来到时大地为子"
CJK_NOT_IN_VOCAB = "龙凤鹤龟"
# A CJK compatibility ideograph (NFD maps it to U+8C48) and a character of the range the Rust implementation does
# not split off (U+2B820..U+2B91F), to pin down the exact CJK definition.
CJK_EDGE = "\uf900\u8c48\U0002b820\U0002b920"
ACCENTED = "àáâäãåçèéêëìíîïñòóôöõùúûüýÿāăąćčďđēęěğīıłńňőœřśşšţťūůűźżžÀÁÂÄÇÈÉÊËÎÏÑÒÓÔÖÙÚÛÜÝŁŒŠŽ"
COMBINING = "\u0300\u0301\u0308\u0327"
PUNCTUATION = string.punctuation + "，。！？、；：“”‘’（）《》【】—…·¡¿«»"
DIGITS = string.digits + "０１２３٣"
# Controls (Cc), format (Cf) and private-use (Co) characters are dropped; unassigned ones (U+0378) are kept.
CONTROL = "\x00\x01\x07\x1b\x7f\x85\u200b\u200d\ufeff\ufffd\x0b\x0c\x1c\ue000\u0378"
WHITESPACE = " \t\n\r\u00a0\u3000\u2028\u2003"
WORDS = ["hello", "world", "the", "un", "able", "playing", "naive", "café", "Hello", "WORLD", "Café", "CAFÉ", "ΑΣ"]


def _vocab(cased: bool) -> list[str]:
    """A small BERT-style vocabulary: specials at BERT's ids, characters, ## continuations, some whole words."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = string.ascii_letters if cased else string.ascii_lowercase
    singles = list(PUNCTUATION + string.digits + letters + CJK_IN_VOCAB) + ["\u8c48", "\uf900", "ασ", "σ", "α"]
    if cased:
        singles += list(ACCENTED[:20]) + ["\u0301"]
    tokens += singles
    tokens += ["##" + c for c in string.digits + letters]
    if cased:
        tokens += ["##" + c for c in ACCENTED[:20]] + ["##\u0301", "Hello", "WORLD", "Café", "##É"]
    tokens += ["hello", "world", "the", "un", "##able", "play", "##ing", "naive", "na", "##ive", "caf", "##e", "##é"]
    # Duplicates of single letters as continuations are fine; keep the first occurrence of each line.
    seen: set[str] = set()
    return [t for t in tokens if not (t in seen or seen.add(t))]


CONFIGS = {
    # name: (cased vocab?, keyword arguments for both tokenizers)
    "uncased": (False, {"do_lower_case": True}),
    "cased": (True, {"do_lower_case": False}),
    "uncased_keep_accents": (True, {"do_lower_case": True, "strip_accents": False}),
    "cased_strip_accents": (True, {"do_lower_case": False, "strip_accents": True}),
    "cased_no_cjk_split": (True, {"do_lower_case": False, "tokenize_chinese_chars": False}),
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (ours, Hugging Face's) for each configuration in CONFIGS."""
    root = tmp_path_factory.mktemp("wordpiece")
    files = {}
    for cased in (False, True):
        path = root / ("cased.txt" if cased else "uncased.txt")
        path.write_text("".join(t + "\n" for t in _vocab(cased)), encoding="utf-8")
        files[cased] = path
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (cased, kwargs) in CONFIGS.items():
            ours = WordPieceTokenizer.from_vocab(files[cased], **kwargs)
            theirs = transformers.BertTokenizer(str(files[cased]), **kwargs)
            out[name] = (ours, theirs)
    return out


fragments = st.one_of(
    st.text(st.sampled_from(string.ascii_letters), min_size=1, max_size=8),
    st.sampled_from(ACCENTED + COMBINING),
    st.sampled_from(CJK_IN_VOCAB + CJK_NOT_IN_VOCAB + CJK_EDGE),
    st.sampled_from(DIGITS),
    st.sampled_from(PUNCTUATION),
    st.sampled_from(CONTROL),
    st.sampled_from(WHITESPACE),
    st.sampled_from(WORDS + SPECIALS + ["[mask]", "[unused1]", "[MA", "SK]"]),
)
texts = st.lists(fragments, max_size=30).map("".join)
# transformers treats an empty text_pair as no pair at all; ours encodes `[CLS] A [SEP] [SEP]` for text_pair="".
pair_texts = st.lists(fragments, min_size=1, max_size=30).map("".join)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(text=texts)
def test_tokenize_and_encode_match_bert_tokenizer(pairs, text):
    for name, (ours, theirs) in pairs.items():
        assert ours.tokenize(text) == theirs.tokenize(text), name
        assert ours.encode(text).input_ids == theirs.encode(text), name


@SETTINGS
@given(a=texts, b=pair_texts, max_length=st.integers(5, 24))
def test_pair_encoding_and_truncation_match_bert_tokenizer(pairs, a, b, max_length):
    for name, (ours, theirs) in pairs.items():
        full = ours.encode(a, b)
        ref = theirs(a, b)
        assert (full.input_ids, full.token_type_ids, full.attention_mask) == (
            ref["input_ids"], ref["token_type_ids"], ref["attention_mask"]), name
        cut = ours.encode(a, b, max_length=max_length)
        ref = theirs(a, b, truncation="longest_first", max_length=max_length)
        assert (cut.input_ids, cut.token_type_ids) == (ref["input_ids"], ref["token_type_ids"]), name
        single = ours.encode(a, max_length=max_length)
        assert single.input_ids == theirs(a, truncation=True, max_length=max_length)["input_ids"], name


def test_special_ids_come_from_vocab_positions(pairs):
    ours, theirs = pairs["uncased"]
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (
        0, 100, 101, 102, 103)
    assert ours.special_ids == frozenset({0, 100, 101, 102, 103})
    assert ours.vocab_size == theirs.vocab_size


def test_literal_special_tokens_stay_whole_as_in_bert(pairs):
    ours, _ = pairs["uncased"]
    assert ours.tokenize("hello[MASK]world") == ["hello", "[MASK]", "world"]
    assert ours.tokenize("[mask]") == ["[", "m", "##a", "##s", "##k", "]"]


def test_overlong_word_is_unknown(pairs):
    ours, theirs = pairs["uncased"]
    for word in ("a" * 100, "a" * 101):
        assert ours.tokenize(word) == theirs.tokenize(word)
    assert ours.tokenize("a" * 101) == ["[UNK]"]


def test_word_start_marks_continuations(pairs):
    ours, _ = pairs["uncased"]
    ws = ours.word_start
    assert ws.shape == (ours.vocab_size,) and ws.dtype == bool
    for i in range(ours.vocab_size):
        assert ws[i] == (not ours.id_to_token(i).startswith("##"))
    assert all(ws[i] for i in ours.special_ids)


def test_decode(pairs):
    ours, _ = pairs["uncased"]
    ids = ours.encode("Hello, playing world!").input_ids
    assert ours.decode(ids) == "[CLS] hello , playing world ! [SEP]"
    assert ours.decode(ids, skip_special_tokens=True) == "hello , playing world !"


def test_save_load_round_trip(pairs, tmp_path):
    sample = "Café PLAYING 中国人 [MASK] naïve, ΑΣ 123"
    for name, (ours, _) in pairs.items():
        ours.save(tmp_path / name)
        again = tokenizer.load(tmp_path / name)
        assert isinstance(again, WordPieceTokenizer)
        assert again.encode(sample, "world").input_ids == ours.encode(sample, "world").input_ids, name
        assert again.vocab_size == ours.vocab_size


def test_saved_directory_opens_in_transformers(pairs, tmp_path):
    ours, _ = pairs["cased"]
    ours.save(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    sample = "Café PLAYING 中国人 [MASK] naïve"
    assert theirs.tokenize(sample) == ours.tokenize(sample)


def test_load_hugging_face_directory_with_only_vocab(tmp_path):
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in _vocab(True)), encoding="utf-8")
    uncased = tokenizer.load(tmp_path)
    assert isinstance(uncased, WordPieceTokenizer) and uncased.do_lower_case
    assert uncased.tokenize("Hello") == ["hello"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}), encoding="utf-8")
    cased = tokenizer.load(tmp_path)
    assert not cased.do_lower_case
    assert cased.tokenize("Hello") == ["Hello"]


def test_missing_special_tokens_are_an_input_error(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"\[SEP\] \[MASK\]"):
        WordPieceTokenizer.from_vocab(path)


def test_bad_vocab_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such vocabulary file"):
        WordPieceTokenizer.from_vocab(tmp_path / "missing.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(InputError, match="line 3"):
        WordPieceTokenizer.from_vocab(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no tokenizer"):
        tokenizer.load(tmp_path / "empty")
