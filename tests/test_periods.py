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
    assert period.first_day == day
    assert period.start == instant_us(start)
    assert (period.end - period.start) == hours * 3_600 * 10**6


def test_naive_columns_count_days_in_utc():
    midnight = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    values = IntervalSet.of([(instant_us(midnight) - 1, instant_us(midnight) + 1)])
    periods = split_periods(values, pl.Datetime("us"), "daily")
    assert [p.first_day for p in periods] == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    assert periods[0].end == periods[1].start == instant_us(midnight)


def test_pieces_in_one_period_become_one_task_and_gaps_start_none():
    jan = [(days(dt.date(2024, 1, d)), days(dt.date(2024, 1, d)) + 1) for d in (3, 20)]
    jun = [(days(dt.date(2024, 6, 5)), days(dt.date(2024, 6, 6)))]
    periods = split_periods(IntervalSet.of(jan + jun), pl.Date, "monthly")
    assert [p.first_day.month for p in periods] == [1, 6]
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
    unit=st.sampled_from(["daily", "monthly", "yearly"]),
)
def test_periods_partition_the_range_exactly(lo, width, zone, unit):
    """Every value of the range is in exactly one period, down to the nanosecond."""
    values = IntervalSet.of([(lo, lo + width)])
    periods = split_periods(values, pl.Datetime("ns", zone), unit)
    assert periods[0].start == lo
    assert periods[-1].end == lo + width
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
        assert before.first_day < after.first_day
    assert all(p.start < p.end for p in periods)
