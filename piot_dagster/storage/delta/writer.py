"""A partition's data file in a Delta table, written by its Ray task and committed later.

The task writes ordinary Parquet files into the table's folder, under names no commit
has used (``dagster_partition=<key>/part-<token>-<n>.parquet``): one, or, past a target
size, several of about that size each. For each it reports what a Delta add action
needs: its path, size, partition value and statistics. Until the Dagster process commits
them, no reader sees them; files never committed are removed by that process, or by
``vacuum``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import polars as pl

from piot_dagster.storage.base import Storage
from piot_dagster.storage.delta.stats import file_stats
from piot_dagster.storage.delta.types import (
    PARTITION_COLUMN,
    Column,
    arrow_schema,
    restore,
    to_stored,
)
from piot_dagster.storage.partition_writer import WrittenFile, WrittenFiles, measure, put_rows

__all__ = ["DeltaFile", "DeltaFileWriter", "partition_folder"]


@dataclass(frozen=True)
class DeltaFile(WrittenFile):
    """A written data file, with what its add action carries: the path relative to the
    table (delta-rs escapes it for the log), the partition values, the modification time
    in milliseconds and the statistics."""

    path: str
    partition_values: Mapping[str, str]
    modified_ms: int
    stats: str


# The longest file name most filesystems (and so a partition's folder) allow, in bytes.
_LONGEST_NAME = 255


def partition_folder(partition: str) -> str:
    """The folder of a partition's files, in the Hive spelling Delta writers use and
    readers (Polars among them) parse back: every byte but ``A-Za-z0-9_.-~`` escaped. A
    key that cannot be a partition value (empty, which Delta reads as null, or too long
    for a folder's name once escaped) is a ``ValueError`` naming it.

    Examples
    --------
    >>> partition_folder("2024-01-05-13:00")
    'dagster_partition=2024-01-05-13%3A00'
    """
    folder = f"{PARTITION_COLUMN}={quote(partition, safe='')}"
    if not partition or len(folder) > _LONGEST_NAME:
        why = (
            "Delta reads an empty partition value as null"
            if not partition
            else (
                f"escaped for its folder's name it takes {len(folder)} bytes, more than the "
                f"{_LONGEST_NAME} a file name may"
            )
        )
        raise ValueError(
            f"the partition key {partition!r} cannot be a Delta partition value: {why}; "
            f"use shorter keys"
        )
    return folder


@dataclass(frozen=True)
class DeltaFileWriter:
    """Writes one partition's rows as data files of the table at ``table`` (a key of
    ``storage``): ``columns`` say how each is stored, ``added`` are the other dimensions'
    keys the frame lacks as columns (stored as String columns, as a Hive reader would add
    them), and ``date_column`` is measured against ``window`` for the partition checks.
    A table without partitions has ``partition`` None. A partition larger than
    ``file_bytes`` is rolled into files of about that size (one file if None).

    The token, fixed when the writer is made, names the files: a Ray retry replaces what
    a killed attempt left, and the Dagster process removes them if it never commits them.
    """

    storage: Storage
    table: str
    partition: str | None
    columns: tuple[Column, ...]
    added: Mapping[str, str]
    date_column: str | None
    window: tuple[int, int] | None = None
    file_bytes: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def name(self, index: int) -> str:
        """The path inside the table of the partition's ``index``-th file."""
        file = f"part-{self.token}-{index}.parquet"
        return file if self.partition is None else f"{partition_folder(self.partition)}/{file}"

    def key(self, index: int) -> str:
        return f"{self.table}/{self.name(index)}"

    def write(
        self,
        query: pl.LazyFrame,
        sql: Sequence[str] = (),
        *,
        proceed: Callable[[], bool] = lambda: True,
    ) -> WrittenFiles | None:
        """Stream ``query``'s rows into the data files and store them once ``proceed()``
        says yes; None if it said no."""
        if self.added:
            query = query.with_columns(pl.lit(v, pl.String).alias(k) for k, v in self.added.items())
        columns = list(self.columns)

        def inspect(written: pl.DataFrame | pl.LazyFrame) -> tuple[str, dict[str, Any]]:
            # Measured in the frame's own dtypes, as the checks and metadata know them.
            restored = written.with_columns(restore(arrow_schema(columns)))
            return file_stats(written), measure(restored, self.date_column, self.window)

        done = put_rows(
            self.storage,
            self.key,
            self.token,
            to_stored(query, columns),
            proceed=proceed,
            inspect=inspect,
            file_bytes=self.file_bytes,
        )
        if done is None:
            return None
        modified_ms = int(time.time() * 1000)
        files = tuple(
            DeltaFile.of(
                self.storage,
                key,
                stored,
                sql,
                measured,
                path=key.removeprefix(f"{self.table}/"),
                partition_values=(
                    {} if self.partition is None else {PARTITION_COLUMN: self.partition}
                ),
                modified_ms=modified_ms,
                stats=stats,
            )
            for key, stored, (stats, measured) in done
        )
        return WrittenFiles(files)

    def discard(self) -> None:
        """Remove the files, or what an unfinished write left: they were never committed.
        The files are numbered from 0 without gaps, spooled or put."""
        listed = self.storage.list(self.key(0).split("/")[:-1])
        index = 0
        while index == 0 or self.key(index) in listed or self._spooled(index):
            self.storage.discard(self.key(index), self.token)
            self.storage.delete(self.key(index))
            index += 1

    def _spooled(self, index: int) -> bool:
        return self.storage.spool(self.key(index), self.token).exists()
