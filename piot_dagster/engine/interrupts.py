"""Interrupts (Ctrl-C, SIGTERM) during a fan-out, raised where the fan-out can stop.

A handler that raises (Python's for SIGINT, Dagster's for both) raises in whatever
Python code runs when the signal lands: inside a logging handler or a garbage-collector
callback that exception is printed and dropped, and a terminated Dagster run then goes on
to the end. While a fan-out waits on the main thread, the signal is only recorded; the
fan-out then raises it itself, through the handler that was there before, at its next
check (within ``POLL_S``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["POLL_S", "Interrupts", "deferred_interrupts"]

POLL_S = 0.5
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The signals recorded while installed; :meth:`check` raises the first one."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # handlers belong to the main thread; there, nothing is deferred
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            if previous is None:
                continue  # a handler set outside Python: it cannot be put back, so leave it
            self._previous[signum] = previous
            signal.signal(signum, self._record)
        return True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise a recorded interrupt as its own handler would have raised it."""
        if self.received is not None:
            signum, self.received = self.received, None
            self.restore()
            # The previous handler runs inside raise_signal, in this frame.
            signal.raise_signal(signum)
            self.install()  # it did not raise: go on deferring


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Interrupts]:
    """Record SIGINT and SIGTERM in the block; one that :meth:`Interrupts.check` did not
    raise is raised again as the block ends, where the previous handlers apply."""
    interrupts = Interrupts()
    installed = interrupts.install()
    try:
        yield interrupts
    finally:
        if installed:
            pending = interrupts.received
            interrupts.restore()
            if pending is not None:
                signal.raise_signal(pending)
