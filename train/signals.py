"""Stopping a run cleanly on a signal: the loop finishes its step, saves, and exits with 128 + the signal's number."""

from __future__ import annotations

import os
import signal
import threading

import torch
import torch.distributed as dist

from train.device import Dist


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (what schedulers and `docker stop` send) while the loop runs.

    The first one sets `signum`, which the loop reads between two steps: what it then saves is the state after the
    last completed step, so a resumed run is exact. A second one acts as it would without this (SIGINT raises
    KeyboardInterrupt, SIGTERM ends the process). A signal ignored when the loop starts (a background job of a
    non-interactive shell ignores SIGINT) stays ignored; the previous handlers come back when the loop ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for s in self.SIGNALS:
                previous = signal.getsignal(s)
                if previous is not signal.SIG_IGN:
                    self._previous[s] = previous
                    signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, signal.SIG_DFL if previous is None else previous)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum)
        signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    def received(self, d: Dist, device: torch.device) -> bool:
        """Whether to stop now; with several ranks, when any rank got a signal (they stop at the same step)."""
        if d.world > 1:
            flag = torch.tensor([self.signum or 0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.signum = int(flag.item()) or None
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
