"""The Dagster integration on a real local Ray, real Parquet files and scan_db over SQLite;
what a downstream asset reads, and what each partition holds, over real Delta tables too.
(No `from __future__ import annotations`: Dagster reads the downstream annotations.)"""

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import ray
from dagster._core.types.dagster_type import resolve_dagster_type
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayParquetIOManager, RayResource, time_partitions
from piot_dagster.dagster import progress
from piot_dagster.errors import StorageError
from piot_dagster.storage import open_storage
from piot_dagster.storage.delta import PARTITION_COLUMN
from tests.conftest import IOManagerClass

pytestmark = pytest.mark.usefixtures("ray_cluster")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture(scope="module")
def trades_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Hourly trades through 2023-2024 in SQLite, timestamps as naive UTC text."""
    path = tmp_path_factory.mktemp("db") / "trades.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trades (ts TIMESTAMP, day DATE, symbol TEXT, price REAL)")
    conn.execute("CREATE INDEX trades_ts ON trades (ts)")
    start = dt.datetime(2023, 1, 1)
    rows = []
    for hour in range(0, 2 * 366 * 24):
        t = start + dt.timedelta(hours=hour)
        rows.append((t.isoformat(sep=" "), t.date().isoformat(), "AAPL", float(hour)))
    conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def io_manager(
    tmp_path: Path, io_manager_class: IOManagerClass = RayParquetIOManager, **overrides: object
) -> RayParquetIOManager | RayDeltaIOManager:
    return io_manager_class(ray=RayResource(), base_dir=str(tmp_path), **overrides)


def trades_asset(uri: str, partitions_def: dg.PartitionsDefinition, column: str = "ts", **kw):
    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": column},
        **kw,
    )
    def trades() -> pl.LazyFrame:
        return piot_dagster.scan_db("SELECT ts, day, symbol, price FROM trades", connection=uri)

    return trades


def stored(
    tmp_path: Path,
    key: str,
    asset: str = "trades",
    io_manager_class: IOManagerClass = RayParquetIOManager,
) -> pl.DataFrame:
    """Partition ``key`` of ``asset`` as another reader sees it: its Parquet file, or its
    rows of the Delta table without the partition column."""
    if io_manager_class is RayDeltaIOManager:
        table = pl.read_delta(str(tmp_path / asset))
        return table.filter(pl.col(PARTITION_COLUMN) == key).drop(PARTITION_COLUMN)
    return pl.read_parquet(tmp_path / asset / f"{key}.parquet")


# time_partitions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "start", "keys"),
    [
        ("daily", "2024-01-30", ["2024-01-30", "2024-01-31", "2024-02-01"]),
        ("monthly", dt.date(2024, 1, 1), ["2024-01-01", "2024-02-01", "2024-03-01"]),
        ("yearly", "2020", ["2020", "2021", "2022"]),
    ],
)
def test_time_partitions_give_calendar_keys_and_read_back_their_unit(unit, start, keys):
    definition = time_partitions(unit, start, end=None)
    assert definition.get_partition_keys()[:3] == keys
    assert piot_dagster.partition_unit(definition) == unit


def test_dagsters_own_hourly_daily_and_monthly_definitions_are_understood():
    assert piot_dagster.partition_unit(dg.HourlyPartitionsDefinition("2024-01-01-00:00")) == (
        "hourly"
    )
    assert piot_dagster.partition_unit(dg.DailyPartitionsDefinition("2024-01-01")) == "daily"
    assert piot_dagster.partition_unit(dg.MonthlyPartitionsDefinition("2024-01-01")) == "monthly"
    monday_weeks = dg.WeeklyPartitionsDefinition("2024-01-01", day_offset=1)
    assert piot_dagster.partition_unit(monday_weeks) == "weekly"


def test_hourly_and_weekly_partitions_match_the_engines_periods():
    assert time_partitions("hourly", dt.date(2024, 1, 1)).get_partition_keys()[:2] == [
        "2024-01-01-00:00",
        "2024-01-01-01:00",
    ]
    weeks = time_partitions("weekly", "2024-01-01", end="2024-01-22").get_partition_keys()
    assert weeks == ["2024-01-01", "2024-01-08", "2024-01-15"]
    assert {dt.date.fromisoformat(w).weekday() for w in weeks} == {0}, "ISO weeks, from Monday"


def test_partitions_that_are_not_calendar_periods_are_refused():
    with pytest.raises(TypeError, match="time-based"):
        piot_dagster.partition_unit(dg.StaticPartitionsDefinition(["a"]))
    with pytest.raises(ValueError, match="not hourly, daily, weekly"):
        piot_dagster.partition_unit(dg.WeeklyPartitionsDefinition("2024-01-07"))
    with pytest.raises(ValueError, match="'%Y'"):
        time_partitions("yearly", "2020-01-01")
    with pytest.raises(ValueError, match="unit"):
        time_partitions("fortnightly", "2020-01-01")  # type: ignore[arg-type]


# RayResource ----------------------------------------------------------------------------


def test_ray_resource_uses_a_running_ray_and_leaves_it_running():
    resource = RayResource()
    context = dg.build_init_resource_context()
    resource.setup_for_execution(context)
    assert resource.cluster_address
    resource.teardown_after_execution(context)
    assert ray.is_initialized()


def test_ray_resource_starts_and_stops_only_its_own_cluster():
    ray.shutdown()
    resource = RayResource(address="local", num_cpus=1, include_dashboard=False)
    context = dg.build_init_resource_context()
    resource.setup_for_execution(context)
    try:
        assert not ray.is_initialized(), "Ray starts on first use, not with the resource"
        resource.connect()
        assert ray.is_initialized()
        assert resource.started_cluster
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        resource.teardown_after_execution(context)
    assert not ray.is_initialized()


# handle_output --------------------------------------------------------------------------


def test_one_daily_partition_is_one_file_with_only_its_rows(trades_uri, tmp_path):
    asset = trades_asset(trades_uri, time_partitions("daily", "2024-01-01"))
    result = dg.materialize(
        [asset], partition_key="2024-01-15", resources={"io_manager": io_manager(tmp_path)}
    )
    assert result.success
    frame = stored(tmp_path, "2024-01-15")
    assert frame.height == 24
    assert frame["ts"].min() == dt.datetime(2024, 1, 15)
    assert frame["ts"].max() == dt.datetime(2024, 1, 15, 23)
    (event,) = result.asset_materializations_for_node("trades")
    metadata = event.metadata
    assert metadata["dagster/partition_row_count"].value == 24
    assert "dagster/row_count" not in metadata, "that is the whole asset's, not a partition's"
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].value.columns] == [
        ("ts", "Datetime(us)"),
        ("day", "Date"),
        ("symbol", "String"),
        ("price", "Float64"),
    ]
    assert metadata["path"].value.endswith("trades/2024-01-15.parquet")
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB)", metadata["size"].value)
    assert "WHERE" in metadata["sql"].value
    assert "ts" in metadata["sql"].value
    # The tests' Ray was running before the run, and goes on after it: worth a link.
    assert metadata["ray_cluster"].value == ray.get_runtime_context().gcs_address
    assert "partitions" not in metadata, "run totals go to the run, not to each partition"


def test_a_single_run_range_writes_every_partition_with_its_own_metadata(trades_uri, tmp_path):
    asset = trades_asset(trades_uri, time_partitions("daily", "2024-01-01"))
    tags = {RANGE_START: "2024-03-30", RANGE_END: "2024-04-02"}
    result = dg.materialize([asset], tags=tags, resources={"io_manager": io_manager(tmp_path)})
    assert result.success
    events = result.asset_materializations_for_node("trades")
    assert [e.partition for e in events] == ["2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02"]
    assert all(e.metadata["dagster/partition_row_count"].value == 24 for e in events)
    assert len({e.metadata["path"].value for e in events}) == 4
    for day in ("2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02"):
        frame = stored(tmp_path, day)
        assert frame["ts"].dt.date().unique().to_list() == [dt.date.fromisoformat(day)]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_partition_its_assets_own_filter_excludes_is_stored_empty_without_reading(
    trades_uri, tmp_path
):
    @dg.asset(
        name="trades",
        partitions_def=time_partitions("daily", "2024-01-01"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def until_march() -> pl.LazyFrame:
        source = piot_dagster.scan_db("SELECT ts, price FROM trades", connection=trades_uri)
        return source.filter(pl.col("ts") < dt.datetime(2024, 3, 1))

    tags = {RANGE_START: "2024-02-28", RANGE_END: "2024-03-02"}
    result = dg.materialize(
        [until_march], tags=tags, resources={"io_manager": io_manager(tmp_path)}
    )

    assert result.success
    events = {e.partition: e.metadata for e in result.asset_materializations_for_node("trades")}
    rows = {key: m["dagster/partition_row_count"].value for key, m in events.items()}
    assert rows == {"2024-02-28": 24, "2024-02-29": 24, "2024-03-01": 0, "2024-03-02": 0}
    empty = stored(tmp_path, "2024-03-02")
    assert empty.height == 0
    assert empty.schema == pl.Schema({"ts": pl.Datetime("us"), "price": pl.Float64})
    # Polars folds the contradiction to false; the database is asked for no row.
    assert "WHERE FALSE" in events["2024-03-02"]["sql"].value


def test_a_tz_aware_daily_asset_counts_dst_days_of_23_and_25_hours(
    trades_uri, tmp_path, io_manager_class
):
    berlin = time_partitions("daily", "2024-01-01", timezone="Europe/Berlin")

    @dg.asset(
        partitions_def=berlin,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def trades() -> pl.LazyFrame:
        source = piot_dagster.scan_db("SELECT ts, price FROM trades", connection=trades_uri)
        return source.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))

    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    tags = {RANGE_START: "2024-03-30", RANGE_END: "2024-03-31"}
    assert dg.materialize([trades], tags=tags, resources=resources).success
    tags = {RANGE_START: "2024-10-27", RANGE_END: "2024-10-27"}
    assert dg.materialize([trades], tags=tags, resources=resources).success
    rows = {
        day: stored(tmp_path, day, io_manager_class=io_manager_class).height
        for day in ("2024-03-30", "2024-03-31", "2024-10-27")
    }
    assert rows == {"2024-03-30": 24, "2024-03-31": 23, "2024-10-27": 25}
    first = stored(tmp_path, "2024-03-31", io_manager_class=io_manager_class)["ts"].min()
    assert first == dt.datetime(2024, 3, 30, 23, tzinfo=dt.UTC)  # Berlin midnight, in UTC


@pytest.mark.parametrize(
    ("unit", "key", "rows"),
    [("monthly", "2024-02-01", 29 * 24), ("yearly", "2023", 365 * 24)],
)
def test_monthly_and_yearly_partitions_hold_their_whole_period(
    trades_uri, tmp_path, io_manager_class, unit, key, rows
):
    asset = trades_asset(
        trades_uri, time_partitions(unit, "2023-01-01" if unit == "monthly" else "2023")
    )
    result = dg.materialize(
        [asset], partition_key=key, resources={"io_manager": io_manager(tmp_path, io_manager_class)}
    )
    assert result.success
    assert stored(tmp_path, key, io_manager_class=io_manager_class).height == rows


def test_a_date_column_partitions_by_its_local_dates(trades_uri, tmp_path, io_manager_class):
    asset = trades_asset(trades_uri, time_partitions("monthly", "2023-01-01"), column="day")
    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    assert dg.materialize([asset], partition_key="2024-02-01", resources=resources).success
    stored_month = stored(tmp_path, "2024-02-01", io_manager_class=io_manager_class)
    assert stored_month["day"].unique().len() == 29


def test_a_non_partitioned_asset_is_one_task_and_one_file(tmp_path):
    @dg.asset
    def small() -> pl.DataFrame:
        return pl.DataFrame({"v": [1, 2, 3]})

    result = dg.materialize([small], resources={"io_manager": io_manager(tmp_path)})
    assert result.success
    assert pl.read_parquet(tmp_path / "small.parquet")["v"].to_list() == [1, 2, 3]


# load_input -----------------------------------------------------------------------------


def upstream_three_days(uri: str) -> dg.AssetsDefinition:
    return trades_asset(uri, time_partitions("daily", "2024-01-01", end="2024-01-04"))


def materialize_all(
    asset: dg.AssetsDefinition,
    tmp_path: Path,
    io_manager_class: IOManagerClass,
    end: str = "2024-01-03",
) -> None:
    tags = {RANGE_START: "2024-01-01", RANGE_END: end}
    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    assert dg.materialize([asset], tags=tags, resources=resources).success


@pytest.mark.parametrize(
    "annotation",
    [pl.LazyFrame, pl.DataFrame, None, dict[str, pl.DataFrame], dict[str, pl.LazyFrame]],
    ids=["LazyFrame", "DataFrame", "none", "dict-DataFrame", "dict-LazyFrame"],
)
def test_a_downstream_asset_gets_every_partition_as_its_annotation_asks(
    trades_uri, tmp_path, io_manager_class, annotation
):
    upstream = upstream_three_days(trades_uri)
    materialize_all(upstream, tmp_path, io_manager_class)
    seen = {}

    def body(trades):
        seen["value"] = trades
        return pl.DataFrame({"n": [1]})

    if annotation is not None:
        body.__annotations__ = {"trades": annotation, "return": pl.DataFrame}
    combined = dg.asset(name="combined", deps=None, ins={"trades": dg.AssetIn("trades")})(body)
    result = dg.materialize(
        [upstream, combined],
        selection=[combined],
        resources={"io_manager": io_manager(tmp_path, io_manager_class)},
    )
    assert result.success
    value = seen["value"]
    days = ("2024-01-01", "2024-01-02", "2024-01-03")
    expected = pl.concat([stored(tmp_path, d, io_manager_class=io_manager_class) for d in days])
    if isinstance(value, dict):
        assert list(value) == ["2024-01-01", "2024-01-02", "2024-01-03"]
        frames = [v.collect() if isinstance(v, pl.LazyFrame) else v for v in value.values()]
        assert_frame_equal(pl.concat(frames), expected)
    else:
        assert isinstance(value, pl.LazyFrame if annotation is pl.LazyFrame else pl.DataFrame)
        got = value.collect() if isinstance(value, pl.LazyFrame) else value
        assert_frame_equal(got, expected)


def test_a_dict_input_holds_one_entry_even_when_one_partition_exists(
    trades_uri, tmp_path, io_manager_class
):
    upstream = trades_asset(trades_uri, time_partitions("daily", "2024-01-01", end="2024-01-02"))
    materialize_all(upstream, tmp_path, io_manager_class, end="2024-01-01")
    seen = {}

    @dg.asset(ins={"trades": dg.AssetIn("trades")})
    def combined(trades: dict[str, pl.DataFrame]) -> pl.DataFrame:
        seen["value"] = trades
        return pl.DataFrame({"n": [1]})

    result = dg.materialize(
        [upstream, combined],
        selection=[combined],
        resources={"io_manager": io_manager(tmp_path, io_manager_class)},
    )
    assert result.success
    assert list(seen["value"]) == ["2024-01-01"]
    assert seen["value"]["2024-01-01"].height == 24


def keys_a_coarser_downstream_sees(
    uri: str,
    tmp_path: Path,
    io_manager_class: IOManagerClass,
    upstream: dg.PartitionsDefinition,
    upstream_range: tuple[str, str],
    downstream: dg.PartitionsDefinition,
    key: str,
) -> list[str]:
    """Materializes ``upstream_range`` of a trades asset, then partition ``key`` of a
    coarser ``downstream`` asset (stored as "downstream") over it; the upstream partition
    keys the downstream received."""
    trades = trades_asset(uri, upstream)
    start, end = upstream_range
    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    tags = {RANGE_START: start, RANGE_END: end}
    assert dg.materialize([trades], tags=tags, resources=resources).success
    seen = {}

    @dg.asset(
        partitions_def=downstream,
        metadata={"date_column": "ts"},
        ins={"trades": dg.AssetIn("trades", metadata={"allow_missing_partitions": True})},
    )
    def downstream(trades: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
        seen["keys"] = list(trades)
        return pl.concat(trades.values())

    result = dg.materialize(
        [trades, downstream], selection=[downstream], partition_key=key, resources=resources
    )
    assert result.success
    return seen["keys"]


def test_a_monthly_downstream_gets_exactly_its_months_daily_partitions(
    trades_uri, tmp_path, io_manager_class
):
    keys = keys_a_coarser_downstream_sees(
        trades_uri,
        tmp_path,
        io_manager_class,
        time_partitions("daily", "2024-01-01"),
        ("2024-01-30", "2024-02-02"),
        time_partitions("monthly", "2024-01-01"),
        "2024-02-01",
    )
    assert keys == ["2024-02-01", "2024-02-02"]
    downstream = stored(tmp_path, "2024-02-01", "downstream", io_manager_class)
    assert downstream.height == 48


def test_missing_upstream_partitions_are_listed_in_a_clear_error(
    trades_uri, tmp_path, io_manager_class
):
    upstream = upstream_three_days(trades_uri)
    materialize_all(upstream, tmp_path, io_manager_class, end="2024-01-01")

    @dg.asset(ins={"trades": dg.AssetIn("trades")})
    def combined(trades: pl.DataFrame) -> pl.DataFrame:
        return trades

    with pytest.raises(
        FileNotFoundError, match=r"2 partition\(s\) are not materialized: 2024-01-02, 2024-01-03"
    ):
        dg.materialize(
            [upstream, combined],
            selection=[combined],
            resources={"io_manager": io_manager(tmp_path, io_manager_class)},
        )


def test_missing_partitions_are_skipped_with_a_warning_when_allowed(
    trades_uri, tmp_path, io_manager_class
):
    upstream = upstream_three_days(trades_uri)
    materialize_all(upstream, tmp_path, io_manager_class, end="2024-01-01")

    @dg.asset(ins={"trades": dg.AssetIn("trades", metadata={"allow_missing_partitions": True})})
    def combined(trades: pl.DataFrame) -> pl.DataFrame:
        return trades

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [upstream, combined],
            selection=[combined],
            instance=instance,
            resources={"io_manager": io_manager(tmp_path, io_manager_class)},
        )
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.output_for_node("combined").height == 24
    shown = "trades: 2 of 3 partitions not stored, skipped: 2024-01-02..2024-01-03"
    assert any(m.endswith(shown) for m in messages), messages


# Progress -------------------------------------------------------------------------------


def test_the_run_log_gets_progress_and_totals_not_a_line_per_partition(
    trades_uri, tmp_path, monkeypatch
):
    # Every partition past the first is "a few seconds" later, so each says its progress.
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    asset = trades_asset(trades_uri, time_partitions("daily", "2024-01-01"))
    tags = {RANGE_START: "2024-01-01", RANGE_END: "2024-01-03"}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset], tags=tags, instance=instance, resources={"io_manager": io_manager(tmp_path)}
        )
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    said = [re.sub(r"in \d+ s$", "in N s", m) for m in messages if "partitions stored" in m]
    assert said == [
        "asset trades: 1 of 3 partitions stored (33%) in N s",
        "asset trades: 2 of 3 partitions stored (67%) in N s",
    ]
    assert any("asset trades: 3 partition(s), 72 rows, stored in" in m for m in messages)
    assert not [m for m in messages if "period 2024-01-01" in m], "no line per partition"


# Bad input ------------------------------------------------------------------------------


def test_a_missing_date_column_names_the_asset_and_the_column(trades_uri, tmp_path):
    asset = trades_asset(trades_uri, time_partitions("daily", "2024-01-01"), column="when")
    with pytest.raises(
        ValueError, match=r"date_column 'when' is not a column(?s:.*)\nin asset trades"
    ):
        dg.materialize(
            [asset], partition_key="2024-01-15", resources={"io_manager": io_manager(tmp_path)}
        )


def test_partitions_that_are_not_time_based_are_refused_naming_the_asset(trades_uri, tmp_path):
    asset = trades_asset(trades_uri, dg.StaticPartitionsDefinition(["a"]))
    with pytest.raises(TypeError, match=r"partitions must be time windows(?s:.*)\nin asset trades"):
        dg.materialize([asset], partition_key="a", resources={"io_manager": io_manager(tmp_path)})


# Any time window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partitions_def", "first", "last"),
    [
        # A day that falls back: 25 hourly partitions, the repeated hour keyed with its offset.
        (
            dg.HourlyPartitionsDefinition("2024-10-26-00:00", timezone="Europe/Berlin"),
            "2024-10-27-00:00",
            "2024-10-27-23:00",
        ),
        (time_partitions("weekly", "2024-01-01"), "2024-01-01", "2024-01-22"),
        # A custom cron: days from 06:00 to 06:00 in New York.
        (
            dg.TimeWindowPartitionsDefinition(
                cron_schedule="0 6 * * *",
                fmt="%Y-%m-%d",
                start="2024-03-01",
                timezone="America/New_York",
            ),
            "2024-03-09",
            "2024-03-11",
        ),
    ],
)
def test_any_time_window_partitions_store_exactly_their_windows_rows(
    trades_uri, tmp_path, io_manager_class, partitions_def, first, last
):
    asset = trades_asset(trades_uri, partitions_def)
    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    result = dg.materialize(
        [asset], resources=resources, tags={RANGE_START: first, RANGE_END: last}
    )
    assert result.success
    source = piot_dagster.scan_db(
        "SELECT ts, day, symbol, price FROM trades", connection=trades_uri
    )
    keys = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    assert len({e.partition for e in result.asset_materializations_for_node("trades")}) == len(keys)
    for key in keys:
        window = partitions_def.time_window_for_partition_key(key)
        # The column is naive UTC: the window's wall times in its own zone.
        lo, hi = (moment.replace(tzinfo=None) for moment in (window.start, window.end))
        expected = source.filter(pl.col("ts").is_between(lo, hi, closed="left")).collect()
        assert_frame_equal(stored(tmp_path, key, io_manager_class=io_manager_class), expected)


def test_hourly_partitions_of_a_date_column_are_refused_naming_asset_and_partition(tmp_path):
    @dg.asset(
        partitions_def=dg.HourlyPartitionsDefinition("2024-01-01-00:00"),
        metadata={"date_column": "d"},
    )
    def days() -> pl.DataFrame:
        return pl.DataFrame({"d": [dt.date(2024, 1, 1)]})

    refused = r"a Date column(?s:.*)\nin partition 2024-01-01-05:00 of asset days"
    with pytest.raises(ValueError, match=refused):
        dg.materialize(
            [days], partition_key="2024-01-01-05:00", resources={"io_manager": io_manager(tmp_path)}
        )


def test_an_asset_returning_something_else_is_refused_naming_it(tmp_path):
    @dg.asset
    def numbers() -> list:
        return [1, 2]

    with pytest.raises(TypeError, match="asset numbers returned list"):
        dg.materialize([numbers], resources={"io_manager": io_manager(tmp_path)})


def test_a_base_dir_that_cannot_be_written_names_the_asset(tmp_path):
    @dg.asset
    def small() -> pl.DataFrame:
        return pl.DataFrame({"v": [1]})

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    target = "/proc/piot-cannot-write" if Path("/proc").exists() else str(locked / "sub")
    with pytest.raises(StorageError, match="asset small"):
        dg.materialize([small], resources={"io_manager": io_manager(Path(target))})


@pytest.mark.parametrize("part", ["..", "a/b", "a\\b", "", ".hidden"])
def test_keys_that_would_escape_base_dir_are_refused(tmp_path, part):
    with pytest.raises(ValueError, match="cannot name a file"):
        open_storage(tmp_path).key(["trades"], part)
    with pytest.raises(ValueError, match="cannot name a file"):
        open_storage(tmp_path).key([part, "x"], "2024-01-01")


def test_an_asset_key_escaping_base_dir_is_refused(tmp_path):
    @dg.asset(key=dg.AssetKey(["..", "escape"]))
    def escape() -> pl.DataFrame:
        return pl.DataFrame({"v": [1]})

    with pytest.raises(ValueError, match="cannot name a file"):
        dg.materialize([escape], resources={"io_manager": io_manager(tmp_path)})
    assert not (tmp_path.parent / "escape.parquet").exists()


# Executors ------------------------------------------------------------------------------


def test_the_dagster_cli_runs_a_range_under_the_multiprocess_executor(trades_uri, tmp_path):
    """The CLI's default executor runs each step in a subprocess; RayResource there joins
    the running cluster named by RAY_ADDRESS instead of starting one per step."""
    import os
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "out"
    code = tmp_path / "defs.py"
    code.write_text(
        textwrap.dedent(
            f"""
            import dagster as dg
            import piot_dagster
            from piot_dagster import RayParquetIOManager, RayResource, time_partitions

            @dg.asset(
                partitions_def=time_partitions("daily", "2024-01-01"),
                backfill_policy=dg.BackfillPolicy.single_run(),
                metadata={{"date_column": "ts"}},
            )
            def trades():
                return piot_dagster.scan_db(
                    "SELECT ts, price FROM trades", connection={trades_uri!r}
                )

            io_manager = RayParquetIOManager(ray=RayResource(), base_dir={str(out)!r})
            defs = dg.Definitions(assets=[trades], resources={{"io_manager": io_manager}})
            """
        )
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    dagster = Path(sys.executable).parent / "dagster"
    command = [
        str(dagster),
        "asset",
        "materialize",
        "-f",
        str(code),
        "--select",
        "trades",
        "--partition-range",
        "2024-01-01...2024-01-03",
    ]
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "trades").iterdir()) == [
        "2024-01-01.parquet",
        "2024-01-02.parquet",
        "2024-01-03.parquet",
    ]


def test_the_in_process_executor_runs_a_job_with_ray_set_up_once(trades_uri, tmp_path):
    asset = trades_asset(trades_uri, time_partitions("daily", "2024-01-01"))
    defs = dg.Definitions(
        assets=[asset],
        resources={"io_manager": io_manager(tmp_path)},
        executor=dg.in_process_executor,
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key="2024-01-05")
    assert result.success
    assert stored(tmp_path, "2024-01-05").height == 24


# Dagster's own testing contexts and per-asset overrides ----------------------------------


def test_output_and_input_contexts_built_by_hand_round_trip_a_range(
    trades_uri, tmp_path, io_manager_class
):
    daily = time_partitions("daily", "2024-01-01")
    manager = io_manager(tmp_path, io_manager_class, date_column="ts")
    frame = piot_dagster.scan_db("SELECT ts, price FROM trades", connection=trades_uri)
    keys = dg.PartitionKeyRange("2024-01-10", "2024-01-12")
    out = dg.build_output_context(
        asset_key=dg.AssetKey(["market", "trades"]),
        asset_partitions_def=daily,
        asset_partition_key_range=keys,
        resources={"ray": RayResource()},
    )
    manager.handle_output(out, frame)
    logged = out.get_logged_metadata()
    assert logged["partitions"].value == 3
    assert logged["rows"].value == 72
    if io_manager_class is RayDeltaIOManager:
        table = DeltaTable(str(tmp_path / "market" / "trades"))
        assert sorted(p[PARTITION_COLUMN] for p in table.partitions()) == [
            "2024-01-10",
            "2024-01-11",
            "2024-01-12",
        ]
    else:
        assert (tmp_path / "market" / "trades" / "2024-01-11.parquet").exists()
    into = dg.build_input_context(
        asset_key=dg.AssetKey(["market", "trades"]),
        asset_partitions_def=daily,
        asset_partition_key_range=keys,
        dagster_type=resolve_dagster_type(dict[str, pl.DataFrame]),
    )
    loaded = manager.load_input(into)
    assert list(loaded) == ["2024-01-10", "2024-01-11", "2024-01-12"]
    assert sum(f.height for f in loaded.values()) == 72


def test_an_asset_overrides_remote_options_and_max_concurrency_in_its_metadata(
    trades_uri, tmp_path
):
    def flag(v: pl.Series) -> pl.Series:
        import os as _os

        return pl.Series([_os.environ.get("PIOT_FLAG", "off")] * len(v), dtype=pl.String)

    @dg.asset(
        partitions_def=time_partitions("daily", "2024-01-01"),
        metadata={
            "date_column": "ts",
            "max_concurrency": 1,
            "remote_options": {"runtime_env": {"env_vars": {"PIOT_FLAG": "on"}}},
        },
    )
    def flagged() -> pl.LazyFrame:
        source = piot_dagster.scan_db("SELECT ts, price FROM trades", connection=trades_uri)
        return source.with_columns(flag=pl.col("price").map_batches(flag, return_dtype=pl.String))

    result = dg.materialize(
        [flagged], partition_key="2024-01-02", resources={"io_manager": io_manager(tmp_path)}
    )
    assert result.success
    assert stored(tmp_path, "2024-01-02", asset="flagged")["flag"].unique().to_list() == ["on"]


def test_a_non_partitioned_upstream_loads_as_its_one_file(tmp_path, io_manager_class):
    @dg.asset
    def small() -> pl.DataFrame:
        return pl.DataFrame({"v": [1, 2, 3]})

    @dg.asset
    def doubled(small: pl.LazyFrame) -> pl.DataFrame:
        return small.select(pl.col("v") * 2).collect()

    resources = {"io_manager": io_manager(tmp_path, io_manager_class)}
    result = dg.materialize([small, doubled], resources=resources)
    assert result.success
    assert result.output_for_node("doubled")["v"].to_list() == [2, 4, 6]


def test_a_yearly_downstream_gets_its_years_monthly_partitions(
    trades_uri, tmp_path, io_manager_class
):
    keys = keys_a_coarser_downstream_sees(
        trades_uri,
        tmp_path,
        io_manager_class,
        time_partitions("monthly", "2023-01-01"),
        ("2023-11-01", "2024-02-01"),
        time_partitions("yearly", "2023"),
        "2024",
    )
    assert keys == ["2024-01-01", "2024-02-01"]


def test_ray_resource_fields_resolve_from_environment_variables(monkeypatch):
    monkeypatch.setenv("PIOT_RAY_NAMESPACE", "from-env")
    seen = {}

    @dg.asset
    def probe(ray_cluster: RayResource) -> None:
        seen["namespace"] = ray_cluster.namespace
        seen["address"] = ray_cluster.cluster_address

    resources = {"ray_cluster": RayResource(namespace=dg.EnvVar("PIOT_RAY_NAMESPACE"))}
    assert dg.materialize([probe], resources=resources).success
    assert seen == {"namespace": "from-env", "address": ray.get_runtime_context().gcs_address}


def test_ray_resource_never_imports_ray_data_or_pandas():
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        import dagster as dg
        from piot_dagster import RayResource
        resource = RayResource(address="local", num_cpus=1, include_dashboard=False)
        context = dg.build_init_resource_context()
        resource.setup_for_execution(context)
        resource.teardown_after_execution(context)
        print(sorted(m for m in ("pandas", "ray.data") if m in sys.modules))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_ray_workers_import_no_dagster_and_the_package_still_offers_its_dagster_names():
    import subprocess
    import sys

    # What a Ray worker imports to run a task, in a fresh interpreter.
    script = (
        "import sys, piot_dagster.engine.ray_tasks, piot_dagster.sql.scan, piot_dagster.storage;"
        "print('dagster' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
    # The names loaded on first use are exactly the Dagster layer's public ones.
    assert piot_dagster._DAGSTER == set(piot_dagster.dagster.__all__)
    assert all(
        getattr(piot_dagster, n) is getattr(piot_dagster.dagster, n) for n in piot_dagster._DAGSTER
    )


def test_base_dir_defaults_to_the_instance_storage_directory():
    @dg.asset
    def small() -> pl.DataFrame:
        return pl.DataFrame({"v": [1]})

    with dg.instance_for_test() as instance:
        manager = RayParquetIOManager(ray=RayResource())
        assert dg.materialize([small], instance=instance, resources={"io_manager": manager}).success
        assert (Path(instance.storage_directory()) / "small.parquet").exists()


# One failing partition ------------------------------------------------------------------


# Dagster's switches that make a large backfill's bookkeeping cheap (the planned subset
# alone drops Dagster's per-partition failure marks, which the IO manager restores).
SWITCHES = {
    "per partition": {},
    "one planned subset, batched": {
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
    },
}


@pytest.fixture(params=SWITCHES.values(), ids=SWITCHES.keys())
def dagster_switches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs once per set of switches."""
    for name, value in request.param.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("dagster_switches")
