"""Stored partitions as a downstream asset's annotation asks: one lazy scan, one frame,
or one entry per partition.

Every file or object is read whole as one version, so a run replacing a partition
meanwhile is seen before or after, never mixed: a small one fetched into memory in one
request (:meth:`Storage.get`), a larger one as a snapshot (:meth:`Storage.snapshot`: the
open file, or an object streamed into a temporary file) that the scan decodes a batch at a
time, so that a query streaming over many partitions holds a few batches, never a
partition. The lazy scan is a Polars IO source: a filter on the date column skips, before
any request, the partitions whose time window it excludes (a partition holds only rows of
its window); inside each file, Polars decodes only the columns and row groups the query
needs.
"""

from __future__ import annotations

import logging
import types
import typing
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import polars as pl
from polars.io.plugins import register_io_source

from piot_dagster.engine.frames import slices
from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.periods import period_of_window
from piot_dagster.engine.ranges import column_unit_ns, predicate_range
from piot_dagster.storage import Storage, parquet

__all__ = ["Part", "Wanted", "load", "not_stored", "ranges", "scan", "select_columns"]

logger = logging.getLogger("piot_dagster")

# Objects fetched ahead of the one being decoded: requests overlap, memory stays bounded.
_FETCH_AHEAD = 8
# A file of up to this size is fetched into memory and decoded at once, which is quickest
# for the many small partitions of a long backfill; a larger one is decoded from a
# snapshot in batches. At most _FETCH_AHEAD of these are held at once.
_IN_MEMORY_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Part:
    """One stored partition: its name for the downstream (the partition key), its key in
    storage, its time window (tz-aware bounds) when it has one, its size and version if
    listed, and the keys of its other dimensions, which become columns where the file
    lacks them (as a Hive reader makes them from the path)."""

    name: str
    key: str
    window: tuple[Any, Any] | None = None
    size: int = 0
    version: str = ""
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wanted:
    """What an input's annotation asks for: lazy scans or frames, one value or one per
    partition (a dict), and whether nothing stored is fine (``X | None``, or a dict whose
    values are ``X | None``: missing partitions are then skipped)."""

    lazy: bool
    per_partition: bool
    optional: bool

    @classmethod
    def of(cls, annotation: object) -> Wanted:
        annotation, optional = _without_none(annotation)
        if typing.get_origin(annotation) in (dict, Mapping):
            args = typing.get_args(annotation)
            value, optional_values = _without_none(args[1] if args else pl.DataFrame)
            return cls(value is pl.LazyFrame, True, optional or optional_values)
        return cls(annotation is pl.LazyFrame, False, optional)

    @property
    def nothing(self) -> object:
        """What an optional input gets when nothing is stored."""
        return {} if self.per_partition else None


def _without_none(annotation: object) -> tuple[object, bool]:
    """``X`` and whether the annotation was ``X | None`` (``Optional[X]``)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def load(
    storage: Storage,
    parts: Sequence[Part],
    wanted: Wanted,
    date_column: str | None,
    columns: Sequence[str] | None = None,
) -> object:
    """``parts`` (in order, at least one) as ``wanted``: one lazy scan, one frame, or a
    dict of either by partition; only ``columns`` if given (pushed into the scan).
    Schemas that drifted between partitions are aligned by column name."""
    if wanted.per_partition:
        if wanted.lazy:
            schema = _planned_schema(storage, parts)
            return {
                p.name: select_columns(scan(storage, [p], date_column, schema), columns)
                for p in parts
            }
        frames = _frames(storage, parts, columns)
        return {p.name: frame for p, frame in zip(parts, frames, strict=True)}
    if wanted.lazy:
        return select_columns(scan(storage, parts, date_column), columns)
    frames = list(_frames(storage, parts, columns))
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def select_columns(lf: pl.LazyFrame, columns: Sequence[str] | None) -> pl.LazyFrame:
    """``lf``'s ``columns`` (all if None); a name it lacks is a ``ValueError``."""
    if columns is None:
        return lf
    absent = [c for c in columns if c not in lf.collect_schema()]
    if absent:
        raise ValueError(
            f"AssetIn(metadata={{'columns': ...}}) names {absent}, which the stored "
            f"partitions lack; their columns are {lf.collect_schema().names()}"
        )
    return lf.select(columns)


