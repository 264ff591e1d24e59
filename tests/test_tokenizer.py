"""SentencePiece tokenizer: training, the shared encode/pad/truncate interface, save/load, and the command line."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenizer
from minibert.errors import InputError
from tokenizer import SentencePieceTokenizer
from tokenizer.encoding import truncated_lengths

REPO = Path(__file__).resolve().parents[1]
CHINESE_WORDS = ["中国", "人民", "银行", "经济", "发展", "今天", "天气", "很好", "我们", "学习", "北京", "上海",
                 "新年", "讲话", "记者", "报道", "世界", "和平", "科学", "技术"]
ENGLISH_WORDS = ["hello", "world", "model", "token", "the", "of", "and", "Beijing", "BERT", "MASK", "CLS", "SEP",
                 "PAD", "UNK", "[note]", "x-ray", "e.g."]
FULL_WIDTH = ["１９９８年", "ＡＢＣ", "２０２４"]
PUNCTUATION = ["，", "。", "！", "？", "、", "“", "”", ",", ".", "!"]


def make_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Mixed Chinese/English lines: Chinese runs without spaces, English words with spaces, full-width forms."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(3, 10)):
            kind = rng.random()
            if kind < 0.5:
                parts.append("".join(rng.choice(CHINESE_WORDS) for _ in range(rng.randint(1, 4))))
            elif kind < 0.85:
                parts.append(rng.choice(ENGLISH_WORDS))
            else:
                parts.append(rng.choice(FULL_WIDTH))
            parts.append(rng.choice(PUNCTUATION) if rng.random() < 0.3 else " ")
        lines.append("".join(parts).strip())
    return lines


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("spm") / "tok"
    tok, stats = tokenizer.train_with_stats(make_corpus(), 300, out, character_coverage=1.0, num_threads=1)
    return tok, stats, out


@pytest.fixture(scope="session")
def tok(trained):
    return trained[0]


def single_chars(tok: SentencePieceTokenizer) -> list[str]:
    """The characters the model has as tokens of their own (after normalisation)."""
    pieces = (tok.id_to_token(i) for i in range(len(tok.special_ids), tok.vocab_size))
    return sorted({p for p in pieces if len(p) == 1 and p != "\u2581"})


@pytest.fixture(scope="session")
def alphabet(tok):
    chars = single_chars(tok)
    # Full-width forms of the ASCII letters and digits: NFKC maps them onto characters of the vocabulary.
    full_width = [chr(ord(c) + 0xFEE0) for c in chars if c.isascii() and c.isalnum()]
    return chars + full_width


def normalised(text: str) -> str:
    """What the tokenizer sees: NFKC, then every run of whitespace one space, none at either end."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


WHITESPACE = [" ", "  ", "\t", "\n", "\u3000", "\u00a0"]
LITERAL_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def texts_from(alphabet, min_size=0):
    fragments = st.one_of(st.sampled_from(alphabet), st.sampled_from(WHITESPACE), st.sampled_from(LITERAL_SPECIALS))
    return st.lists(fragments, min_size=min_size, max_size=40).map("".join)


# -- training ---------------------------------------------------------------------------------------------------


def test_special_tokens_have_fixed_ids(tok):
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 1, 2, 3, 4)
    assert tok.special_ids == frozenset(range(5))
    assert tok.vocab_size == 300


def test_training_stats_and_files(trained):
    tok, stats, out = trained
    assert stats.vocab_size == 300 and stats.n_sentences == stats.n_sampled == 400
    assert 1.0 < stats.chars_per_token < 10 and stats.seconds > 0
    assert {p.name for p in out.iterdir()} >= {"spm.model", "spm.vocab", "tokenizer_config.json"}


def test_training_normalises_full_width_forms(tok):
    chars = single_chars(tok)
    assert "1" in chars and "A" in chars
    assert not any("\uff01" <= c <= "\uff5e" for c in chars)  # no full-width ASCII forms survive NFKC
    assert tok.tokenize("ＡＢＣ") == tok.tokenize("ABC")


