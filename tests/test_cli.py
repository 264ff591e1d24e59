"""Every command declares its options the same way: a dataclass of `opt` fields, parsed by
`tokenizer.command.parse_options` through the one generated parser (defaults shown, the description kept as
written, options in any position)."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tokenizer import command
from tokenizer.command import HelpFormatter, opt, parse_options

# (module whose `main` is the command, the name of its options dataclass)
COMMANDS = [
    ("train.pretrain", "PretrainArgs"),
    ("train.finetune", "Options"),
    ("train.baseline", "BaselineOptions"),
    ("train.curve", "CurveOptions"),
    ("train.predict", "PredictOptions"),
    ("train.generate", "GenerateOptions"),
    ("tokenizer.cli", "TrainOptions"),
    ("benchmarks.cli", "BenchOptions"),
    ("minibert.explain.cli", "ExplainOptions"),
]


def flags_of(cls) -> list[str]:
    """What --help must show for each field: its option string, or a positional field's metavar or name."""
    shown = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            shown.append(f.metadata.get("metavar", f.name))
        else:
            shown.append(f.metadata.get("flags", ["--" + f.name.replace("_", "-")])[0])
    return shown


@pytest.mark.parametrize("module_name, options_name", COMMANDS)
def test_every_commands_help_comes_from_the_shared_generator(module_name, options_name, monkeypatch, capsys):
    module = importlib.import_module(module_name)
    options_cls = getattr(module, options_name)
    built = []
    generate = command.build_parser

    def recording(cls, *args, **kwargs):
        parser = generate(cls, *args, **kwargs)
        built.append((cls, parser.formatter_class))
        return parser

    monkeypatch.setattr(command, "build_parser", recording)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert built == [(options_cls, HelpFormatter)]
    text = capsys.readouterr().out
    for shown in flags_of(options_cls):
        assert shown in text, f"{module_name} --help does not show {shown}"


@pytest.mark.parametrize("module", ["train.predict", "tokenizer.train"])
def test_help_of_a_command_run_as_a_module(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(default: " in done.stdout and "--help" in done.stdout


@dataclass
class Example:
    """Options of a made-up command: a positional, a list of positionals, and options of each kind."""

    run: str = opt(None, "run directory", positional=True, metavar="RUN")
    texts: list[str] = opt((), "texts", positional=True, nargs="*", metavar="TEXT")
    batch_size: int = opt(64, "texts per batch")
    json: bool = opt(False, "print JSON", action="store_true")
    seeds: list[int] = opt((0,), "seeds")
    scratch: bool = opt(True, "the control")
    names: list[str] = opt((), "repeatable", action="extend", nargs="+")
    out: str = opt(None, "where", required=True)


def test_options_come_anywhere_among_the_positionals_and_the_given_ones_are_named():
    options, given = parse_options(Example, ["--json", "r", "a", "--batch-size", "2", "b", "--out", "o",
                                             "--names", "x", "--names", "y", "--no-scratch"], "", "p")
    assert options == Example(run="r", texts=["a", "b"], batch_size=2, json=True, seeds=[0], scratch=False,
                              names=["x", "y"], out="o")
    assert given == {"run", "texts", "batch_size", "json", "out", "names", "scratch"}
    options, given = parse_options(Example, ["r", "--out", "o", "--seeds", "1", "2"], "", "p")
    assert options.texts == [] and options.seeds == [1, 2] and options.scratch and given == {"run", "out", "seeds"}


def test_a_missing_required_option_or_a_bad_value_is_one_line_and_exit_2(capsys):
    for argv in (["r"], ["r", "--out", "o", "--batch-size", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_options(Example, argv, "", "p")
        assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and line.endswith("(see p --help)") for line in err)
    assert "--out" in err[0] and "--batch-size" in err[1]


def test_the_help_shows_defaults_and_keeps_the_description_as_written(capsys):
    with pytest.raises(SystemExit):
        parse_options(Example, ["--help"], "first line\n    an indented example", "p")
    text = capsys.readouterr().out
    assert "first line\n    an indented example" in text
    assert "texts per batch (default: 64)" in text
