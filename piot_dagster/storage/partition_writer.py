"""A partition's write: its rows streamed into a Parquet file, measured, and put atomically
where the partition lives, never held in memory whole."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import polars as pl

from piot_dagster.storage import parquet
from piot_dagster.storage.base import Storage, Stored

__all__ = ["PartitionWriter", "WrittenFile", "WrittenFiles", "measure", "put_rows"]

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
            sql=tuple(sql),
            stored=stored,
            **measured,
            **more,
        )

    @property
    def files(self) -> tuple[WrittenFile, ...]:
        """The files stored: this one."""
        return (self,)


@dataclass(frozen=True)
class WrittenFiles:
    """What a task wrote as one file or several (its partition rolled at a target size):
    the files, and the measures of the partition over them all, as :class:`WrittenFile`
    reports one file's."""

    files: tuple[WrittenFile, ...]

    @property
    def uri(self) -> str:
        """The file's, or the folder's holding several."""
        first = self.files[0].uri
        return first if len(self.files) == 1 else first.rsplit("/", 1)[0]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return self.files[0].schema

    @property
    def sql(self) -> tuple[str, ...]:
        return self.files[0].sql

    @property
    def date_min(self) -> object:
        return min((f.date_min for f in self.files if f.date_min is not None), default=None)

    @property
    def date_max(self) -> object:
        return max((f.date_max for f in self.files if f.date_max is not None), default=None)

    @property
    def date_nulls(self) -> int | None:
        return _total(f.date_nulls for f in self.files)

    @property
    def outside_window(self) -> int | None:
        return _total(f.outside_window for f in self.files)


def _total(counts: Iterable[int | None]) -> int | None:
    """The sum of every file's count, or None where files were not counted (no date
    column, or no window)."""
    found = [c for c in counts if c is not None]
    return sum(found) if found else None


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
            lambda _: self.key,
            self.token,
            query,
            proceed=proceed,
            inspect=lambda written: measure(written, self.date_column, self.window),
        )
        if done is None:
            return None
        [(key, stored, measured)] = done
        return WrittenFile.of(self.storage, key, stored, sql, measured)

    def discard(self) -> None:
        """Remove whatever an unfinished write left behind."""
        self.storage.discard(self.key, self.token)


def put_rows(
    storage: Storage,
    key: Callable[[int], str],
    token: str,
    query: pl.LazyFrame,
    *,
    proceed: Callable[[], bool],
    inspect: Callable[[pl.DataFrame | pl.LazyFrame], T],
    file_bytes: int | None = None,
) -> list[tuple[str, Stored, T]] | None:
    """Stream ``query``'s rows into Parquet files spooled for ``key(0)``, ``key(1)``, …
    (named by ``token``): one file, or files of about ``file_bytes`` each (see
    :func:`parquet.write`). ``inspect`` what each holds (its rows, or a scan of it), then
    put them once ``proceed()`` says yes: each file's key, what was stored and found, or
    None if it said no.

    Nothing is left behind unless every file was put: the spooled files are removed, and
    the files put before a later one failed (or ``proceed()`` said no) are deleted, which
    only several files can need, each under a new key of its own.
    """
    spooled: dict[Path, str] = {}

    def spool(index: int) -> Path:
        path = storage.spool(key(index), token)
        spooled[path] = key(index)
        return path

    done: list[tuple[str, Stored, T]] = []
    try:
        for path, written in parquet.write(query, spool, file_bytes=file_bytes):
            found = inspect(written)
            stored = storage.put_file(spooled[path], path, proceed=proceed)
            if stored is None:
                break
            done.append((spooled[path], stored, found))
        else:
            return done
    except BaseException:
        _delete(storage, done)
        raise
    finally:
        for path in spooled:
            path.unlink(missing_ok=True)
    _delete(storage, done)
    return None


def _delete(storage: Storage, done: list[tuple[str, Stored, T]]) -> None:
    """Remove the files of an unfinished write: nothing refers to them yet."""
    for key, _, _ in done:
        with contextlib.suppress(Exception):
            storage.delete(key)


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
