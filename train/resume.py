"""The options of a resumed run (`--resume`), for every command that continues a stopped run: train.pretrain and
train.finetune.

A run stores the options it was started with. `--resume` takes them back, so that the command line needs no more
than `--out DIR --resume`; an option given again is taken only when it cannot change what the run computes (its
budget, its bookkeeping, the device: each command's `may_change`). Any other option given with a different value is
refused, naming it and the value the run has, because the continued run would no longer be the one that was
started, and its figures would belong to neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from minibert.errors import InputError


def flag(name: str) -> str:
    """The command-line spelling of an option's field name: max_steps -> --max-steps."""
    return "--" + name.replace("_", "-")


def given_by_value(options) -> set[str]:
    """For a caller without a command line (a test, another module): the options that differ from their defaults."""
    defaults = type(options)()
    return {f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(defaults, f.name)}


def options_on_resume(stored: dict, options, given: Iterable[str], may_change: Iterable[str],
                      this_command_only: Iterable[str] = (),
                      same: Callable[[str, object, object], bool] | None = None) -> tuple[object, list[str]]:
    """The run's own options (`stored`, by field name), with those `given` on this command line that may change.

    Returns the options (of `options`' dataclass) and the names of those that changed. An option the run does not
    store (one added since) keeps this command line's value; `this_command_only` options (--out, --resume, ...)
    are never taken from the run. `same(name, a, b)` compares two values of an option (default: ==). A given
    option that may not change and differs is an InputError naming every such option."""
    given, may_change, this_command_only = set(given), tuple(may_change), tuple(this_command_only)
    same = same or (lambda name, a, b: a == b)
    merged = {}
    for f in dataclasses.fields(options):
        inherit = f.name in stored and f.name not in given and f.name not in this_command_only
        merged[f.name] = stored[f.name] if inherit else getattr(options, f.name)
    refused = [k for k in sorted(given) if k in stored and k not in may_change + this_command_only
               and not same(k, stored[k], merged[k])]
    if refused:
        listed = "; ".join(f"{flag(k)} {merged[k]!r} (the run has {stored[k]!r})" for k in refused)
        raise InputError(f"--resume continues a run exactly, and these options would change what it computes: "
                         f"{listed}. Leave them out to continue the run, or start a new one")
    changed = [k for k in may_change if k in stored and not same(k, stored[k], merged[k])]
    return type(options)(**merged), changed
