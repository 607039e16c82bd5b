"""Parquet, the format partitions are stored in, kept apart from where the bytes go."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

__all__ = ["SMALL_ROWS", "collected", "decode", "write"]


# A partition of up to this many rows is collected and written in memory: its file's fixed
# cost is then a third of a streaming sink's (0.7 ms against 2 ms for 96 rows), which a
# backfill of thousands of small partitions pays thousands of times. Larger ones stream.
SMALL_ROWS = 100_000
_OPTIONS: dict[str, Any] = {"compression": "zstd", "statistics": True}


def write(query: pl.LazyFrame, path: Path) -> pl.DataFrame | pl.LazyFrame:
    """``query``'s rows as a zstd-compressed Parquet file at ``path``, with statistics so
    a reader can skip row groups by value; what was written, to measure: the rows
    themselves if they were few, else a scan of the file.

    The query runs on the streaming engine, which holds a few batches at a time, never
    the whole result (it falls back to in-memory execution only for a plan it cannot
    stream). Its first :data:`SMALL_ROWS` rows decide: a result that ends within them is
    written from memory; a larger one is sunk straight into the file by a second run of
    the query, which the file then holds whole, as any run of it would give it.
    """
    batches = query.collect_batches(chunk_size=SMALL_ROWS, engine="streaming")
    first = next(batches, None)
    if first is None:
        first = pl.DataFrame(schema=query.collect_schema())
    if next(batches, None) is None:
        buffer = io.BytesIO()
        first.write_parquet(buffer, **_OPTIONS)
        path.write_bytes(buffer.getbuffer())
        return first
    # Dropping the batches stops that run. Sinking the query itself spares a second
    # streaming engine, which relayed its batches through a Python source into the sink.
    del batches, first
    query.sink_parquet(path, engine="streaming", **_OPTIONS)
    return pl.scan_parquet(path)


def collected(result: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """A query over what :func:`write` returned, run: streamed over a file's scan."""
    return result.collect(engine="streaming") if isinstance(result, pl.LazyFrame) else result


def decode(source: bytes | BinaryIO) -> pl.LazyFrame:
    """A lazy scan over a Parquet file held in memory or open: a query on it decodes only
    the columns and row groups it needs."""
    return pl.scan_parquet(io.BytesIO(source) if isinstance(source, bytes) else source)