def test_a_failed_backfill_shows_its_failed_partition_failed_and_the_others_stored(tmp_path):
    days = time_partitions("daily", "2024-01-01", end="2024-01-06")

    def check(v: pl.Series) -> pl.Series:
        if (v == 40).any():  # a row of 2024-01-02
            raise ValueError("the source broke on 2024-01-02")
        return v

    @dg.asset(
        partitions_def=days,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def fragile() -> pl.LazyFrame:
        ts = pl.datetime_range(
            dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 5, 23), "1h", eager=True
        )
        frame = pl.DataFrame({"ts": ts, "v": range(ts.len())}).lazy()
        return frame.with_columns(
            v=pl.col("v").map_batches(check, return_dtype=pl.Int64, is_elementwise=True)
        )

    keys = days.get_partition_keys()
    with dg.instance_for_test() as instance:
        run = dg.materialize(
            [fragile],
            instance=instance,
            resources={"io_manager": io_manager(tmp_path)},
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
            raise_on_error=False,
        )
        assert not run.success
        status = instance.get_status_by_partition(fragile.key, keys, days)
    assert status == {
        "2024-01-01": dg.AssetPartitionStatus.MATERIALIZED,
        "2024-01-02": dg.AssetPartitionStatus.FAILED,
        "2024-01-03": dg.AssetPartitionStatus.MATERIALIZED,
        "2024-01-04": dg.AssetPartitionStatus.MATERIALIZED,
        "2024-01-05": dg.AssetPartitionStatus.MATERIALIZED,
    }


