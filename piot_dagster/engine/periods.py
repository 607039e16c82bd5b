"""Split a range of a date column into calendar periods.

Periods are counted in the column's own time zone (naive columns as UTC): a day runs from
local midnight to local midnight, so it lasts 23 or 25 hours across a DST change. Each
period is half-open, ``[start, end)``, in the column's physical unit, and clipped to the
range, so a value on a boundary belongs to exactly one period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.ranges import column_unit_ns

__all__ = [
    "TIME_UNITS",
    "Period",
    "TimeUnit",
    "period_of_window",
    "split_periods",
    "window_filter",
]

TimeUnit = Literal["daily", "monthly", "yearly"]
TIME_UNITS: tuple[TimeUnit, ...] = ("daily", "monthly", "yearly")
_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Period:
    """One calendar period, with its bounds in the column's physical unit."""

    first_day: dt.date
    next_first_day: dt.date
    start: int
    end: int

    @property
    def label(self) -> str:
        return f"{self.first_day.isoformat()} → {self.next_first_day.isoformat()}"


def period_start(day: dt.date, unit: TimeUnit) -> dt.date:
    """The first day of the period that contains ``day``."""
    if unit == "daily":
        return day
    if unit == "monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def next_period_start(start: dt.date, unit: TimeUnit) -> dt.date:
    """The first day of the period after the one starting on ``start``."""
    if unit == "daily":
        return start + dt.timedelta(days=1)
    if unit == "monthly":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start.replace(year=start.year + 1)


class _Axis:
    """Converts between local calendar days and a column's physical integers."""

    def __init__(self, dtype: pl.DataType) -> None:
        self.unit_ns = column_unit_ns(dtype)
        self.is_date = dtype == pl.Date
        self.zone = ZoneInfo(getattr(dtype, "time_zone", None) or "UTC")

    def day_of(self, value: int) -> dt.date:
        if self.is_date:
            return _EPOCH_DATE + dt.timedelta(days=value)
        seconds = value * self.unit_ns // 10**9
        return (_EPOCH_UTC + dt.timedelta(seconds=seconds)).astimezone(self.zone).date()

    def midnight(self, day: dt.date) -> int:
        if self.is_date:
            return _axis_days(day)
        # fold=0 maps a midnight that a DST gap skips to the first instant of that day.
        local = dt.datetime(day.year, day.month, day.day, tzinfo=self.zone)
        ns = (local - _EPOCH_UTC) // dt.timedelta(seconds=1) * 10**9
        return -(-ns // self.unit_ns)


def window_filter(column: str, dtype: pl.DataType, period: Period) -> pl.Expr:
    """``column`` in ``[period.start, period.end)``, with literals of the column's dtype
    so a source below (scan_db) can push the window to its database."""
    col = pl.col(column)
    return (col >= pl.lit(period.start, dtype=dtype)) & (col < pl.lit(period.end, dtype=dtype))


def period_of_window(start: dt.datetime, end: dt.datetime, dtype: pl.DataType) -> Period:
    """The half-open window ``[start, end)`` (tz-aware datetimes, as a Dagster partition
    gives them) in a column's physical unit.

    A tz-aware column compares instants, whatever its zone; a naive column compares wall
    times in the window's own zone; a Date column compares the window's local dates.
    """
    first_day, next_first_day = start.date(), end.date()
    if dtype == pl.Date:
        return Period(
            first_day, next_first_day, *(_axis_days(d) for d in (first_day, next_first_day))
        )
    unit_ns = column_unit_ns(dtype)
    aware = getattr(dtype, "time_zone", None) is not None

    def units(moment: dt.datetime) -> int:
        moment = moment if aware else moment.replace(tzinfo=dt.UTC)
        ns = (moment - _EPOCH_UTC) // dt.timedelta(microseconds=1) * 1_000
        return -(-ns // unit_ns)

    return Period(first_day, next_first_day, units(start), units(end))


def _axis_days(day: dt.date) -> int:
    return (day - _EPOCH_DATE).days


def split_periods(values: IntervalSet, dtype: pl.DataType, unit: TimeUnit) -> list[Period]:
    """The periods, in order, that ``values`` (in the column's physical unit) touch.

    Several pieces of ``values`` inside one period give one period spanning them all.

    Examples
    --------
    >>> s = IntervalSet.of([(19723, 19783)])  # 2024-01-01 up to 2024-03-01, in days
    >>> [p.label for p in split_periods(s, pl.Date, "monthly")]
    ['2024-01-01 → 2024-02-01', '2024-02-01 → 2024-03-01']
    """
    axis = _Axis(dtype)
    periods: list[Period] = []
    for lo, hi in values:
        try:
            _append_periods(periods, axis, int(lo), int(hi), unit)
        except (OverflowError, ValueError) as exc:
            raise ValueError(
                f"the range of the date column, {lo} to {hi} in its physical unit, reaches "
                f"outside the years 1 to 9999; bound it with a narrower filter"
            ) from exc
    return periods


def _append_periods(periods: list[Period], axis: _Axis, lo: int, hi: int, unit: TimeUnit) -> None:
    day = period_start(axis.day_of(lo), unit)
    while True:
        following = next_period_start(day, unit)
        start, end = axis.midnight(day), axis.midnight(following)
        clipped = (max(start, lo), min(end, hi))
        if clipped[0] < clipped[1]:
            if periods and periods[-1].first_day == day:
                periods[-1] = Period(day, following, periods[-1].start, clipped[1])
            else:
                periods.append(Period(day, following, *clipped))
        if end >= hi:
            return
        day = following
