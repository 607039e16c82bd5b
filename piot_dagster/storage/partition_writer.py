"""A partition's write: its rows streamed into a Parquet file, measured, and put atomically
where the partition lives, never held in memory whole."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import polars as pl

from piot_dagster.storage import parquet
from piot_dagster.storage.base import Storage, Stored

__all__ = ["PartitionWriter", "WrittenFile", "measure", "put_rows"]

T = TypeVar("T")


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

    @classmethod
    def of(
        cls,
        storage: Storage,
        key: str,
        stored: Stored,
        sql: Sequence[str],
        measured: dict[str, Any],
        **more: Any,
    ) -> Self:
        """What was ``stored`` at ``key``, as ``measure`` found it (and a subclass's
        ``more``)."""
        return cls(
            uri=storage.uri(key),
            key=key,
            bytes=stored.size,
            # A large partition's query runs twice (parquet.write): each statement once.
            sql=tuple(dict.fromkeys(sql)),
            stored=stored,
            **measured,
            **more,
        )


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
        query: pl.LazyFrame,
        sql: Sequence[str] = (),
        *,
        proceed: Callable[[], bool] = lambda: True,
    ) -> WrittenFile | None:
        """Stream ``query``'s rows into the partition's file and store it once ``proceed()``
        says yes; None, and the old version kept, if it said no. ``sql`` holds the
        statements its sources sent, once it has run."""
        done = put_rows(
            self.storage,
            self.key,
            self.token,
            query,
            proceed=proceed,
            inspect=lambda written: measure(written, self.date_column, self.window),
        )
        if done is None:
            return None
        stored, measured = done
        return WrittenFile.of(self.storage, self.key, stored, sql, measured)

    def discard(self) -> None:
        """Remove whatever an unfinished write left behind."""
        self.storage.discard(self.key, self.token)


def put_rows(
    storage: Storage,
    key: str,
    token: str,
    query: pl.LazyFrame,
    *,
    proceed: Callable[[], bool],
    inspect: Callable[[pl.DataFrame | pl.LazyFrame], T],
) -> tuple[Stored, T] | None:
    """Stream ``query``'s rows into a Parquet file spooled for ``key`` (named by
    ``token``), ``inspect`` what was written (its rows, or a scan of the file), then put
    it once ``proceed()`` says yes: what was stored and found, or None if it said no."""
    spooled = storage.spool(key, token)
    try:
        found = inspect(parquet.write(query, spooled))
        stored = storage.put_file(key, spooled, proceed=proceed)
    finally:
        spooled.unlink(missing_ok=True)
    return None if stored is None else (stored, found)


def measure(
    written: pl.DataFrame | pl.LazyFrame, date_column: str | None, window: tuple[int, int] | None
) -> dict[str, Any]:
    """What a written file holds (its rows, or a scan of it), as :class:`WrittenFile`
    reports it: rows and schema, and ``date_column``'s range, nulls and rows outside
    ``window`` (half-open, in the column's physical unit), from one pass over that column
    alone (streamed, for a scan)."""
    aggregates: dict[str, pl.Expr] = {"rows": pl.len()}
    if date_column is not None:
        dates = pl.col(date_column)
        physical = dates.to_physical()
        aggregates |= {
            "date_min": dates.min(),
            "date_max": dates.max(),
            "date_nulls": dates.null_count(),
            "outside_window": (
                ((physical < window[0]) | (physical >= window[1])).sum()
                if window is not None
                else pl.lit(None)
            ),
        }
    found = parquet.collected(written.select(**aggregates)).row(0, named=True)
    return {
        "date_min": None,
        "date_max": None,
        "date_nulls": None,
        "outside_window": None,
        **found,
        "schema": dict(written.collect_schema()),
    }
