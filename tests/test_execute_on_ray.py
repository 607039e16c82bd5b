"""execute_on_ray on a real local Ray: the seed's promises and issue 2's numbered items."""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import termios
import textwrap
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import cloudpickle
import dagster as dg
import polars as pl
import pytest
import ray
from polars.io.plugins import register_io_source
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster.engine.chunks import CHUNK_BYTES
from piot_dagster.engine.frames import slices

pytestmark = pytest.mark.usefixtures("ray_cluster")

D = pl.col("date")
JAN1, MAR31 = dt.date(2024, 1, 1), dt.date(2024, 3, 31)
PERIOD_LOG = re.compile(r"period (\S+) → (\S+) of 'date': (\d+) rows in [\d.]+ s")


def daily_frame(start: dt.date = dt.date(2023, 12, 1), days: int = 180) -> pl.DataFrame:
    dates = pl.date_range(start, start + dt.timedelta(days=days - 1), eager=True)
    return pl.DataFrame({"date": dates, "v": pl.int_range(days, eager=True)})


def periods_run(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int]]:
    return [
        (m.group(1), m.group(2), int(m.group(3)))
        for r in caplog.records
        if r.name == "piot_dagster" and (m := PERIOD_LOG.search(r.getMessage()))
    ]


def record_calls(directory: Path) -> pl.Expr:
    """An expression that leaves one file per call in ``directory``, from whichever
    process evaluates it, and passes ``v`` through unchanged."""
    target = str(directory)

    def note(v: pl.Series) -> pl.Series:
        import os as _os
        import time as _time
        import uuid as _uuid

        path = _os.path.join(target, _uuid.uuid4().hex)
        with open(path, "w") as f:
            f.write(f"{_time.time()} {len(v)}")
        _time.sleep(0.05)
        with open(path, "a") as f:
            f.write(f" {_time.time()}")
        return v

    return pl.col("v").map_batches(note, return_dtype=pl.Int64, is_elementwise=True)


# 1. Registration ------------------------------------------------------------------------


def test_import_registers_the_piot_namespace_and_the_function_form_agrees():
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    method = lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
    function = piot_dagster.execute_on_ray(lf, date_column="date", time_unit="monthly")
    assert isinstance(method, pl.LazyFrame)
    assert_frame_equal(method.collect(), function.collect())
    assert_frame_equal(method.collect(), lf.collect())


def test_nothing_runs_before_collect(tmp_path):
    lf = daily_frame().lazy().with_columns(v=record_calls(tmp_path))
    query = lf.filter(D.is_between(JAN1, MAR31)).piot.execute_on_ray(
        date_column="date", time_unit="monthly"
    )
    assert list(tmp_path.iterdir()) == []
    query.collect()
    assert list(tmp_path.iterdir())


# 2. Ray not running ---------------------------------------------------------------------


def test_ray_not_initialised_is_a_runtime_error_at_the_call_and_at_collect():
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    query = lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
    ray.shutdown()
    with pytest.raises(RuntimeError, match=r"ray\.init\(\)"):
        query.collect()
    with pytest.raises(RuntimeError, match=r"ray\.init\(\)"):
        lf.piot.execute_on_ray(date_column="date", time_unit="monthly")


# 3. The time range comes from the filters ----------------------------------------------


