"""What every command of the project shares: its `main`, which turns bad input into one line and exit status 2,
and the signal contract.

Every command-line entry point catches `InputError`, prints its message (which names the file, line or option at
fault and what to do about it) and exits with status 2, without touching any existing output. SIGINT (Ctrl-C) and
SIGTERM unwind the command as an exception (`Stopped`), so its `finally` blocks and cleanups run, and it exits with
one line and status 128 + the signal's number (130, 143). Commands with a training loop catch the signal earlier,
between two steps, and save first (`train.signals.StopSignals`).

It lives in the tokenizer package, the lowest of the project, so that the tokenizer's own command uses it as the
training commands, the benchmarks and the explain walk-through do.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
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
