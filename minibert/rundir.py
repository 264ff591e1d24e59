"""A directory minibert owns: ownership by record, one process at a time.

Every command that writes a directory of results (a pretraining or fine-tuning run, a curve, a benchmark run, an
export, a folder of plots) claims it here first. Two files make the claim:

- `.minibert-run`, the marker: `{"kind": "pretrain", "written_by": "minibert", "entries": [...]}`. A directory is
  minibert's only if this marker says so; nothing is ever taken for a run by the look of its files. `entries` is
  the manifest: the top-level names this run writes, recorded *before* they are written. Starting over (`--force`,
  a re-export) removes exactly those, and the temporary files of their atomic writes, never a name matched by a
  pattern; a user's file beside them is never touched, and one that has the name of an entry the run is about
  to write is refused rather than overwritten.
- `.minibert-lock`, the lock: an exclusive `flock` held for the run's whole life, with the process id and command
  inside. A second process on the same directory is refused with the holder's pid; the operating system drops the
  lock when its holder dies however it dies (SIGKILL included), so a lock file left behind is noticed, said, and
  taken over.

The states a directory can be in, read without writing anything (`inspect_out`): new, empty, a run of this kind,
or anything else (refused, nothing in it changed).
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from minibert.errors import InputError
from minibert.files import atomic_write, remove_leftovers
from tokenizer.textfile import check_can_create

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file and its pid still guard against a second process
    fcntl = None


RUN_MARKER = ".minibert-run"
LOCK_NAME = ".minibert-lock"


@dataclass(frozen=True)
class RunKind:
    name: str  # as in the marker: "pretrain", "finetune", "curve", "bench", "hf-export", ...
    title: str  # for messages: "pretraining run"


class OutState(enum.Enum):
    NEW = "does not exist"
    EMPTY = "is empty"
    RUN = "holds a run of this kind"
    FOREIGN = "is not a run of this kind"


@dataclass
class OutDir:
    path: Path
    state: OutState
    why: str = ""  # for FOREIGN: what it is instead
    option: str = "--out"  # the option that named it, for messages


# ----------------------------------------------------------------------------------------------------------------
# reading: what a directory is


def read_marker(path: Path) -> dict | None:
    """The marker of a run directory, {} for one that cannot be read, None when there is none."""
    marker = path / RUN_MARKER
    if not marker.is_file():
        return None
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def recorded_entries(path: Path) -> list[str]:
    """The top-level names the run in `path` recorded as its own (none for a directory without a marker)."""
    entries = (read_marker(path) or {}).get("entries", [])
    return [e for e in entries if isinstance(e, str) and e and "/" not in e and e not in (".", "..")]


def holder(path: Path) -> str | None:
    """'process N (command)' when a live process holds `path`'s lock, else None. Reads only."""
    lock = path / LOCK_NAME
    if not lock.is_file():
        return None
    if fcntl is None:
        pid, what = _read_lock(lock)
        return f"process {pid} ({what})" if pid and process_alive(pid) else None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # succeeds only when no one holds it exclusively
    except OSError:
        pid, what = _read_lock(lock)
        return f"process {pid} ({what})" if pid else "another process"
    finally:
        os.close(fd)  # closing drops the shared lock taken to test
    return None


def _read_lock(lock: Path) -> tuple[int | None, str]:
    try:
        pid, _, what = lock.read_text(encoding="utf-8").partition("\n")
        return int(pid), what.strip() or "unknown command"
    except (OSError, ValueError):
        return None, "unknown command"


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_use_error(path: Path, who: str, option: str) -> InputError:
    return InputError(f"{option} {path} is in use by {who}; wait for it to finish (or stop it), or choose another "
                      f"{option} (nothing was changed)")


def inspect_out(path: Path, kind: RunKind, option: str = "--out", check_lock: bool = True) -> OutDir:
    """What `path` is to a run of `kind`; reads only, writes nothing. InputError when a live process holds it
    (not with `check_lock=False`: for the claim's second look, once it holds the lock, and for the other ranks of
    a multi-process run, whose first rank holds it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return OutDir(path, OutState.FOREIGN, "is a file, not a directory", option)
    if not path.exists():
        return OutDir(path, OutState.NEW, option=option)
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as e:
        raise InputError(f"{option} {path}: cannot be read ({e.strerror or e}); choose another directory") from None
    if check_lock and (who := holder(path)) is not None:
        raise in_use_error(path, who, option)
    if not names - {LOCK_NAME}:
        return OutDir(path, OutState.EMPTY, option=option)
    marker = read_marker(path)
    if marker is None:
        return OutDir(path, OutState.FOREIGN, f"is not empty and holds no minibert {kind.title} (no {RUN_MARKER} "
                      "file)", option)
    if marker.get("kind") == kind.name:
        return OutDir(path, OutState.RUN, option=option)
    other = marker.get("kind")
    return OutDir(path, OutState.FOREIGN, f"holds a minibert {other} run, not a {kind.title}" if other else
                  f"has a {RUN_MARKER} file that cannot be read", option)


def check_usable(out: OutDir) -> None:
    """InputError for a directory that is not this kind's run and not empty, or one that cannot be written."""
    if out.state is OutState.FOREIGN:
        raise InputError(f"{out.option} {out.path} {out.why}; choose a new or empty directory (nothing in it was "
                         "changed: minibert only ever writes into, or removes from, a directory it owns)")
    check_can_create(out.path, out.option)


