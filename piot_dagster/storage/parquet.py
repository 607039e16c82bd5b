"""Parquet, the format partitions are stored in, kept apart from where the bytes go."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

__all__ = ["decode", "sink"]


def sink(query: pl.LazyFrame, path: Path) -> None:
    """``query``'s rows streamed into a zstd-compressed Parquet file at ``path``, with
    statistics so a reader can skip row groups by value. The streaming engine holds a few
    batches at a time, never the whole result (it falls back to the in-memory engine only
    for a plan it cannot stream)."""
    query.sink_parquet(path, compression="zstd", statistics=True, engine="streaming")


def decode(data: bytes) -> pl.LazyFrame:
    """A lazy scan over a Parquet file held in memory: a query on it decodes only the
    columns and row groups it needs."""
    return pl.scan_parquet(io.BytesIO(data))
