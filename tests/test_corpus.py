"""Reading user corpora: text files, JSONL, directories, and every kind of bad input."""

import json

import pytest

from minibert.errors import InputError
from train import corpus_files as corpus
from train.corpus_files import read_texts


def test_text_file_skips_empty_lines_and_strips(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\ufeff第一句\n\n  第二句  \r\n\t\nlast line without newline", encoding="utf-8")
    assert read_texts([path]) == ["第一句", "第二句", "last line without newline"]


def test_jsonl(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"text": "一"}, {"text": "  "}, {"text": "二", "id": 7}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    assert read_texts([str(path)]) == ["一", "二"]


def test_directory_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    (tmp_path / "c.txt").write_text("c1\nc2\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored\n", encoding="utf-8")
    assert read_texts([tmp_path]) == ["a", "z", "c1", "c2"]  # a.jsonl, b/z.txt, c.txt


def test_paths_keep_their_order(tmp_path):
    (tmp_path / "x.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "y.txt").write_text("y\n", encoding="utf-8")
    assert read_texts([tmp_path / "y.txt", tmp_path / "x.txt"]) == ["y", "x"]


def test_lines_across_chunk_edges(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "_CHUNK_BYTES", 7)  # cuts through lines and through multi-byte characters
    lines = ["中文句子一", "second", "", "第三行很长很长很长", "x"]
    path = tmp_path / "a.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_texts([path]) == [s for s in lines if s]


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file or directory") as err:
        read_texts([tmp_path / "nope.txt"])
    assert "nope.txt" in str(err.value)


def test_directory_without_text_files(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"no \*\.txt or \*\.jsonl files"):
        read_texts([tmp_path])


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.txt: file is empty"):
        read_texts([path])


def test_blank_lines_only(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(InputError, match="blank.txt: file has no text"):
        read_texts([path])


def test_no_paths():
    with pytest.raises(InputError, match="no corpus files"):
        read_texts([])


@pytest.mark.parametrize("chunk_bytes", [7, 1 << 20])
def test_non_utf8_names_file_and_line(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus, "_CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "gbk.txt"
    path.write_bytes("第一行\n第二行\n".encode("utf-8") + "第三行\n".encode("gbk") + b"fourth\n")
    with pytest.raises(InputError) as err:
        read_texts([path])
    message = str(err.value)
    assert "gbk.txt, line 3" in message and "UTF-8" in message and "iconv" in message


def test_jsonl_bad_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_texts([path])


@pytest.mark.parametrize("line", ['{"body": "x"}', '["x"]', '{"text": 3}', '"x"'])
def test_jsonl_without_text_field(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r'bad.jsonl, line 3: no string field "text"'):
        read_texts([path])