@pytest.mark.usefixtures("dagster_switches")
def test_a_backfill_whose_asset_code_raises_shows_every_partition_failed(tmp_path):
    days = time_partitions("daily", "2024-01-01", end="2024-01-04")

    @dg.asset(
        partitions_def=days,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def broken() -> pl.LazyFrame:
        raise ValueError("the asset's own code broke")

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def after(broken: pl.DataFrame) -> pl.DataFrame:
        return broken

    keys = days.get_partition_keys()
    with dg.instance_for_test() as instance:
        run = dg.materialize(
            [broken, after],
            instance=instance,
            resources={"io_manager": io_manager(tmp_path)},
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
            raise_on_error=False,
        )
        assert not run.success
        statuses = [
            instance.get_status_by_partition(asset.key, keys, days) for asset in (broken, after)
        ]
    # The step that never ran (after) is failed too, as Dagster marks it per partition.
    assert statuses == [{key: dg.AssetPartitionStatus.FAILED for key in keys}] * 2


def test_one_failing_partition_fails_the_run_and_spares_the_others(trades_uri, tmp_path):
    marker = tmp_path / "fixed"
    # Prices are the hour index from 2023-01-01: February 2024 is hours 9504 to 10199.
    february = (9504.0, 10200.0)

    def check(price: pl.Series) -> pl.Series:
        import os as _os

        in_february = ((price >= february[0]) & (price < february[1])).any()
        if in_february and not _os.path.exists(str(marker)):
            raise ValueError("the source broke in February")
        return price

    @dg.asset(
        partitions_def=time_partitions("monthly", "2024-01-01"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def fragile() -> pl.LazyFrame:
        source = piot_dagster.scan_db("SELECT ts, price FROM trades", connection=trades_uri)
        price = pl.col("price").map_batches(check, return_dtype=pl.Float64, is_elementwise=True)
        return source.with_columns(price=price)

    resources = {"io_manager": io_manager(tmp_path)}
    tags = {RANGE_START: "2024-01-01", RANGE_END: "2024-04-01"}
    with dg.instance_for_test() as instance:
        with pytest.raises(piot_dagster.PeriodExecutionError) as info:
            dg.materialize([fragile], tags=tags, resources=resources, instance=instance)
        assert instance.get_materialized_partitions(fragile.key) == {
            "2024-01-01",
            "2024-03-01",
            "2024-04-01",
        }, "Dagster records the written partitions: only the failed one is to re-run"
    message = str(info.value)
    assert "asset fragile: partition(s) 2024-02-01 failed" in message
    assert "2024-02-01 → 2024-03-01" in message
    assert "the source broke in February" in message
    folder = tmp_path / "fragile"
    assert sorted(p.name for p in folder.iterdir()) == [
        "2024-01-01.parquet",
        "2024-03-01.parquet",
        "2024-04-01.parquet",
    ], "the failed partition has no file and there are no temporary leftovers"
    assert [pl.read_parquet(folder / f"2024-0{m}-01.parquet").height for m in (1, 3, 4)] == [
        31 * 24,
        31 * 24,
        30 * 24,
    ]
    marker.touch()
    assert dg.materialize([fragile], partition_key="2024-02-01", resources=resources).success
    assert pl.read_parquet(folder / "2024-02-01.parquet").height == 29 * 24


EMBEDDED_RUN = """
import datetime as dt, json, sys
import dagster as dg, polars as pl
from piot_dagster import RayParquetIOManager, RayResource, time_partitions

@dg.asset(partitions_def=time_partitions("daily", "2024-01-01"), metadata={"date_column": "d"})
def days() -> pl.DataFrame:
    return pl.DataFrame({"d": [dt.date(2024, 1, 1)]})

manager = RayParquetIOManager(ray=RayResource(num_cpus=1), base_dir=sys.argv[1])
result = dg.materialize([days], partition_key="2024-01-01", resources={"io_manager": manager})
print(json.dumps(sorted(result.asset_materializations_for_node("days")[0].metadata)))
"""


def test_a_cluster_the_run_starts_and_ends_is_not_linked_from_its_partitions(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", EMBEDDED_RUN, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    keys = json.loads(out.stdout.strip().splitlines()[-1])
    assert "ray_node" in keys
    assert "ray_cluster" not in keys, "an embedded Ray ends with the run: nothing to link to"
