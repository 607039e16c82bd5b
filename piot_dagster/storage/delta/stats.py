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

__all__ = ["file_stats"]

_LONGEST_STRING = 64
_MS = dt.timedelta(milliseconds=1)


def file_stats(frame: pl.DataFrame) -> str:
    """The ``stats`` of an add action for a file holding ``frame`` (in stored dtypes).

    Examples
    --------
    >>> file_stats(pl.DataFrame({"v": [3, None, 1]}))
    '{"numRecords":3,"nullCount":{"v":1},"minValues":{"v":1},"maxValues":{"v":3}}'
    """
    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for series in frame.iter_columns():
        if series.dtype.is_nested():
            continue
        nulls[series.name] = series.null_count()
        bounds = _bounds(series.drop_nulls())
        if bounds is not None:
            lows[series.name], highs[series.name] = bounds
    stats: dict[str, Any] = {"numRecords": frame.height, "nullCount": nulls}
    if lows:
        stats["minValues"] = lows
        stats["maxValues"] = highs
    return json.dumps(stats, separators=(",", ":"), ensure_ascii=False)


def _bounds(values: pl.Series) -> tuple[Any, Any] | None:
    """The smallest and largest of ``values`` (no nulls) as Delta writes them, or None
    where no sound bound can be written."""
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
