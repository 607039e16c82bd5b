"""Dagster time partitions for daily, monthly and yearly periods."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from piot_dagster.engine.periods import TIME_UNITS, TimeUnit

__all__ = ["partition_unit", "time_partitions"]

_CRONS: dict[str, TimeUnit] = {
    "0 * * * *": "hourly",
    "0 0 * * *": "daily",
    # Weeks start on Monday (ISO 8601), as execute_on_ray's weekly periods do. Dagster's
    # own WeeklyPartitionsDefinition starts on Sunday unless given day_offset=1.
    "0 0 * * 1": "weekly",
    "0 0 1 * *": "monthly",
    "0 0 1 1 *": "yearly",
}
_FORMATS: dict[TimeUnit, str] = {"hourly": "%Y-%m-%d-%H:%M", "yearly": "%Y"}


def time_partitions(
    unit: TimeUnit,
    start: str | dt.date,
    *,
    end: str | dt.date | None = None,
    timezone: str = "UTC",
    end_offset: int = 0,
) -> dg.TimeWindowPartitionsDefinition:
    """A Dagster partitions definition with one partition per calendar period of
    ``timezone``: ``"hourly"``, ``"daily"``, ``"weekly"`` (weeks start on Monday, ISO
    8601, as in ``execute_on_ray``), ``"monthly"`` or ``"yearly"``.

    ``start`` and ``end`` (exclusive) may be dates (or datetimes) or strings in the
    partition keys' format: ``2024-01-01-00:00`` for hourly, ``2024-01-01`` for daily,
    weekly and monthly, ``2024`` for yearly.

    Examples
    --------
    >>> time_partitions("yearly", "2020").get_partition_keys()[:2]  # doctest: +SKIP
    ['2020', '2021']
    """
    if unit not in TIME_UNITS:
        raise ValueError(f"unit must be one of {TIME_UNITS}, not {unit!r}")
    fmt = _FORMATS.get(unit, "%Y-%m-%d")

    def key(value: str | dt.date | None) -> str | None:
        return value.strftime(fmt) if isinstance(value, dt.date) else value

    if end is not None and key(end) <= key(start):  # type: ignore[operator]
        raise ValueError(
            f"time_partitions({unit!r}, {start!r}, end={end!r}): end is exclusive and must "
            f"come after start"
        )
    cron = next(c for c, u in _CRONS.items() if u == unit)
    try:
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=cron,
            fmt=fmt,
            start=key(start),
            end=key(end),
            timezone=timezone,
            end_offset=end_offset,
        )
    except Exception as exc:
        raise ValueError(
            f"time_partitions({unit!r}, {start!r}, end={end!r}, timezone={timezone!r}): {exc}; "
            f"give dates or keys formatted as {fmt!r}"
        ) from exc


def partition_unit(partitions_def: object) -> TimeUnit:
    """The calendar period of a time partitions definition (ours, or Dagster's own hourly,
    daily and monthly definitions, and weekly ones starting on Monday)."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise TypeError(
            f"partitions must be time-based (hourly, daily, weekly, monthly or yearly), not "
            f"{type(partitions_def).__name__}; use piot_dagster.time_partitions(...)"
        )
    unit = _CRONS.get(partitions_def.cron_schedule)
    if unit is None:
        raise ValueError(
            f"partitions with schedule {partitions_def.cron_schedule!r} are not hourly, daily, "
            f"weekly (from Monday), monthly or yearly; use piot_dagster.time_partitions(...)"
        )
    return unit
