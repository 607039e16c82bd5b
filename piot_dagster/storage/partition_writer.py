"""A partition's write: its frame as Parquet, put atomically where the partition lives."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from piot_dagster.storage import parquet
from piot_dagster.storage.base import Storage, Stored

__all__ = ["PartitionWriter", "WrittenFile", "describe"]


@dataclass(frozen=True)
class WrittenFile:
    """What a task wrote, reported back to the Dagster process."""

    uri: str
    key: str
    rows: int
    bytes: int
    schema: dict[str, pl.DataType]
    date_min: object
    date_max: object
    # Measured while writing, for the partition checks: nulls in the date column, and
    # rows outside the partition's window (None without a window).
    date_nulls: int | None
    outside_window: int | None
    sql: tuple[str, ...]
    stored: Stored


@dataclass(frozen=True)
class PartitionWriter:
    """Writes one partition to ``key`` of ``storage`` and measures ``date_column``: its
    range, its nulls and the rows outside ``window`` (the partition's bounds in the
    column's physical unit, half-open).

    The token is fixed when the writer is made, not when it runs: a Ray retry overwrites
    what a killed attempt left, and the Dagster process can remove it once it gives up on
    the task (failed or stopped). Concurrent writers of one partition use different
    tokens.
    """

    storage: Storage
    key: str
    date_column: str | None
    window: tuple[int, int] | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def uri(self) -> str:
        return self.storage.uri(self.key)

    def write(
        self,
        frame: pl.DataFrame,
        sql: Sequence[str] = (),
        *,
        proceed: Callable[[], bool] = lambda: True,
    ) -> WrittenFile | None:
        """Store ``frame`` once ``proceed()`` says yes; None, and the old version kept, if
        it said no."""
        data = parquet.encode(frame)
        stored = self.storage.put(self.key, data, token=self.token, proceed=proceed)
        if stored is None:
            return None
        return describe(
            self.storage, self.key, frame, data, stored, sql, self.date_column, self.window
        )

    def discard(self) -> None:
        """Remove whatever an unfinished write left behind."""
        self.storage.discard(self.key, self.token)


def describe(
    storage: Storage,
    key: str,
    frame: pl.DataFrame,
    data: bytes,
    stored: Stored,
    sql: Sequence[str],
    date_column: str | None,
    window: tuple[int, int] | None,
) -> WrittenFile:
    """What was written: ``frame`` stored as ``data`` at ``key``, with ``date_column``'s
    range, nulls and rows outside ``window`` (half-open, in the column's physical unit)."""
    dates = frame[date_column] if date_column else None
    outside = None
    if dates is not None and window is not None:
        physical = dates.to_physical()
        outside = int(((physical < window[0]) | (physical >= window[1])).sum())
    return WrittenFile(
        uri=storage.uri(key),
        key=key,
        rows=frame.height,
        bytes=len(data),
        schema=dict(frame.schema),
        date_min=dates.min() if dates is not None else None,
        date_max=dates.max() if dates is not None else None,
        date_nulls=dates.null_count() if dates is not None else None,
        outside_window=outside,
        sql=tuple(sql),
        stored=stored,
    )
