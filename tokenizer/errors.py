"""The one exception type for bad user input, for the whole project.

It is defined here, in a module that imports nothing, because the tokenizer is the lowest part of the project: the
model package (`minibert.errors.InputError` is this same class), the training commands and the benchmarks all sit
above it. One class, so that one `except InputError` catches a bad tokenizer file and a bad model config alike.
Every command turns it into one line and exit status 2 (`tokenizer.command.command_main`).
"""


class InputError(Exception):
    """Bad user input: a missing or empty file, undecodable bytes, a wrong column, a mismatched vocabulary, ..."""
