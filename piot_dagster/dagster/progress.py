"""A run's progress through its partitions, in its log every few seconds.

One log line per partition would be one event row each in Dagster's event log, which
cost a fifth of a 3,650-partition backfill; each partition's own figures are on its
materialization anyway.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Progress"]

# Seconds between two progress lines.
INTERVAL_S = 5.0


class Progress:
    """Counts stored partitions and says how far the run is, at most every ``INTERVAL_S``."""

    def __init__(self, log: Any, asset: str, total: int) -> None:
        self.log = log
        self.asset = asset
        self.total = total
        self.started = self.said = time.monotonic()

    def stored(self, done: int) -> None:
        now = time.monotonic()
        if now - self.said < INTERVAL_S or done == self.total:
            return  # the run's summary line says the last word
        self.said = now
        self.log.info(
            f"asset {self.asset}: {done:,} of {self.total:,} partitions stored "
            f"({done / self.total:.0%}) in {now - self.started:.0f} s"
        )
