"""A data file's statistics, as a Delta add action carries them for readers to skip files.

Readers skip a file when its ``minValues``/``maxValues`` show that no row can match a
filter, so every bound written here holds every value of the file: a bound that could be
too narrow is left out instead (readers then read the file). Timestamps are written to
the millisecond, as the protocol has them, with the minimum rounded down and the maximum
up; floats only without NaN or infinities; strings only up to 64 characters.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl

from piot_dagster.storage import parquet

__all__ = ["file_stats"]

_LONGEST_STRING = 64
_MS = dt.timedelta(milliseconds=1)


def file_stats(written: pl.DataFrame | pl.LazyFrame) -> str:
    """The ``stats`` of an add action for a file holding ``written`` (its rows, or a scan
    of it; in stored dtypes), from one pass, streamed over a scan: each column's nulls,
    least and greatest value.

    Examples
    --------
    >>> file_stats(pl.DataFrame({"v": [3, None, 1]}))
    '{"numRecords":3,"nullCount":{"v":1},"minValues":{"v":1},"maxValues":{"v":3}}'
    """
    schema = written.collect_schema()
    flat = [name for name, dtype in schema.items() if not dtype.is_nested()]
    aggregates = [pl.len().alias("\0rows")]
    for i, name in enumerate(flat):
        values = pl.col(name)
        # nan_min/nan_max keep a NaN, which then rules the column's bounds out.
        low, high = (
            (values.nan_min(), values.nan_max())
            if schema[name].is_float()
            else (values.min(), values.max())
        )
        aggregates += [
            values.null_count().alias(f"{i}n"),
            low.alias(f"{i}l"),
            high.alias(f"{i}h"),
        ]
    found = parquet.collected(written.select(aggregates))
    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for i, name in enumerate(flat):
        nulls[name] = found[f"{i}n"].item()
        bounds = _bounds(pl.concat([found[f"{i}l"], found[f"{i}h"]]).drop_nulls())
        if bounds is not None:
            lows[name], highs[name] = bounds
    stats: dict[str, Any] = {"numRecords": found["\0rows"].item(), "nullCount": nulls}
    if lows:
        stats["minValues"] = lows
        stats["maxValues"] = highs
    return json.dumps(stats, separators=(",", ":"), ensure_ascii=False)


def _bounds(values: pl.Series) -> tuple[Any, Any] | None:
    """The smallest and largest of ``values`` (a column's least and greatest, no nulls) as
    Delta writes them, or None where no sound bound can be written."""
    dtype = values.dtype
    if values.is_empty():
        return None
    if dtype.is_integer():
        return int(values.min()), int(values.max())  # type: ignore[arg-type]
    if dtype.is_float():
        if not values.is_finite().all():
            return None
        return float(values.min()), float(values.max())  # type: ignore[arg-type]
    if dtype == pl.Boolean:
        return bool(values.min()), bool(values.max())
    if dtype == pl.Date:
        return values.min().isoformat(), values.max().isoformat()  # type: ignore[union-attr]
    if isinstance(dtype, pl.Datetime):
        return _timestamp_bounds(values.min(), values.max(), zoned=dtype.time_zone is not None)  # type: ignore[arg-type]
    if dtype == pl.String and values.str.len_chars().max() <= _LONGEST_STRING:  # type: ignore[operator]
        return values.min(), values.max()
    return None


def _timestamp_bounds(
    low: dt.datetime, high: dt.datetime, *, zoned: bool
) -> tuple[str, str] | None:
    """Millisecond bounds around ``low`` and ``high``: the minimum rounded down, the
    maximum up, in Delta's spelling (``...T10:00:00.123Z`` for UTC instants,
    ``... 10:00:00.123`` without a zone)."""
    floor = low.replace(microsecond=low.microsecond // 1000 * 1000, tzinfo=None)
    ceiling = high.replace(microsecond=high.microsecond // 1000 * 1000, tzinfo=None)
    try:
        if ceiling < high.replace(tzinfo=None):
            ceiling += _MS
    except OverflowError:
        return None
    if zoned:
        return tuple(f"{t.isoformat('T', 'milliseconds')}Z" for t in (floor, ceiling))  # type: ignore[return-value]
    return floor.isoformat(" ", "milliseconds"), ceiling.isoformat(" ", "milliseconds")
