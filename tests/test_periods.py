"""Calendar periods: local midnights, half-open, clipped, and covering the range exactly."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.periods import next_period_start, period_start, split_periods


def days(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def instant_us(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def test_monthly_periods_of_a_date_range():
    values = IntervalSet.of([(days(dt.date(2024, 1, 15)), days(dt.date(2024, 3, 10)))])
    periods = split_periods(values, pl.Date, "monthly")
    assert [p.label for p in periods] == [
        "2024-01-01 → 2024-02-01",
        "2024-02-01 → 2024-03-01",
        "2024-03-01 → 2024-04-01",
    ]
    # Clipped to the range at both ends, contiguous in between.
    assert periods[0].start == days(dt.date(2024, 1, 15))
    assert periods[-1].end == days(dt.date(2024, 3, 10))
    assert [p.end for p in periods[:-1]] == [p.start for p in periods[1:]]


def test_yearly_and_daily_boundaries():
    assert next_period_start(dt.date(2024, 1, 1), "yearly") == dt.date(2025, 1, 1)
    assert period_start(dt.date(2024, 7, 9), "yearly") == dt.date(2024, 1, 1)
    assert next_period_start(dt.date(2024, 12, 1), "monthly") == dt.date(2025, 1, 1)
    assert next_period_start(dt.date(2024, 2, 29), "daily") == dt.date(2024, 3, 1)


@pytest.mark.parametrize(
    ("day", "hours"),
    [(dt.date(2024, 3, 30), 24), (dt.date(2024, 3, 31), 23), (dt.date(2024, 10, 27), 25)],
)
def test_daily_periods_follow_dst_in_the_column_time_zone(day, hours):
    zone = ZoneInfo("Europe/Berlin")
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    values = IntervalSet.of([(instant_us(start), instant_us(start) + 30 * 3_600 * 10**6)])
    period = split_periods(values, pl.Datetime("us", "Europe/Berlin"), "daily")[0]
    assert period.first == day
    assert period.start == instant_us(start)
    assert (period.end - period.start) == hours * 3_600 * 10**6


def test_naive_columns_count_days_in_utc():
    midnight = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    values = IntervalSet.of([(instant_us(midnight) - 1, instant_us(midnight) + 1)])
    periods = split_periods(values, pl.Datetime("us"), "daily")
    assert [p.first for p in periods] == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    assert periods[0].end == periods[1].start == instant_us(midnight)


def test_pieces_in_one_period_become_one_task_and_gaps_start_none():
    jan = [(days(dt.date(2024, 1, d)), days(dt.date(2024, 1, d)) + 1) for d in (3, 20)]
    jun = [(days(dt.date(2024, 6, 5)), days(dt.date(2024, 6, 6)))]
    periods = split_periods(IntervalSet.of(jan + jun), pl.Date, "monthly")
    assert [p.first.month for p in periods] == [1, 6]
    assert (periods[0].start, periods[0].end) == (jan[0][0], jan[1][1])


def test_a_range_beyond_year_9999_is_a_clear_error():
    values = IntervalSet.of([(0, 2**62)])
    with pytest.raises(ValueError, match="years 1 to 9999"):
        split_periods(values, pl.Datetime("us", "UTC"), "yearly")


@given(
    lo=st.integers(-(10**17), 10**17),
    width=st.integers(1, 400 * 86_400 * 10**9),
    zone=st.sampled_from(
        [
            None,
            "UTC",
            "Europe/Berlin",
            "America/Sao_Paulo",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "America/Havana",
        ]
    ),
    unit=st.sampled_from(["daily", "weekly", "monthly", "yearly"]),
)
def test_periods_partition_the_range_exactly(lo, width, zone, unit):
    """Every value of the range is in exactly one period, down to the nanosecond."""
    values = IntervalSet.of([(lo, lo + width)])
    periods = split_periods(values, pl.Datetime("ns", zone), unit)
    assert periods[0].start == lo
    assert periods[-1].end == lo + width
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
        assert before.first < after.first
    assert all(p.start < p.end for p in periods)


def test_weeks_start_on_monday():
    values = IntervalSet.of([(days(dt.date(2024, 1, 3)), days(dt.date(2024, 1, 20)))])
    periods = split_periods(values, pl.Date, "weekly")
    assert [p.label for p in periods] == [
        "2024-01-01 → 2024-01-08",
        "2024-01-08 → 2024-01-15",
        "2024-01-15 → 2024-01-22",
    ]


ZONES = [None, "UTC", "Europe/Berlin", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Havana"]


@given(
    lo=st.integers(1_600_000_000 * 10**9, 1_800_000_000 * 10**9),
    width=st.integers(1, 10 * 86_400 * 10**9),
    zone=st.sampled_from(ZONES),
)
def test_hourly_periods_partition_the_range_at_local_full_hours(lo, width, zone):
    values = IntervalSet.of([(lo, lo + width)])
    periods = split_periods(values, pl.Datetime("ns", zone), "hourly")
    assert periods[0].start == lo
    assert periods[-1].end == lo + width
    local = ZoneInfo(zone or "UTC")
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
        boundary = dt.datetime.fromtimestamp(after.start / 10**9, tz=local)
        assert (boundary.minute, boundary.second) == (0, 0), "boundaries are local full hours"
    assert all(p.start < p.end for p in periods)
    assert len({p.label for p in periods}) == len(periods), "labels tell repeated hours apart"


@pytest.mark.parametrize(
    ("zone", "day", "minutes"),
    [
        ("Europe/Berlin", dt.date(2024, 3, 31), [60, 60, 60]),  # 02:00 is skipped
        ("Europe/Berlin", dt.date(2024, 10, 27), [60, 60, 60, 60, 60]),  # 02:00 twice
        ("Australia/Lord_Howe", dt.date(2024, 10, 6), [60, 60, 30, 60]),  # +10:30 to +11
        ("Australia/Lord_Howe", dt.date(2024, 4, 7), [60, 90, 60, 60]),  # +11 to +10:30
        ("America/Havana", dt.date(2024, 3, 10), [60, 60, 60]),  # the day starts at 01:00
        ("America/Havana", dt.date(2024, 11, 3), [60, 60, 60, 60, 60]),  # 00:00 twice
    ],
)
def test_hourly_periods_across_clock_changes(zone, day, minutes):
    """The first four wall-clock hours of a day whose clock changes: every period starts
    at a local full hour, whatever the shift (a whole hour, half an hour, at midnight)."""
    local = ZoneInfo(zone)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=local)
    end = dt.datetime(day.year, day.month, day.day, 4, tzinfo=local)
    values = IntervalSet.of([(instant_us(start), instant_us(end))])
    periods = split_periods(values, pl.Datetime("us", zone), "hourly")
    assert [(p.end - p.start) // 60_000_000 for p in periods] == minutes
    assert len({p.label for p in periods}) == len(periods)