def test_the_sample_is_capped(tmp_path):
    corpus = make_corpus(200, seed=1)
    _, stats = tokenizer.train_with_stats(corpus, 120, input_sentence_size=50, character_coverage=1.0,
                                          num_threads=1)
    assert stats.n_sentences == 200 and stats.n_sampled == 50


@pytest.mark.parametrize("model_type", ["bpe", "char", "word"])
def test_other_model_types(model_type):
    tok, _ = tokenizer.train_with_stats(make_corpus(200), 120, model_type=model_type, character_coverage=1.0,
                                        num_threads=1)
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.decode(tok.encode("中国 hello").input_ids, skip_special_tokens=True) == "中国 hello"


def test_byte_fallback_spells_unknown_characters():
    tok, _ = tokenizer.train_with_stats(make_corpus(200), 400, byte_fallback=True, character_coverage=1.0,
                                        num_threads=1)
    ids = tok.encode_plain(["龙"])[0]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == "龙"


def test_inputs_can_mix_files_directories_and_strings(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("\n".join(make_corpus(100, seed=2)), encoding="utf-8")
    (tmp_path / "docs" / "ignored.csv").write_text("not,text\n", encoding="utf-8")
    single = tmp_path / "b.txt"
    single.write_text("\ufeff" + "\n".join(make_corpus(100, seed=3)) + "\n\n", encoding="utf-8")
    _, stats = tokenizer.train_with_stats([tmp_path / "docs", single, "今天 天气 很好\n\nhello world"], 150,
                                          character_coverage=1.0, num_threads=1)
    assert stats.n_sentences == 202


def test_vocab_size_too_large_is_explained():
    with pytest.raises(InputError, match="Lower --vocab-size"):
        tokenizer.train(["hello world", "中国人民"], 5000, num_threads=1, verbose=False)


# -- encoding ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_decode_inverts_encode_up_to_normalisation(tok, alphabet, data):
    text = data.draw(texts_from(alphabet))
    ids = tok.encode(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == normalised(text)
    assert tok.normalize(text) == normalised(text)


@SETTINGS
@given(data=st.data())
def test_plain_text_never_yields_special_tokens(tok, alphabet, data):
    # Decision: literal "[MASK]", "[CLS]", ... in text are ordinary characters, never the special ids.
    text = data.draw(texts_from(alphabet))
    (ids,) = tok.encode_plain([text])
    assert not set(ids) & tok.special_ids
    assert set(tok.tokenize(text)).isdisjoint(LITERAL_SPECIALS)


def test_literal_mask_is_text(tok):
    ids = tok.encode("[MASK]").input_ids
    assert 4 not in ids[1:-1] and tok.decode(ids, skip_special_tokens=True) == "[MASK]"
    assert tok.decode([2, *ids[1:-1], 4, 3]) == "[CLS] [MASK] [MASK] [SEP]"


@SETTINGS
@given(data=st.data())
def test_pair_layout(tok, alphabet, data):
    a, b = data.draw(texts_from(alphabet)), data.draw(texts_from(alphabet))
    ids_a, ids_b = tok.encode_plain([a, b])
    enc = tok.encode(a, b)
    n = len(ids_a)
    assert enc.input_ids == [2, *ids_a, 3, *ids_b, 3]
    assert enc.token_type_ids == [0] * (n + 2) + [1] * (len(ids_b) + 1)
    assert enc.attention_mask == [1] * len(enc.input_ids)
    single = tok.encode(a)
    assert single.input_ids == [2, *ids_a, 3] and set(single.token_type_ids) <= {0}


@SETTINGS
@given(data=st.data(), max_length=st.integers(3, 30))
def test_truncation(tok, alphabet, data, max_length):
    a, b = data.draw(texts_from(alphabet, 1)), data.draw(texts_from(alphabet, 1))
    ids_a, ids_b = tok.encode_plain([a, b])
    enc = tok.encode(a, b, max_length=max_length)
    assert len(enc.input_ids) <= max_length
    if len(ids_a) + len(ids_b) + 3 <= max_length:
        assert enc == tok.encode(a, b)
    sep = enc.input_ids.index(3)
    kept_a, kept_b = enc.input_ids[1:sep], enc.input_ids[sep + 1 : -1]
    assert kept_a == ids_a[: len(kept_a)] and kept_b == ids_b[: len(kept_b)]
    if max_length >= 5 and ids_a and ids_b:
        assert kept_a and kept_b
    single = tok.encode(a, max_length=max_length)
    assert single.input_ids == [2, *ids_a[: max_length - 2], 3]


@given(len_a=st.integers(0, 50), len_b=st.integers(0, 50), max_length=st.integers(3, 60))
def test_truncated_lengths_rule(len_a, len_b, max_length):
    keep_a, keep_b = truncated_lengths(len_a, len_b, max_length)
    room = max_length - 3
    assert keep_a <= len_a and keep_b <= len_b
    assert keep_a + keep_b == min(len_a + len_b, room)
    # Only the longer segment is cut until both are equal; then both lose tokens evenly, the odd token going to
    # the longer one (to B on a tie: then A alone is cut, to one token fewer than B).
    if keep_a < len_a and keep_b < len_b:
        assert abs(keep_a - keep_b) <= 1
    elif keep_a < len_a:
        assert keep_a >= keep_b or (len_a == len_b and keep_a == keep_b - 1)
    elif keep_b < len_b:
        assert keep_b >= keep_a


def test_max_length_below_specials_is_an_error(tok):
    with pytest.raises(ValueError):
        tok.encode("中国", "人民", max_length=2)


@SETTINGS
@given(data=st.data(), max_length=st.integers(3, 30), padding=st.sampled_from(["longest", "max_length"]))
def test_batch_padding(tok, alphabet, data, max_length, padding):
    texts = data.draw(st.lists(texts_from(alphabet), min_size=1, max_size=5))
    pairs = data.draw(st.one_of(st.none(), st.lists(texts_from(alphabet), min_size=len(texts), max_size=len(texts))))
    batch = tok.encode_batch(texts, pairs, max_length=max_length, padding=padding)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(t.dtype == torch.long for t in batch.values())
    width = batch["input_ids"].shape[1]
    if padding == "max_length":
        assert width == max_length
    for row, text in enumerate(texts):
        enc = tok.encode(text, None if pairs is None else pairs[row], max_length=max_length)
        n = len(enc.input_ids)
        assert batch["input_ids"][row, :n].tolist() == enc.input_ids
        assert batch["token_type_ids"][row, :n].tolist() == enc.token_type_ids
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, n:].eq(tok.pad_token_id).all()
        assert batch["token_type_ids"][row, n:].eq(0).all()
    if padding == "longest":
        assert batch["attention_mask"].sum(1).max() == width


def test_encode_batch_rejects_a_bare_string(tok):
    with pytest.raises(TypeError):
        tok.encode_batch("中国")


def test_word_start(tok):
    ws = tok.word_start
    assert ws.shape == (tok.vocab_size,) and ws.dtype == bool
    assert ws[:5].all()
    for i in range(5, tok.vocab_size):
        piece = tok.id_to_token(i)
        if piece.startswith("\u2581") or "\u4e00" <= piece[0] <= "\u9fff":
            assert ws[i], piece
        elif piece.isascii() and piece.isalnum():
            assert not ws[i], piece


# -- save / load ------------------------------------------------------------------------------------------------


def test_save_load_round_trip(trained, tmp_path):
    tok, _, out = trained
    texts = make_corpus(30, seed=7) + ["[MASK] １２３ 龙"]
    expected = tok.encode_plain(texts)
    assert SentencePieceTokenizer.load(out).encode_plain(texts) == expected
    again = tokenizer.load(out)
    assert isinstance(again, SentencePieceTokenizer) and again.encode_plain(texts) == expected
    tok.save(tmp_path / "copy")
    assert tokenizer.load(tmp_path / "copy").encode_plain(texts) == expected
    assert (again.word_start == tok.word_start).all()


def test_load_rejects_a_foreign_model(tmp_path):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(make_corpus(100)), model_writer=model, vocab_size=150,
                                   minloglevel=2, num_threads=1)
    (tmp_path / "spm.model").write_bytes(model.getvalue())
    with pytest.raises(InputError, match=r"\[PAD\] at id 0"):
        tokenizer.load(tmp_path)


