"""The one exception type for bad user input, for the whole project.

It is defined here, in a module that imports nothing, because the tokenizer is the lowest part of the project: the
model package (`minibert.errors.InputError` is this same class), the training commands and the benchmarks all sit
above it. One class, so that one `except InputError` catches a bad tokenizer file and a bad model config alike.

Every command-line entry point catches `InputError`, prints its message (which names the file, line or option at
fault and what to do about it) and exits with status 2, without touching any existing output.
"""


class InputError(Exception):
    """Bad user input: a missing or empty file, undecodable bytes, a wrong column, a mismatched vocabulary, ..."""