def test_seed_example_with_the_filter_before_execute_on_ray(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    lf = daily_frame().lazy()
    query = lf.filter(D.is_between(pl.date(2024, 1, 1), pl.date(2024, 3, 31))).piot.execute_on_ray(
        date_column="date", time_unit="monthly"
    )
    assert_frame_equal(query.collect(), lf.filter(D.is_between(JAN1, MAR31)).collect())
    assert [p[:2] for p in periods_run(caplog)] == [
        ("2024-01-01", "2024-02-01"),
        ("2024-02-01", "2024-03-01"),
        ("2024-03-01", "2024-04-01"),
    ]


@pytest.mark.parametrize(
    ("predicate", "months"),
    [
        (D.dt.year() == 2024, 12),
        ((D.dt.year() >= 2024) & (D <= MAR31), 3),
        ((D.dt.year() != 2023) & D.is_between(dt.date(2023, 11, 1), MAR31), 3),
    ],
    ids=["==", ">=", "!="],
)
def test_a_year_comparison_polars_rewrites_runs_on_its_calendar_bounds(caplog, predicate, months):
    # Polars 2.2 rewrites each into ranges of the column, ending at the dtype's first or
    # last date (years ±262142) where the comparison is open: those ends bound nothing,
    # the calendar ends do.
    caplog.set_level(logging.INFO, logger="piot_dagster")
    lf = daily_frame().lazy().filter(predicate)
    got = lf.piot.execute_on_ray(date_column="date", time_unit="monthly").collect()
    assert_frame_equal(got, lf.collect())
    assert len(periods_run(caplog)) == months, "months of 2024 only"


def test_filters_before_and_after_are_intersected(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    lf = daily_frame(dt.date(2023, 1, 1), 730).lazy()
    query = (
        lf.filter(D.is_between(dt.date(2023, 1, 1), dt.date(2023, 6, 30)))
        .piot.execute_on_ray(date_column="date", time_unit="monthly")
        .filter(D >= dt.date(2023, 3, 15))
    )
    expected = lf.filter(D.is_between(dt.date(2023, 3, 15), dt.date(2023, 6, 30))).collect()
    assert_frame_equal(query.collect(), expected)
    assert [p[0] for p in periods_run(caplog)] == [
        "2023-03-01",
        "2023-04-01",
        "2023-05-01",
        "2023-06-01",
    ]


# 4. Unbounded predicates -----------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        None,
        D >= JAN1,
        D <= MAR31,
        D.is_between(JAN1, MAR31) | (pl.col("v") > 3),
        D.is_between(JAN1, MAR31) | (D > MAR31),
    ],
    ids=["no filter", "lower only", "upper only", "or unknown", "or open"],
)
def test_unbounded_filters_raise_a_clear_error_that_shows_the_fix(where):
    query = daily_frame().lazy().piot.execute_on_ray(date_column="date", time_unit="daily")
    if where is not None:
        query = query.filter(where)
    with pytest.raises(piot_dagster.UnboundedRangeError) as info:
        query.collect()
    assert isinstance(info.value, ValueError)
    assert "'date'" in str(info.value)
    assert "is_between(start, end)" in str(info.value)


A = dt.datetime(2024, 1, 10, 0, 0, 0, 1500)
A_TOKYO = A.replace(tzinfo=ZoneInfo("Asia/Tokyo"))
NOON = dt.datetime(2024, 1, 10, 12)


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    ("dtype", "empty"),
    [
        (pl.Datetime("us"), D.is_between(A, A, closed="left")),
        (pl.Datetime("us"), (D > A) & (pl.lit(A) > D)),
        (pl.Date, D.is_between(NOON, NOON)),  # no date is a noon
        (pl.Datetime("ns", "Asia/Tokyo"), D.is_between(A_TOKYO, A_TOKYO, closed="right")),
        (pl.Date, D.is_between(JAN1, JAN1, closed="none")),
        (pl.Date, (D < JAN1) & (D > MAR31)),
    ],
    ids=["left", "crossed", "noon", "zoned", "date none", "date disjoint"],
)
def test_an_empty_range_is_zero_rows_of_the_schema_and_no_task(caplog, dtype, empty, where):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    frame = daily_frame().with_columns(D.cast(dtype))
    run = {"date_column": "date", "time_unit": "daily"}
    lf = frame.lazy()
    query = (
        lf.piot.execute_on_ray(**run).filter(empty)
        if where == "after"
        else lf.filter(empty).piot.execute_on_ray(**run)
    )
    got = query.collect()
    assert_frame_equal(got, lf.filter(empty).collect())
    assert got.height == 0
    assert got.schema == frame.schema
    assert periods_run(caplog) == [], "no period task started"