def not_stored(asset: str, names: Sequence[str], missing: Collection[str]) -> str:
    """What a read that skips ``missing`` of partitions ``names`` (in order) logs, short
    whatever their number: ``trades_daily: 1,005 of 1,096 partitions not stored, skipped:
    2022-01-01..2023-12-31, 2024-04-01..2024-12-31``."""
    return (
        f"{asset}: {len(missing):,} of {len(names):,} partitions not stored, skipped: "
        f"{ranges(names, missing)}"
    )


def ranges(names: Sequence[str], chosen: Collection[str], limit: int = 4) -> str:
    """Those of ``names`` (in order) that are in ``chosen``, each run of consecutive ones
    as ``first..last``: ``2022-01-01..2023-12-31, 2024-04-01``; the first ``limit`` runs,
    then how many more."""
    chosen = set(chosen)
    runs: list[list[str]] = []
    previous = False
    for name in names:
        if name in chosen:
            if previous:
                runs[-1][1] = name
            else:
                runs.append([name, name])
        previous = name in chosen
    shown = [first if first == last else f"{first}..{last}" for first, last in runs[:limit]]
    more = len(runs) - limit
    return ", ".join(shown) + (f" and {more:,} more ranges" if more > 0 else "")


def scan(
    storage: Storage,
    parts: Sequence[Part],
    date_column: str | None,
    schema: pl.Schema | None = None,
) -> pl.LazyFrame:
    """One lazy scan over ``parts``.

    Its schema comes from the footers of the first and last partitions, aligned as
    ``pl.concat(how="diagonal_relaxed")`` would, without reading the others; a partition
    in between with a column neither has is an error at collect.
    """
    schema = schema or _planned_schema(storage, parts)
    dtype = schema.get(date_column) if date_column else None
    temporal = dtype is not None and (dtype == pl.Date or isinstance(dtype, pl.Datetime))
    source = _PartitionSource(
        storage,
        [(p, _window_ns(p, dtype) if temporal else None) for p in parts],  # type: ignore[arg-type]
        schema,
        date_column if temporal else None,
    )
    return register_io_source(
        source,
        schema=schema,
        explain_name="piot.partitions",
        explain_detail=f"{len(parts)} partition(s) under {storage.location.uri}",
    )


def _planned_schema(storage: Storage, parts: Sequence[Part]) -> pl.Schema:
    ends = [parts[0], parts[-1]] if len(parts) > 1 else list(parts)
    empties = [_with_values(pl.LazyFrame(schema=storage.read_schema(p.key)), p) for p in ends]
    return pl.concat(empties, how="diagonal_relaxed").collect_schema()


def _with_values(lf: pl.LazyFrame, part: Part) -> pl.LazyFrame:
    """``lf`` with a String column for each other-dimension key the file lacks."""
    have = lf.collect_schema()
    added = [pl.lit(value).alias(name) for name, value in part.values.items() if name not in have]
    return lf.with_columns(added) if added else lf


def _window_ns(part: Part, dtype: pl.DataType) -> tuple[int, int] | None:
    """The partition's window as nanoseconds on the axis :func:`predicate_range` uses."""
    if part.window is None:
        return None
    period = period_of_window(*part.window, dtype)
    unit = column_unit_ns(dtype)
    return period.start * unit, period.end * unit


def _fetched(storage: Storage, parts: Sequence[Part]) -> Iterator[tuple[Part, bytes | BinaryIO]]:
    """Each part's content, in order, with up to ``_FETCH_AHEAD`` requests in flight: a
    small file's bytes, a larger one's snapshot, closed once the next part is asked for
    (or the caller stops)."""
    if not parts:
        return
    with ThreadPoolExecutor(min(_FETCH_AHEAD, len(parts)), "piot-read") as pool:
        ahead: deque[tuple[Part, Future[bytes | BinaryIO]]] = deque()
        try:
            for part in parts:
                ahead.append((part, pool.submit(_fetch, storage, part)))
                if len(ahead) >= _FETCH_AHEAD:
                    yield from _held(*ahead.popleft())
            while ahead:
                yield from _held(*ahead.popleft())
        finally:
            for _, future in ahead:
                if not future.cancel() and future.exception() is None:
                    _close(future.result())


