"""What every command of the project shares: its `main`, which turns bad input into one line and exit status 2,
and the signal contract.

Every command-line entry point catches `InputError`, prints its message (which names the file, line or option at
fault and what to do about it) and exits with status 2, without touching any existing output. SIGINT (Ctrl-C) and
SIGTERM unwind the command as an exception (`Stopped`), so its `finally` blocks and cleanups run, and it exits with
one line and status 128 + the signal's number (130, 143). Commands with a training loop catch the signal earlier,
between two steps, and save first (`train.signals.StopSignals`).

And the options: a command declares them as a dataclass of `opt` fields and reads them with `parse_options`,
which builds the one kind of parser every command has (defaults shown in --help, options in any position).

It lives in the tokenizer package, the lowest of the project, so that the tokenizer's own command uses it as the
training commands, the benchmarks and the explain walk-through do.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable

from .errors import InputError


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: the command unwinds (a BaseException, so that no `except Exception` swallows it)
    and exits with 128 + `signum`. Ctrl-C's own KeyboardInterrupt is treated the same way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stopped(signum, frame) -> None:
    """A signal handler: unwind the command with `Stopped(signum)`."""
    raise Stopped(signum)


def stop_signals_raise() -> dict:
    """Make SIGINT and SIGTERM raise `Stopped` (signals ignored on entry stay ignored: a background job of a
    non-interactive shell ignores SIGINT). Returns the previous handlers, for `restore_signals`."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for s in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(s)
            if handler is not signal.SIG_IGN:
                previous[s] = handler
                signal.signal(s, raise_stopped)
    return previous


def restore_signals(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, signal.SIG_DFL if handler is None else handler)


def command_main(body: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """The `main(argv) -> exit status` of every command, around the command's own `body(argv)`.

    `body` parses its options and does the work, returning an exit status (None for 0). An `InputError` from
    anywhere inside becomes one line, `error: <message>`, on stderr and exit status 2; nothing else is caught, so
    a bug still shows its traceback. SIGINT and SIGTERM become `Stopped` (the module doc): one line, `stopped by
    SIGTERM`, and exit status 128 + the signal's number. Written once here, below every package, for the
    tokenizer's command, the training commands and the explain walk-through alike (the benchmarks report their
    own errors)."""

    @functools.wraps(body)
    def main(argv: list[str] | None = None) -> int:
        previous = stop_signals_raise()
        try:
            code = body(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except (Stopped, KeyboardInterrupt) as err:
            signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
            print(f"\nstopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum
        finally:
            restore_signals(previous)
        return 0 if code is None else code

    return main


# Options: one way for every command to declare, parse and show them. A command's options are a dataclass whose
# fields are made by `opt`; `parse_options` builds the parser from the fields and returns an instance. Range checks
# stay in each command's own check function, which raises InputError naming the option.


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every command's --help: each option's default shown, and the description printed as written (its examples
    and tables keep their lines)."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown option, a bad value, a missing argument) are one line, `error: ...`, and
    exit status 2, as `command_main` reports bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def opt(default, help: str, **kw):
    """A dataclass field that is a command-line option: its default, its help text and argparse's extras in `kw`:
    metavar, choices, required, aliases (older names, also accepted), flags (the option strings, instead of
    --field-name), type (a converter, instead of the field's annotation), nargs, const, action (e.g. "store_true"
    or "append", instead of the generated one: --x/--no-x for a bool, a typed value otherwise, one or more for a
    list), positional=True (an argument without a dash: RUN_DIR, TEXT...). A list or tuple default becomes a fresh
    list per instance."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _base_type(tp):
    """int for `int`, `int | None`, `list[int]`...; returns (type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, hint) -> None:
    """One dataclass field as one argparse argument."""
    meta = f.metadata
    kw = {"help": meta.get("help", ""), "default": _field_default(f)}
    for key in ("metavar", "choices", "const", "required"):
        if key in meta:
            kw[key] = meta[key]
    tp, is_list = _base_type(hint)
    if meta.get("positional"):
        flags = [f.name]
    else:
        flags = list(meta.get("flags", ["--" + f.name.replace("_", "-")])) + list(meta.get("aliases", ()))
        kw["dest"] = f.name
    action = meta.get("action")
    if action is None and tp is bool:
        action = argparse.BooleanOptionalAction
    if action is not None:
        kw["action"] = action
    if action in (None, "append", "extend", "store"):
        kw["type"] = meta.get("type", tp)
        if "nargs" in meta:
            kw["nargs"] = meta["nargs"]
        elif is_list and action is None and "type" not in meta:
            kw["nargs"] = "+"
    parser.add_argument(*flags, **kw)


def build_parser(cls, description: str, prog: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of the options dataclass `cls`: one argument per field (`opt`), defaults shown in
    --help."""
    parser = CommandParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        _add_field(parser, f, hints[f.name])
    return parser


def parse_options(cls, argv: list[str] | None, description: str, prog: str,
                  epilog: str | None = None) -> tuple[object, set[str]]:
    """The options of `argv` (sys.argv[1:] when None) as a `cls`, and the names of the fields given on the command
    line (not left at their default). Options may come anywhere among the positional arguments; an unknown option,
    a value of the wrong type or a missing argument exits 2 with one line (`CommandParser`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(cls, description, prog, epilog)
    ns = parser.parse_intermixed_args(argv)
    for action in parser._actions:  # parse again with no defaults: what remains was given
        action.default = argparse.SUPPRESS
    given = set(vars(parser.parse_intermixed_args(argv)))
    return cls(**vars(ns)), given
