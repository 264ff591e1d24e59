"""The one exception type for bad user input, for the whole project.

It is defined here, in a module that imports nothing, because the tokenizer is the lowest part of the project: the
model package (`minibert.errors.InputError` is this same class), the training commands and the benchmarks all sit
above it. One class, so that one `except InputError` catches a bad tokenizer file and a bad model config alike.

Every command-line entry point catches `InputError`, prints its message (which names the file, line or option at
fault and what to do about it) and exits with status 2, without touching any existing output: `command_main`
below is that wrapper, written once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class InputError(Exception):
    """Bad user input: a missing or empty file, undecodable bytes, a wrong column, a mismatched vocabulary, ..."""


def command_main(body: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """The `main(argv) -> exit status` of every command, around the command's own `body(argv)`.

    `body` parses its options and does the work, returning an exit status (None for 0). An `InputError` from
    anywhere inside becomes one line, `error: <message>`, on stderr and exit status 2; nothing else is caught, so
    a bug still shows its traceback. Written once here, below every package, for the tokenizer's command, the
    training commands and the explain walk-through alike (the benchmarks report their own errors)."""

    @functools.wraps(body)
    def main(argv: list[str] | None = None) -> int:
        try:
            code = body(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0 if code is None else code

    return main
