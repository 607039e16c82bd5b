"""A run's progress through its partitions: a line in its log every few seconds, and a
bar on the terminal of whoever started the run from one (``make demo``, ``dagster asset
materialize``).

One log line per partition would be one event row each in Dagster's event log, which
cost a fifth of a 3,650-partition backfill; each partition's own figures are on its
materialization anyway.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["Progress"]

# Seconds between two progress lines.
INTERVAL_S = 5.0


class Progress:
    """Counts stored partitions and says how far the run is, at most every ``INTERVAL_S``,
    in the run's log and, where there is one, on :func:`terminal`: the bar is cleared
    when the fan-out ends."""

    def __init__(self, log: Any, asset: str, total: int) -> None:
        self.log = log
        self.asset = asset
        self.total = total
        self.started = self.said = time.monotonic()
        self.terminal = terminal()
        self.bar = tqdm(
            total=total,
            unit="partition",
            desc=asset,
            file=self.terminal,
            disable=self.terminal is None,
            leave=False,
            mininterval=0.5,
        )

    def stored(self, done: int) -> None:
        self.bar.update(done - self.bar.n)
        now = time.monotonic()
        if now - self.said < INTERVAL_S or done == self.total:
            return  # the run's summary line says the last word
        self.said = now
        self.log.info(
            f"asset {self.asset}: {done:,} of {self.total:,} partitions stored "
            f"({done / self.total:.0%}) in {now - self.started:.0f} s"
        )

    def close(self) -> None:
        self.bar.close()
        if self.terminal is not None:
            self.terminal.close()


def terminal() -> TextIO | None:
    """The terminal this run was started from, open for writing, or ``None``.

    Dagster captures a step's stdout and stderr into its compute logs (neither is a
    terminal then, and a bar there would litter the logs), so the bar is drawn on the
    terminal itself. Runs that ``dagster dev`` launches (``DAGSTER_IS_DEV_CLI``) share
    the terminal of its server logs and get no bar; nor does a process whose stdin is not
    a terminal (CI, a service).
    """
    if os.environ.get("DAGSTER_IS_DEV_CLI") or sys.stdin is None or not sys.stdin.isatty():
        return None
    try:
        return open("/dev/tty", "w")  # closed by Progress.close
    except OSError:
        return None