def _fetch(storage: Storage, part: Part) -> bytes | BinaryIO:
    if part.size <= _IN_MEMORY_BYTES:
        return storage.get(part.key)
    return storage.snapshot(part.key, part.version)


def _held(part: Part, future: Future[bytes | BinaryIO]) -> Iterator[tuple[Part, bytes | BinaryIO]]:
    source = future.result()
    try:
        yield part, source
    finally:
        _close(source)


def _close(source: bytes | BinaryIO) -> None:
    if not isinstance(source, bytes):
        source.close()


def _batches(
    lf: pl.LazyFrame, source: bytes | BinaryIO, batch_size: int | None
) -> Iterator[pl.DataFrame]:
    """``lf``'s rows, at most ``batch_size`` at a time: collected at once from a file in
    memory, streamed from a snapshot so that a few batches are held, never the
    partition."""
    if isinstance(source, bytes):
        return slices(lf.collect(), batch_size)
    return lf.collect_batches(chunk_size=batch_size, engine="streaming")


def _frames(
    storage: Storage, parts: Sequence[Part], columns: Sequence[str] | None = None
) -> Iterator[pl.DataFrame]:
    for part, source in _fetched(storage, parts):
        try:
            yield select_columns(_with_values(parquet.decode(source), part), columns).collect()
        except ValueError as exc:
            exc.add_note(f"in partition {part.name}")
            raise


class _PartitionSource:
    """The Polars IO source behind :func:`scan`; picklable (the storage is)."""

    def __init__(
        self,
        storage: Storage,
        parts: list[tuple[Part, tuple[int, int] | None]],
        schema: pl.Schema,
        date_column: str | None,
    ) -> None:
        self.storage = storage
        self.parts = parts
        self.schema = schema
        self.date_column = date_column

    def __call__(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        parts = [part for part, _ in self.parts]
        # Polars asks for the first n_rows *before* the predicate: then the predicate may
        # not choose which partitions are read.
        if predicate is not None and n_rows is None and self.date_column is not None:
            values = predicate_range(predicate, self.schema, self.date_column)
            parts = [
                part
                for part, ns in self.parts
                if ns is None or values.intersect(IntervalSet.of([ns])).pieces
            ]
        logger.debug(
            "piot_dagster: read %d of %d partition(s) (%d of %d bytes) under %s",
            len(parts),
            len(self.parts),
            sum(part.size for part in parts),
            sum(part.size for part, _ in self.parts),
            self.storage.location.uri,
        )
        remaining = n_rows
        for part, source in _fetched(self.storage, parts):
            if remaining == 0:
                return
            lf = self._conformed(_with_values(parquet.decode(source), part), part)
            if remaining is None:
                if predicate is not None:
                    lf = lf.filter(predicate)
                if with_columns is not None:
                    lf = lf.select(with_columns)
                yield from _batches(lf, source, batch_size)
                continue
            for frame in _batches(lf.head(remaining), source, batch_size):
                remaining -= frame.height
                if predicate is not None:
                    frame = frame.filter(predicate)
                yield frame.select(with_columns) if with_columns is not None else frame

    def _conformed(self, lf: pl.LazyFrame, part: Part) -> pl.LazyFrame:
        """``lf`` with exactly the scan's schema: missing columns as nulls, dtypes cast."""
        have = lf.collect_schema()
        extra = [name for name in have if name not in self.schema]
        if extra:
            raise ValueError(
                f"partition {part.name} ({self.storage.uri(part.key)}) has column(s) {extra} "
                f"that the first and last partitions, which gave the scan its schema, lack; "
                f"load it as pl.DataFrame, which aligns every partition"
            )
        return lf.select(
            pl.col(name).cast(dtype) if name in have else pl.lit(None, dtype).alias(name)
            for name, dtype in self.schema.items()
        )
