"""Reading user corpora: text files, JSONL, their .gz forms, directories and patterns, byte ranges of a file, and
every kind of bad input, stopped at or skipped."""

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.errors import InputError
from tokenizer.training_text import Reservoir
from train import corpus_reader
from train.corpus_files import BadFiles, corpus_files, read_texts, stream_documents
from train.corpus_reader import TextReader, documents
from train.shards import file_tasks


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
    monkeypatch.setattr(corpus_reader, "READ_BYTES", 7)  # cuts through lines and through multi-byte characters
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
    monkeypatch.setattr(corpus_reader, "READ_BYTES", chunk_bytes)
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


# --- gzip, patterns, byte ranges ------------------------------------------------------------------------------


def test_gzipped_text_and_jsonl(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\ufeff一\n\n二\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"text": " 三 "}\n\n{"text": "四"}\n')
    (tmp_path / "c.gz").write_bytes(gzip.compress("五\n".encode()))  # named explicitly: plain text inside
    assert read_texts([tmp_path]) == ["一", "二", "三", "四"]  # c.gz is not a corpus suffix in a directory
    assert read_texts([tmp_path / "c.gz"]) == ["五"]


def test_glob_patterns_are_expanded_sorted(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "sub/d.jsonl"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}\n' if name.endswith("jsonl") else f"{name}\n", encoding="utf-8")
    assert corpus_files([str(tmp_path / "*.txt")]) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert corpus_files([str(tmp_path / "**" / "*.txt")]) == [tmp_path / p for p in ("a.txt", "b.txt", "sub/c.txt")]
    assert corpus_files([str(tmp_path / "su*")]) == [tmp_path / "sub/c.txt", tmp_path / "sub/d.jsonl"]
    with pytest.raises(InputError, match=r"\*\.csv: the pattern matches no files"):
        corpus_files([str(tmp_path / "*.csv")])


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab 中文\r\u3000", max_size=30), min_size=1, max_size=60),
       chunk=st.integers(1, 200), read=st.integers(1, 50))
def test_a_file_read_in_byte_ranges_gives_its_lines(tmp_path_factory, lines, chunk, read):
    """Tasks cut a file after line ends; their documents, in order, are the file's (whatever the read size)."""
    path = tmp_path_factory.mktemp("ranges") / "a.txt"
    content = "\ufeff" + "\n".join(lines)
    path.write_text(content, encoding="utf-8")
    whole = [text for _, text in documents(TextReader(path))]
    corpus_reader.READ_BYTES, saved = read, corpus_reader.READ_BYTES
    try:
        tasks = file_tasks(path, chunk)
        pieces = [text for t in tasks for _, text in documents(TextReader(path, t.start, t.end))]
    finally:
        corpus_reader.READ_BYTES = saved
    assert pieces == whole == [s for line in lines if (s := line.strip())]
    assert tasks[0].start == 0 and tasks[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(tasks, tasks[1:]))
    counted = 0
    for t in tasks:
        reader = TextReader(path, t.start, t.end)
        list(reader)
        counted += reader.lines
    # so the line numbers of a later range can be counted from the file's start
    assert counted == content.count("\n") + (not content.endswith("\n"))


# --- bad files: stop or skip ----------------------------------------------------------------------------------


def bad_corpus(tmp_path):
    """Good files, and one of each kind a corpus file can be bad in, in sorted order."""
    files = {"a.txt": "好的\n".encode(), "b-empty.txt": b"", "c-blank.txt": b"\n  \n",
             "d-binary.txt": b"text\n\0\0\0", "e-gbk.txt": "第一\n".encode() + "第二".encode("gbk"),
             "f-bad.jsonl": b'{"text": "ok"}\n{"body": 1}\n',
             "g-broken.txt.gz": gzip.compress("".join(f"{i}\n" for i in range(5000)).encode())[:200],
             "h.jsonl": '{"text": "最后"}\n'.encode()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_bad_files_stop_at_the_first_naming_it(tmp_path):
    files = corpus_files([bad_corpus(tmp_path)])
    with pytest.raises(InputError) as err:
        list(stream_documents(files, BadFiles("stop")))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'b-empty.txt'}: file is empty") and "--bad-files skip" in message


def test_bad_files_skipped_each_named_once_and_counted(tmp_path):
    files = corpus_files([bad_corpus(tmp_path)])
    warned = []
    bad = BadFiles("skip", warn=warned.append)
    read = []  # what a bad file gave before it was found bad is taken back
    for text in stream_documents(files, bad, None, lambda: len(read), lambda n: read.__delitem__(slice(n, None))):
        read.append(text)
    assert read == ["好的", "最后"]
    assert [line.removeprefix("warning: skipping ").split(": ")[0] for line in warned] == [
        str(tmp_path / "b-empty.txt"), str(tmp_path / "c-blank.txt"), f"{tmp_path / 'd-binary.txt'}, line 2",
        f"{tmp_path / 'e-gbk.txt'}, line 2", f"{tmp_path / 'f-bad.jsonl'}, line 2", str(tmp_path / "g-broken.txt.gz")]
    assert "not a readable gzip file" in warned[-1] and "NUL byte" in warned[2]
    assert bad.summary(len(files)) == "note: 6 of 8 corpus files skipped as unreadable (--bad-files skip)"
    list(stream_documents(files, bad))
    assert len(warned) == 6  # a file is named once


def test_a_file_bad_half_way_is_taken_back_out_of_the_tokenizer_sample(tmp_path):
    """The sample of a corpus with a bad file skipped is the sample of the corpus without it."""
    (tmp_path / "a.txt").write_text("".join(f"a{i}\n" for i in range(300)), encoding="utf-8")
    (tmp_path / "b.txt").write_bytes("".join(f"b{i}\n" for i in range(300)).encode() + b"\xff\n")
    (tmp_path / "c.txt").write_text("".join(f"c{i}\n" for i in range(300)), encoding="utf-8")

    def sample(paths):
        reservoir = Reservoir(100, seed=0)
        for text in stream_documents(paths, BadFiles("skip", warn=lambda line: None), None, reservoir.mark,
                                     reservoir.back_to):
            reservoir.add_text(text)
        return reservoir

    with_bad = sample([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"])
    without = sample([tmp_path / "a.txt", tmp_path / "c.txt"])
    assert with_bad.kept == without.kept and (with_bad.seen, with_bad.chars) == (without.seen, without.chars) == (
        600, sum(len(f"{x}{i}") for x in "ac" for i in range(300)))
    assert any(s.startswith("c") for s in with_bad.kept) and not any(s.startswith("b") for s in with_bad.kept)
