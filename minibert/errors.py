"""The one exception type for bad user input.

Every command-line entry point catches `InputError`, prints its message (which names the file, line or option at
fault and what to do about it) and exits with status 2, without touching any existing output.
"""


class InputError(Exception):
    """Bad user input: a missing or empty file, undecodable bytes, a wrong column, a mismatched vocabulary, ..."""
