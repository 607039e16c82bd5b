"""Split a range of a date column into calendar periods.

Periods are counted in the column's own time zone (naive columns as UTC): a day runs from
local midnight to local midnight, so it lasts 23 or 25 hours across a DST change; a week
runs from Monday's midnight (ISO 8601); an hour runs from one local full hour to the next,
so a day that falls back has 25 of them, the repeated one told apart by its UTC offset.
Each period is half-open, ``[start, end)``, in the column's physical unit, and clipped to
the range, so a value on a boundary belongs to exactly one period.
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

TimeUnit = Literal["hourly", "daily", "weekly", "monthly", "yearly"]
TIME_UNITS: tuple[TimeUnit, ...] = ("hourly", "daily", "weekly", "monthly", "yearly")
_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HOUR = dt.timedelta(hours=1)

# Where a period starts: a local date for whole days, a local (aware) datetime for hours.
Moment = dt.date | dt.datetime


@dataclass(frozen=True)
class Period:
    """One calendar period: where it starts and where the next one starts, in the column's
    zone, and its bounds in the column's physical unit."""

    first: Moment
    following: Moment
    start: int
    end: int
    # What else tells this period's task apart from others of the same time, if anything
    # (the other key of a multi-dimensional partition: ``symbol=SYM01``).
    qualifier: str = ""

    @property
    def label(self) -> str:
        """``2024-01-01 → 2024-01-02``, with hours and UTC offsets for shorter periods
        (``2024-10-27 02:00+0200 → 2024-10-27 02:00+0100``) and the qualifier if any
        (``2024-01-01 → 2024-01-02 symbol=SYM01``): unique within a run."""
        label = f"{_text(self.first)} → {_text(self.following)}"
        return f"{label} {self.qualifier}" if self.qualifier else label


def _instant(moment: Moment) -> Moment:
    """A moment comparable across a repeated hour: Python compares two datetimes of one
    zone by wall clock, so 02:00+02:00 would equal 02:00+01:00."""
    return moment.astimezone(dt.UTC) if isinstance(moment, dt.datetime) else moment


def _text(moment: Moment) -> str:
    if isinstance(moment, dt.datetime):
        return moment.strftime("%Y-%m-%d %H:%M%z")
    return moment.isoformat()


def period_start(day: dt.date, unit: TimeUnit) -> dt.date:
    """The first day of the period (of whole days) that contains ``day``."""
    if unit == "daily":
        return day
    if unit == "weekly":
        return day - dt.timedelta(days=day.weekday())
    if unit == "monthly":
        return day.replace(day=1)
    if unit == "yearly":
        return day.replace(month=1, day=1)
    raise ValueError(f"{unit!r} periods are not made of whole days")


def next_period_start(start: dt.date, unit: TimeUnit) -> dt.date:
    """The first day of the period after the one starting on ``start``."""
    if unit == "daily":
        return start + dt.timedelta(days=1)
    if unit == "weekly":
        return start + dt.timedelta(days=7)
    if unit == "monthly":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start.replace(year=start.year + 1)


class _Axis:
    """Converts between local calendar moments and a column's physical integers."""

    def __init__(self, dtype: pl.DataType) -> None:
        self.unit_ns = column_unit_ns(dtype)
        self.is_date = dtype == pl.Date
        self.zone = ZoneInfo(getattr(dtype, "time_zone", None) or "UTC")

    def local(self, value: int) -> dt.datetime:
        seconds = value * self.unit_ns // 10**9
        return (_EPOCH_UTC + dt.timedelta(seconds=seconds)).astimezone(self.zone)

    def day_of(self, value: int) -> dt.date:
        if self.is_date:
            return _EPOCH_DATE + dt.timedelta(days=value)
        return self.local(value).date()

    def midnight(self, day: dt.date) -> int:
        if self.is_date:
            return _axis_days(day)
        # fold=0 maps a midnight that a DST gap skips to the first instant of that day.
        return self.instant(dt.datetime(day.year, day.month, day.day, tzinfo=self.zone))

    def hour_of(self, value: int) -> dt.datetime:
        """The local full hour ``value`` falls in (its fold tells a repeated hour apart)."""
        return self.local(value).replace(minute=0, second=0, microsecond=0)

    def next_hour(self, hour: dt.datetime) -> dt.datetime:
        """The next local full hour: an hour on, floored again. Where the offset moves by
        half an hour (Lord Howe) a period lasts half an hour, or an hour and a half when
        the clock goes back: the floor then lands on the same hour, so look further on."""
        at = hour.astimezone(dt.UTC)
        step = _HOUR
        while True:
            later = (at + step).astimezone(self.zone).replace(minute=0, second=0, microsecond=0)
            if _instant(later) > at:
                return later
            step += _HOUR

    def instant(self, moment: dt.datetime) -> int:
        ns = (moment - _EPOCH_UTC) // dt.timedelta(microseconds=1) * 1_000
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
    times in the window's own zone; a Date column compares the window's local dates, so
    it takes only windows of whole days.
    """
    whole_days = start.time() == end.time() == dt.time()
    first: Moment = start.date() if whole_days else start
    following: Moment = end.date() if whole_days else end
    if dtype == pl.Date:
        if not whole_days:
            raise ValueError(
                f"a Date column holds whole days, not the window {_text(start)} → "
                f"{_text(end)}; use a Datetime column, or partitions of whole days"
            )
        return Period(first, following, *(_axis_days(d) for d in (start.date(), end.date())))
    unit_ns = column_unit_ns(dtype)
    aware = getattr(dtype, "time_zone", None) is not None

    def units(moment: dt.datetime) -> int:
        moment = moment if aware else moment.replace(tzinfo=dt.UTC)
        ns = (moment - _EPOCH_UTC) // dt.timedelta(microseconds=1) * 1_000
        return -(-ns // unit_ns)

    return Period(first, following, units(start), units(end))


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
    if unit == "hourly" and axis.is_date:
        raise ValueError("hourly periods need a Datetime column; a Date column holds days")
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
    first: Moment = axis.hour_of(lo) if unit == "hourly" else period_start(axis.day_of(lo), unit)
    while True:
        following: Moment
        if isinstance(first, dt.datetime):
            following = axis.next_hour(first)
            start, end = axis.instant(first), axis.instant(following)
        else:
            following = next_period_start(first, unit)
            start, end = axis.midnight(first), axis.midnight(following)
        clipped = (max(start, lo), min(end, hi))
        if clipped[0] < clipped[1]:
            if periods and _instant(periods[-1].first) == _instant(first):
                periods[-1] = Period(first, following, periods[-1].start, clipped[1])
            else:
                periods.append(Period(first, following, *clipped))
        if end >= hi:
            return
        first = following
