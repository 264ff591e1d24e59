"""The one exception type for bad user input, under the model package's name.

It is `tokenizer.errors.InputError` itself, defined below both packages (the tokenizer never imports the model), so
that an `except InputError` in any command catches what the tokenizer raises too. Every command-line entry point
catches it, prints its message (which names the file, line or option at fault and what to do about it) and exits
with status 2, without touching any existing output (`tokenizer.command.command_main`).
"""

from tokenizer.errors import InputError

__all__ = ["InputError"]
