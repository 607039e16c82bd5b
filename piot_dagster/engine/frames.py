"""Small helpers on frames shared by the IO sources."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

__all__ = ["slices"]


def slices(frame: pl.DataFrame, batch_size: int | None) -> Iterator[pl.DataFrame]:
    """``frame`` in zero-copy slices of at most ``batch_size`` rows (whole if None)."""
    if not batch_size or frame.height <= batch_size:
        yield frame
        return
    for offset in range(0, frame.height, batch_size):
        yield frame.slice(offset, batch_size)