def test_filters_before_and_after_that_exclude_each_other_give_zero_rows(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    query = (
        daily_frame()
        .lazy()
        .filter(D.is_between(JAN1, MAR31))
        .piot.execute_on_ray(date_column="date", time_unit="monthly")
        .filter(D > MAR31)
    )
    assert query.collect().height == 0
    assert periods_run(caplog) == []


# 5. Calendar periods ---------------------------------------------------------------------


def test_dst_days_in_the_column_time_zone_hold_23_and_25_hours_of_rows(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    zone = "Europe/Berlin"
    hours = pl.datetime_range(
        dt.datetime(2024, 3, 29), dt.datetime(2024, 11, 1), "1h", eager=True, time_zone="UTC"
    ).dt.convert_time_zone(zone)
    lf = pl.DataFrame({"date": hours, "v": pl.int_range(hours.len(), eager=True)}).lazy()
    for first, last in [("2024-03-30", "2024-04-01"), ("2024-10-26", "2024-10-28")]:
        lo, hi = (
            dt.datetime.fromisoformat(d).replace(tzinfo=ZoneInfo(zone)) for d in (first, last)
        )
        bound = D.is_between(lo, hi, closed="left")
        query = lf.piot.execute_on_ray(date_column="date", time_unit="daily").filter(bound)
        assert_frame_equal(query.collect(), lf.filter(bound).collect())
    rows = {p[0]: p[2] for p in periods_run(caplog)}
    assert rows == {"2024-03-30": 24, "2024-03-31": 23, "2024-10-26": 24, "2024-10-27": 25}


@pytest.mark.parametrize(("day", "hours"), [("2024-03-31", 23), ("2024-10-27", 25)])
def test_hourly_periods_of_a_dst_day_are_the_zones_hours_as_dagster_counts_them(caplog, day, hours):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    zone = ZoneInfo("Europe/Berlin")
    minutes = pl.datetime_range(
        dt.datetime(2024, 3, 29), dt.datetime(2024, 11, 1), "20m", eager=True, time_zone="UTC"
    ).dt.convert_time_zone("Europe/Berlin")
    lf = pl.DataFrame({"date": minutes, "v": pl.int_range(minutes.len(), eager=True)}).lazy()
    first = dt.datetime.fromisoformat(day).replace(tzinfo=zone)
    bound = D.is_between(first, first + dt.timedelta(days=1), closed="left")  # wall-clock day

    got = lf.piot.execute_on_ray(date_column="date", time_unit="hourly").filter(bound).collect()

    assert_frame_equal(got, lf.filter(bound).collect())
    runs = [
        record.getMessage() for record in caplog.records if " of 'date': " in record.getMessage()
    ]
    assert len(runs) == hours
    assert all(" 3 rows " in run for run in runs), "every hour holds its three 20-minute rows"
    hourly = dg.HourlyPartitionsDefinition(
        start_date=f"{day}-00:00", end_date=f"{(first + dt.timedelta(days=1)):%Y-%m-%d}-00:00",
        timezone="Europe/Berlin",
    )  # fmt: skip
    windows = [hourly.time_window_for_partition_key(k) for k in hourly.get_partition_keys()]
    labels = [f"{w.start:%Y-%m-%d %H:%M%z} → {w.end:%Y-%m-%d %H:%M%z}" for w in windows]
    assert [run.split("period ", 1)[1].split(" of ", 1)[0] for run in runs] == labels


def test_closed_left_starts_one_task_fewer_than_closed_both(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    lf = daily_frame().lazy().piot.execute_on_ray(date_column="date", time_unit="daily")
    lf.filter(D.is_between(JAN1, dt.date(2024, 1, 10), closed="both")).collect()
    both = len(periods_run(caplog))
    caplog.clear()
    lf.filter(D.is_between(JAN1, dt.date(2024, 1, 10), closed="left")).collect()
    assert (both, len(periods_run(caplog))) == (10, 9)


@pytest.mark.parametrize("zone", [None, "America/New_York"])
def test_a_row_on_a_period_boundary_appears_exactly_once_to_the_nanosecond(zone):
    dtype = pl.Datetime("ns", zone)
    local_midnight = dt.datetime(2024, 1, 2, tzinfo=ZoneInfo(zone or "UTC"))
    midnight_ns = int(local_midnight.timestamp()) * 10**9
    lf = pl.LazyFrame(
        {"date": pl.Series([midnight_ns - 1, midnight_ns, midnight_ns + 1]).cast(dtype)}
    ).with_columns(v=pl.int_range(pl.len()))
    day_ns = 86_400 * 10**9
    bound = D.is_between(
        pl.lit(midnight_ns - day_ns, dtype=dtype), pl.lit(midnight_ns + day_ns, dtype=dtype)
    )
    query = lf.filter(bound).piot.execute_on_ray(date_column="date", time_unit="daily")
    got = query.collect()
    assert got["v"].to_list() == [0, 1, 2]
    assert got.schema == lf.collect_schema()


# 6. Execution ----------------------------------------------------------------------------


class PickleCounter:
    """A UDF that leaves a file in ``directory`` each time it is pickled."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __reduce__(self):
        import uuid

        Path(self.directory, uuid.uuid4().hex).touch()
        return (PickleCounter, (self.directory,))

    def __call__(self, v: pl.Series) -> pl.Series:
        return v


def test_the_plan_is_pickled_once_not_once_per_task(tmp_path):
    counter = PickleCounter(str(tmp_path))
    lf = (
        daily_frame().lazy().with_columns(v=pl.col("v").map_batches(counter, return_dtype=pl.Int64))
    )
    query = lf.filter(D.is_between(JAN1, dt.date(2024, 2, 29))).piot.execute_on_ray(
        date_column="date", time_unit="daily"
    )
    assert query.collect().height == 60
    assert len(list(tmp_path.iterdir())) == 1, "60 tasks, one pickled plan"
    # Collecting again reuses the plan already in the object store.
    assert query.collect().height == 60
    assert len(list(tmp_path.iterdir())) == 1


def test_max_concurrency_bounds_the_tasks_in_flight(tmp_path):
    lf = daily_frame().lazy().with_columns(v=record_calls(tmp_path))
    lf.filter(D.is_between(JAN1, dt.date(2024, 1, 8))).piot.execute_on_ray(
        date_column="date", time_unit="daily", max_concurrency=1
    ).collect()
    spans = sorted(tuple(map(float, f.read_text().split()[::2])) for f in tmp_path.iterdir())
    assert len(spans) == 8
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two tasks overlapped with max_concurrency=1"


def test_stopping_early_submits_no_more_tasks(tmp_path):
    lf = daily_frame(dt.date(2024, 1, 1), 120).lazy().with_columns(v=record_calls(tmp_path))
    got = (
        lf.filter(D.is_between(JAN1, dt.date(2024, 4, 29)))
        .piot.execute_on_ray(date_column="date", time_unit="daily", max_concurrency=4)
        .head(2)
        .collect()
    )
    assert got.height == 2
    ray.get([ray.remote(lambda: None).remote() for _ in range(8)])  # let in-flight tasks end
    assert len(list(tmp_path.iterdir())) <= 8, "most of the 120 periods should never run"


@pytest.mark.parametrize("return_as", ["arrow", "ipc", "parquet"])
def test_every_return_as_gives_plain_polars_rows_and_dtypes(return_as):
    frame = pl.DataFrame(
        {
            "date": pl.datetime_range(
                dt.datetime(2024, 1, 1),
                dt.datetime(2024, 1, 3),
                "6h",
                eager=True,
                time_unit="ms",
                time_zone="Asia/Tokyo",
            ),
        }
    ).with_columns(
        v=pl.int_range(pl.len(), dtype=pl.UInt16),
        s=pl.lit("x").cast(pl.Categorical),
        e=pl.lit("a").cast(pl.Enum(["a", "b"])),
        d=pl.lit(dt.date(2024, 1, 1)),
        f=pl.lit(None, dtype=pl.Float32),
        lst=pl.concat_list(pl.lit(1, dtype=pl.Int8)),
    )
    lf = frame.lazy().filter(D.is_between(frame["date"].min(), frame["date"].max()))
    got = lf.piot.execute_on_ray(date_column="date", time_unit="daily", return_as=return_as)
    assert_frame_equal(got.collect(), lf.collect())


# 7. The Polars source contract -----------------------------------------------------------


def test_head_before_filter_takes_the_first_rows_first():
    lf = (
        daily_frame(dt.date(2024, 1, 1), 366)
        .lazy()
        .filter(D.is_between(JAN1, dt.date(2024, 12, 31)))
    )
    ours = lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
    late = D >= dt.date(2024, 12, 1)
    assert ours.head(10).filter(late).collect().height == 0
    assert_frame_equal(ours.filter(late).head(10).collect(), lf.filter(late).head(10).collect())


def test_projection_keeps_predicate_columns_out_of_the_result():
    lf = daily_frame().lazy()
    got = (
        lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
        .filter(D.is_between(JAN1, MAR31) & (pl.col("v") % 2 == 0))
        .select("v")
        .collect()
    )
    expected = lf.filter(D.is_between(JAN1, MAR31) & (pl.col("v") % 2 == 0)).select("v").collect()
    assert_frame_equal(got, expected)


def test_batches_are_cut_to_batch_size():
    frame = pl.DataFrame({"v": range(10)})
    assert [b.height for b in slices(frame, 4)] == [4, 4, 2]
    assert [b.height for b in slices(frame, None)] == [10]


def test_batch_size_from_polars_config_gives_the_same_result():
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    with pl.Config(streaming_chunk_size=7):
        got = lf.piot.execute_on_ray(date_column="date", time_unit="monthly").collect()
    assert_frame_equal(got, lf.collect())


# 8. remote_options -----------------------------------------------------------------------


def assigned(key: str) -> pl.Expr:
    def probe(v: pl.Series) -> pl.Series:
        import os as _os

        import ray as _ray

        value = (
            _os.environ.get(key[4:], "")
            if key.startswith("env:")
            else str(_ray.get_runtime_context().get_assigned_resources().get(key, 0))
        )
        return pl.Series([value] * len(v), dtype=pl.String)

    return pl.col("v").map_batches(probe, return_dtype=pl.String)


def test_remote_options_reach_each_task():
    lf = daily_frame().lazy().filter(D.is_between(JAN1, dt.date(2024, 1, 2)))
    lf = lf.with_columns(cpus=assigned("CPU"), env=assigned("env:PIOT_TEST_VALUE"))
    got = lf.piot.execute_on_ray(
        date_column="date",
        time_unit="daily",
        remote_options={"num_cpus": 2, "runtime_env": {"env_vars": {"PIOT_TEST_VALUE": "on"}}},
    ).collect()
    assert got["cpus"].unique().to_list() == ["2.0"]
    assert got["env"].unique().to_list() == ["on"]


def failing_once(marker: Path, how: str) -> pl.Expr:
    """Passes ``v`` through, but fails (exiting the worker, or raising) the first time, or
    every time, it sees the row of 2024-01-02: only that period's task sees it, since the
    period's filter on ``date`` is pushed below it."""
    target = str(marker)
    jan2 = (dt.date(2024, 1, 2) - dt.date(2023, 12, 1)).days

    def step(v: pl.Series) -> pl.Series:
        import os as _os

        if jan2 in v.to_list():
            first = not _os.path.exists(target)
            with open(target, "a") as f:
                f.write("run\n")
            if first and how == "exit":
                _os._exit(1)
            if how == "raise" or (first and how == "raise_once"):
                raise ValueError("boom on 2024-01-02")
        return v

    return pl.col("v").map_batches(step, return_dtype=pl.Int64, is_elementwise=True)


def test_a_killed_worker_is_retried(tmp_path):
    marker = tmp_path / "runs"
    lf = daily_frame().lazy().with_columns(v=failing_once(marker, "exit"))
    lf = lf.filter(D.is_between(JAN1, dt.date(2024, 1, 3)))
    got = lf.piot.execute_on_ray(date_column="date", time_unit="daily").collect()
    assert got.height == 3
    assert marker.read_text().count("run") == 2


def test_a_user_error_is_not_retried_and_names_its_period(tmp_path):
    marker = tmp_path / "runs"
    lf = daily_frame().lazy().with_columns(v=failing_once(marker, "raise"))
    query = lf.filter(D.is_between(JAN1, dt.date(2024, 1, 3))).piot.execute_on_ray(
        date_column="date", time_unit="daily"
    )
    with pytest.raises(piot_dagster.PeriodExecutionError) as info:
        query.collect()
    assert "2024-01-02 → 2024-01-03" in str(info.value)
    assert "boom on 2024-01-02" in str(info.value)
    assert info.value.period == "2024-01-02 → 2024-01-03"
    # The worker's own error and traceback are chained.
    assert isinstance(info.value.__cause__, ray.exceptions.RayTaskError)
    assert "line " in str(info.value.__cause__)
    assert "in step" in str(info.value.__cause__)
    assert marker.read_text().count("run") == 1


def test_user_errors_are_retried_when_asked(tmp_path):
    marker = tmp_path / "runs"
    lf = daily_frame().lazy().with_columns(v=failing_once(marker, "raise_once"))
    got = (
        lf.filter(D.is_between(JAN1, dt.date(2024, 1, 3)))
        .piot.execute_on_ray(
            date_column="date",
            time_unit="daily",
            remote_options={"retry_exceptions": True, "max_retries": 2},
        )
        .collect()
    )
    assert got.height == 3
    assert marker.read_text().count("run") == 2


# 10. Pickling ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [pickle, cloudpickle], ids=["pickle", "cloudpickle"])
def test_the_result_pickles_and_collects_after_a_round_trip(module):
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    query = lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
    query.collect()  # a collected query pickles too (its cached object reference is dropped)
    restored = module.loads(module.dumps(query))
    assert_frame_equal(restored.collect(), lf.collect())


# 11. Progress ----------------------------------------------------------------------------


def test_each_period_is_logged_with_start_end_rows_and_seconds(caplog):
    caplog.set_level(logging.INFO, logger="piot_dagster")
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    lf.piot.execute_on_ray(date_column="date", time_unit="monthly").collect()
    assert periods_run(caplog) == [
        ("2024-01-01", "2024-02-01", 31),
        ("2024-02-01", "2024-03-01", 29),
        ("2024-03-01", "2024-04-01", 31),
    ]


def test_no_progress_bar_without_a_terminal(capfd):
    lf = daily_frame().lazy().filter(D.is_between(JAN1, MAR31))
    lf.piot.execute_on_ray(date_column="date", time_unit="daily").collect()
    assert "period" not in capfd.readouterr().err


def test_a_long_run_shows_a_progress_bar_on_a_terminal(tmp_path):
    script = textwrap.dedent(
        """
        import datetime as dt, time
        import polars as pl, ray, piot_dagster
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        def slow(v):
            time.sleep(0.3)
            return v
        lf = pl.DataFrame({"date": pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 20),
                                                 eager=True), "v": range(20)}).lazy()
        lf = lf.with_columns(v=pl.col("v").map_batches(slow, return_dtype=pl.Int64))
        bound = pl.col("date").is_between(dt.date(2024, 1, 1), dt.date(2024, 1, 20))
        lf.filter(bound).piot.execute_on_ray(
            date_column="date", time_unit="daily", max_concurrency=2).collect()
        """
    )
    primary, secondary = os.openpty()
    # A terminal of zero columns would draw an empty bar.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        timeout=120,
        check=False,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    assert re.search(rb"piot: +\d+%.*period/s", output), output.decode(errors="replace")[-2000:]


# Bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"time_unit": "fortnightly"}, ValueError, "time_unit"),
        ({"date_column": "when"}, ValueError, "date_column 'when'"),
        ({"date_column": "v"}, TypeError, "date_column 'v'"),
        ({"return_as": "pandas"}, ValueError, "return_as"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency"),
        ({"remote_options": [("num_cpus", 1)]}, TypeError, "remote_options"),
        ({"remote_options": {"num_cpu": 1}}, ValueError, "remote_options"),
        ({"time_unit": "hourly"}, TypeError, "time_unit 'hourly' needs a Datetime"),
    ],
)
def test_bad_arguments_are_refused_at_the_call_naming_the_argument(kwargs, error, names):
    arguments = {"date_column": "date", "time_unit": "daily", **kwargs}
    with pytest.raises(error, match=re.escape(names)):
        daily_frame().lazy().piot.execute_on_ray(**arguments)


def test_a_non_lazyframe_is_refused():
    with pytest.raises(TypeError, match="LazyFrame"):
        piot_dagster.execute_on_ray(daily_frame(), date_column="date", time_unit="daily")


# 11. Periods larger than a chunk stream back ---------------------------------------------

# 8M rows of (Date, Int64) in January, 96 MB: twelve chunks of 8 MiB.
BIG_ROWS = 8_000_000


def big_january() -> pl.DataFrame:
    return pl.DataFrame(
        {"date": pl.repeat(JAN1, BIG_ROWS, eager=True), "v": pl.int_range(BIG_ROWS, eager=True)}
    ).vstack(pl.DataFrame({"date": [dt.date(2024, 2, 1)], "v": [-1]}))


def test_a_period_larger_than_a_chunk_comes_back_in_chunks_and_equals_polars(tmp_path):
    from piot_dagster.engine.ray_tasks import PeriodTask, ShippedPlan, run

    frame = big_january()
    lf = frame.lazy().filter(D.is_between(JAN1, dt.date(2024, 2, 29)))
    query = lf.piot.execute_on_ray(date_column="date", time_unit="monthly")
    assert_frame_equal(query.collect(), lf.collect())
    query.sink_parquet(tmp_path / "out.parquet")
    assert_frame_equal(pl.read_parquet(tmp_path / "out.parquet"), lf.collect())

    # Seen from the fan-out: January in several chunks, the last marked, February in one.
    task = PeriodTask(where=D < dt.date(2024, 2, 1), head=None, columns=None, return_as="arrow")
    january = piot_dagster.engine.periods.Period(JAN1, dt.date(2024, 2, 1), 0, 0)
    with run(
        ShippedPlan(frame.lazy()),
        [(january, task)],
        column="date",
        schema=frame.schema,
        options={},
        max_concurrency=1,
    ) as results:
        got = list(results)
    assert len(got) > 1
    assert [r.last for r in got] == [False] * (len(got) - 1) + [True]
    assert sum(r.rows for r in got) == BIG_ROWS
    assert max(r.frame.estimated_size() for r in got) < 2 * CHUNK_BYTES


def killed_once_past(marker: Path, *, then_shuffle: bool = False) -> pl.LazyFrame:
    """:func:`big_january` read from a source that kills its worker the first time it
    has yielded 6M rows (past several chunks); with ``then_shuffle``, later reads give the
    rows in reverse, as a database may give them in another order. It yields 100,000-row
    batches on demand, so Polars' streaming engine runs only a few batches ahead of the
    rows taken. Only rows that pass the pushed filter count: February's task reads all of
    January to find none, and must not be the one killed."""
    target = str(marker)
    frame = big_january()

    def source(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _: object
    ) -> Iterator[pl.DataFrame]:
        import os as _os
        import time as _time

        killed = _os.path.exists(target)
        rows = frame.reverse() if killed and then_shuffle else frame
        if n_rows is not None:
            rows = rows.head(n_rows)  # as scan_db's LIMIT: a plain task reads no further
        yielded = 0
        for offset in range(0, rows.height, 100_000):
            batch = rows.slice(offset, 100_000)
            if predicate is not None:
                batch = batch.filter(predicate)
            if yielded >= 6_000_000 and not killed:
                open(target, "w").close()
                _os._exit(1)
            if yielded >= 2_000_000 and not killed:
                _time.sleep(0.05)  # the driver takes the first chunks meanwhile
            yielded += batch.height
            yield batch if with_columns is None else batch.select(with_columns)

    return register_io_source(source, schema=frame.schema)


def test_a_worker_killed_mid_stream_is_retried_and_goes_on_after_the_rows_handed_on(
    tmp_path, caplog
):
    lf = killed_once_past(tmp_path / "killed")
    window = D.is_between(JAN1, dt.date(2024, 2, 29))
    with caplog.at_level(logging.WARNING, logger="piot_dagster"):
        got = lf.filter(window).piot.execute_on_ray(date_column="date", time_unit="monthly")
        got = got.collect()
    assert (tmp_path / "killed").exists()
    assert_frame_equal(got, big_january().filter(window))
    log = caplog.text
    retried = re.search(
        r"retrying the task of period 2024-01-01 → 2024-02-01 after (\d+)", caplog.text
    )
    assert retried is not None, log
    assert int(retried.group(1)) > 0, "the first attempt handed rows on before it was killed"


def test_a_retry_whose_first_rows_differ_fails_naming_the_period_instead_of_mixing(tmp_path):
    lf = killed_once_past(tmp_path / "killed", then_shuffle=True)
    query = lf.filter(D.is_between(JAN1, dt.date(2024, 2, 29))).piot.execute_on_ray(
        date_column="date", time_unit="monthly"
    )
    with pytest.raises(piot_dagster.PeriodExecutionError, match="no fixed order") as info:
        query.collect()
    assert info.value.period == "2024-01-01 → 2024-02-01"
    assert "ORDER BY" in str(info.value)