# ----------------------------------------------------------------------------------------------------------------
# writing: the claim, the manifest, the lock


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


@dataclass
class RunDir:
    """A claimed directory: this process holds its lock, and its marker lists what the run writes."""

    path: Path
    kind: RunKind
    created: bool  # the claim made the directory (so releasing it removes the directory too)
    entries: list[str] = field(default_factory=list)
    _fd: int | None = None

    def record(self, *names: str) -> None:
        """Add `names` (top-level) to the manifest, before they are written."""
        new = [n for n in names if n not in self.entries]
        if new:
            self.entries.extend(new)
            self._write_marker()

    def _write_marker(self) -> None:
        marker = {"kind": self.kind.name, "written_by": "minibert", "entries": sorted(self.entries)}
        text = json.dumps(marker, ensure_ascii=False) + "\n"
        atomic_write(self.path / RUN_MARKER, lambda p: p.write_text(text, encoding="utf-8"))

    def clear(self) -> None:
        """Remove what the run recorded, and the temporary files of its interrupted writes; nothing else."""
        remove_leftovers(self.path, [*self.entries, RUN_MARKER])
        for name in self.entries:
            _remove(self.path / name)

    def release(self) -> None:
        """After a run that failed with nothing worth keeping: remove what it wrote, the marker, and the directory
        if the claim made it; then unlock."""
        if self.path.is_dir():
            self.clear()
            (self.path / RUN_MARKER).unlink(missing_ok=True)
        self.close()
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            os.rmdir(self.path)

    def close(self) -> None:
        """Unlock at the end of the run (removing the lock file)."""
        if self._fd is None:
            return
        try:
            (self.path / LOCK_NAME).unlink(missing_ok=True)  # while still held: no one can have it half-taken
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def _lock(path: Path, option: str) -> int:
    """Take `path`'s lock for this process; InputError naming the holder when another process has it."""
    lock = path / LOCK_NAME
    while True:
        left = _read_lock(lock)[0] if lock.is_file() else None
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise in_use_error(path, holder(path) or "another process", option) from None
            try:  # the holder may have removed the file between our open and our lock: lock the one in place
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        elif left and left != os.getpid() and process_alive(left):
            os.close(fd)
            raise in_use_error(path, f"process {left}", option)
        break
    if left and left != os.getpid():
        print(f"note: {path} was locked by process {left}, which is no longer running; taking it over",
              file=sys.stderr, flush=True)
    os.ftruncate(fd, 0)
    argv = list(getattr(sys, "orig_argv", sys.argv))  # python -m train.pretrain --out ...
    command = " ".join([os.path.basename(argv[0]), *argv[1:]])
    command = command if len(command) <= 120 else command[:117] + "..."
    os.write(fd, f"{os.getpid()}\n{command}\n".encode())
    return fd


def claim(out: OutDir, kind: RunKind, entries: Iterable[str] = (), *, clear: bool = True) -> RunDir:
    """Make `out` this run's directory: create it if need be, lock it, check under the lock that it is still what
    `inspect_out` saw, remove what an earlier run of this kind recorded (`clear`; not for a run that continues),
    refuse when one of `entries` is already there without being recorded, and write the marker listing `entries`
    (with `clear=False`, joined to those already recorded)."""
    check_usable(out)
    path = out.path
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _lock(path, out.option)
    except OSError as e:
        if created and path.is_dir() and not any(path.iterdir()):
            os.rmdir(path)
        raise InputError(f"{out.option} {path}: cannot write there ({e.strerror or e}); choose a writable "
                         "directory") from None
    run = RunDir(path, kind, created, _fd=fd)
    try:
        now = inspect_out(path, kind, out.option, check_lock=False) if not created else OutDir(path, OutState.EMPTY)
        if now.state is OutState.FOREIGN or (now.state is OutState.RUN) != (out.state is OutState.RUN):
            raise InputError(f"{out.option} {path} changed while this command was starting (it {now.state.value} "
                             "now); run the command again")
        previous = recorded_entries(path)
        run.entries = previous if clear else list(previous)
        wanted = list(dict.fromkeys(entries))
        clash = sorted(n for n in wanted if n not in previous and (path / n).exists())  # before clearing anything
        if clash:
            raise InputError(f"{out.option} {path} holds {', '.join(clash)}, which minibert did not write and this "
                             f"{kind.title} would overwrite; move it away or choose another {out.option} (nothing "
                             "was changed)")
        if clear:
            run.clear()
            run.entries = []
        run.entries.extend(n for n in wanted if n not in run.entries)
        run._write_marker()
    except OSError as e:
        run.release()
        raise InputError(f"{out.option} {path}: cannot write there ({e.strerror or e}); choose a writable "
                         "directory") from None
    except BaseException:
        run.close()
        if created and path.is_dir() and not any(path.iterdir()):
            os.rmdir(path)
        raise
    return run