# -- command line ----------------------------------------------------------------------------------------------


def start_cli(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokenizer.train", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


BAD_FILES = {
    "missing": (None, "does not exist"),
    "empty": (b"", "is empty"),
    "not-utf8": ("第一行\n第二行\n".encode() + "第三行".encode("gbk") + b"\n", "line 3"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs of `python -m tokenizer.train`: independent ones side by side (each pays the interpreter start-up)."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(200, seed=4)) + "\n", encoding="utf-8")
    common = ["--vocab-size", "150", "--num-threads", "1", "--character-coverage", "1.0"]
    out = root / "tok"
    started = {"train": start_cli("--input", corpus, "--out", out, *common)}
    for name, (content, _) in BAD_FILES.items():
        path = root / name / "corpus.txt"
        path.parent.mkdir()
        if content is not None:
            path.write_bytes(content)
        started[name] = start_cli("--input", path, "--out", root / name / "tok", *common)
    runs = {name: finish(p) for name, p in started.items()}
    runs["again"] = finish(start_cli("--input", corpus, "--out", out, "--vocab-size", "120"))
    runs["out_after_again"] = {p.name: p.read_bytes() for p in out.iterdir()}
    runs["forced"] = finish(start_cli("--input", corpus, "--out", out, "--vocab-size", "120", "--force",
                                      "--num-threads", "1"))
    return root, runs


def test_cli_trains_and_reports(cli):
    root, runs = cli
    result = runs["train"]
    assert result.returncode == 0, result.stderr
    assert "vocabulary 150 tokens" in result.stderr and "characters per token" in result.stderr
    assert "LOG(INFO)" not in result.stderr and "trainer_interface" not in result.stderr


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_cli_bad_input_files(cli, name):
    root, runs = cli
    result = runs[name]
    assert result.returncode == 2
    path = root / name / "corpus.txt"
    assert result.stderr.startswith("error: ") and str(path) in result.stderr
    assert BAD_FILES[name][1] in result.stderr and "Traceback" not in result.stderr
    assert not (root / name / "tok").exists()


def test_cli_refuses_to_overwrite_without_force(cli):
    root, runs = cli
    result = runs["again"]
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and str(root / "tok") in result.stderr and "--force" in result.stderr
    # Nothing was touched: the files are still those of the first (vocabulary 150) run.
    assert SentencePieceTokenizer(runs["out_after_again"]["spm.model"]).vocab_size == 150
    assert runs["forced"].returncode == 0, runs["forced"].stderr
    assert tokenizer.load(root / "tok").vocab_size == 120


def run_main(capsys, *args: str | Path) -> tuple[int, str, str]:
    from tokenizer.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_blank_file_and_directory_without_text_files(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n", encoding="utf-8")
    code, _, err = run_main(capsys, "--input", blank, "--out", tmp_path / "tok")
    assert code == 2 and err.startswith("error: ") and str(blank) in err and "is empty" in err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.md").write_text("hello\n", encoding="utf-8")
    code, _, err = run_main(capsys, "--input", tmp_path / "data", "--out", tmp_path / "tok")
    assert code == 2 and "no .txt files" in err and not (tmp_path / "tok").exists()


def test_cli_vocab_size_too_large(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(50)), encoding="utf-8")
    code, _, err = run_main(capsys, "--input", corpus, "--vocab-size", "20000", "--out", tmp_path / "tok",
                            "--num-threads", "1")
    assert code == 2 and str(corpus) in err and "Lower --vocab-size" in err


def test_cli_help_explains_every_option(capsys):
    from tokenizer.cli import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--input", "--out", "--vocab-size", "--model-type", "--character-coverage", "--byte-fallback",
                   "--input-sentence-size", "--num-threads", "--seed", "--force", "--no-progress"):
        assert option in text
    assert "default: 8000" in text and "default: unigram" in text and "default: 0.9995" in text


def test_package_attribute_train_stays_callable():
    import tokenizer.cli  # noqa: F401  (the command line's module; its name is not the package's `train`)

    assert callable(tokenizer.train)
    assert tokenizer.train == tokenizer.SentencePieceTokenizer.train
