"""Parquet, the format partitions are stored in, kept apart from where the bytes go."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

__all__ = ["SMALL_ROWS", "collected", "decode", "write"]


# A partition of up to this many rows is collected and written in memory: its file's fixed
# cost is then a third of a streaming sink's (0.7 ms against 2 ms for 96 rows), which a
# backfill of thousands of small partitions pays thousands of times. Larger ones stream.
SMALL_ROWS = 100_000
_OPTIONS: dict[str, Any] = {"compression": "zstd", "statistics": True}


def write(
    query: pl.LazyFrame, path: Callable[[int], Path], *, file_bytes: int | None = None
) -> list[tuple[Path, pl.DataFrame | pl.LazyFrame]]:
    """``query``'s rows as zstd-compressed Parquet files, with statistics so a reader can
    skip row groups by value: one file at ``path(0)``, or, with ``file_bytes``, files of
    about that many bytes each at ``path(0)``, ``path(1)``, … (all in one folder). Each
    file written, in order, with what it holds, to measure: the rows themselves if they
    were few, else a scan of the file.

    The query runs on the streaming engine, which holds a few batches at a time, never
    the whole result (it falls back to in-memory execution only for a plan it cannot
    stream). Its first :data:`SMALL_ROWS` rows decide: a result that ends within them is
    written from memory, as one file whatever ``file_bytes``. A larger one is sunk
    straight into the files by a second run of the query, which the files then hold
    whole, as any run of it would give it.
    """
    batches = query.collect_batches(chunk_size=SMALL_ROWS, engine="streaming")
    first = next(batches, None)
    if first is None:
        first = pl.DataFrame(schema=query.collect_schema())
    if next(batches, None) is None:
        buffer = io.BytesIO()
        first.write_parquet(buffer, **_OPTIONS)
        path(0).write_bytes(buffer.getbuffer())
        return [(path(0), first)]
    # Dropping the batches stops that run. Sinking the query itself spares a second
    # streaming engine, which relayed its batches through a Python source into the sink.
    per_file = None if file_bytes is None else _in_memory(first, file_bytes)
    del batches, first
    if per_file is None:
        query.sink_parquet(path(0), engine="streaming", **_OPTIONS)
        return [(path(0), pl.scan_parquet(path(0)))]
    sinked: list[Path] = []
    query.sink_parquet(
        pl.PartitionBy(
            path(0).parent,
            file_path_provider=lambda file: path(file.index_in_partition),
            approximate_bytes_per_file=per_file,
        ),
        engine="streaming",
        sinked_paths_callback=lambda done: sinked.extend(Path(p.path) for p in done.paths),
        **_OPTIONS,
    )
    return [(p, pl.scan_parquet(p)) for p in sinked]


def _in_memory(sample: pl.DataFrame, file_bytes: int) -> int:
    """The bytes in memory (which Polars rolls files at) of the rows that take about
    ``file_bytes`` once compressed, as ``sample`` compresses."""
    buffer = io.BytesIO()
    sample.write_parquet(buffer, **_OPTIONS)
    return max(1, file_bytes * sample.estimated_size() // max(1, buffer.tell()))


def collected(result: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """A query over what :func:`write` returned, run: streamed over a file's scan."""
    return result.collect(engine="streaming") if isinstance(result, pl.LazyFrame) else result


def decode(source: bytes | BinaryIO) -> pl.LazyFrame:
    """A lazy scan over a Parquet file held in memory or open: a query on it decodes only
    the columns and row groups it needs."""
    return pl.scan_parquet(io.BytesIO(source) if isinstance(source, bytes) else source)
