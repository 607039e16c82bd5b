"""Parquet, the format partitions are stored in, kept apart from where the bytes go."""

from __future__ import annotations

import io

import polars as pl

__all__ = ["decode", "encode"]


def encode(frame: pl.DataFrame) -> bytes:
    """``frame`` as a zstd-compressed Parquet file with statistics, so a reader can skip
    row groups by value."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def decode(data: bytes) -> pl.LazyFrame:
    """A lazy scan over a Parquet file held in memory: a query on it decodes only the
    columns and row groups it needs."""
    return pl.scan_parquet(io.BytesIO(data))
