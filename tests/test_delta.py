"""RayDeltaIOManager on a real local Ray and real Delta tables (delta-rs): each partition's
Ray task writes its data file, each run commits once, and partitions read back exactly.
(No `from __future__ import annotations`: Dagster reads the downstream annotations.)"""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayResource, time_partitions
from piot_dagster.errors import described
from piot_dagster.storage.delta import PARTITION_COLUMN
from tests.partitioned_prices import RANGE_END, RANGE_START, prices

pytestmark = pytest.mark.usefixtures("ray_cluster")
DAYS = 10
PARTITIONS = time_partitions("daily", "2024-01-01", end="2024-01-11")
KEYS = PARTITIONS.get_partition_keys()


def manager(base_dir: Path | str, **fields: object) -> RayDeltaIOManager:
    return RayDeltaIOManager(ray=RayResource(), base_dir=str(base_dir), **fields)


def daily(frame: pl.DataFrame, name: str = "prices", **metadata: object) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", **metadata},
    )
    def asset() -> pl.LazyFrame:
        return frame.lazy()

    return asset


def backfill(asset, io_manager, first: str, last: str, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        resources={"io_manager": io_manager},
        tags={RANGE_START: first, RANGE_END: last},
        **kw,
    )


def table(base: Path, asset: str = "prices") -> DeltaTable:
    return DeltaTable(str(base / asset))


def rows(base: Path, asset: str = "prices") -> pl.DataFrame:
    """The table's rows as another engine reads them, in time order."""
    return pl.read_delta(str(base / asset)).sort("ts", "symbol")


def days_of(frame: pl.DataFrame, first: str, last: str) -> pl.DataFrame:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return frame.filter(pl.col("ts").dt.date().is_between(start, end))


# One commit per run ---------------------------------------------------------------------


def test_a_single_run_backfill_is_one_commit_of_one_file_per_partition(tmp_path):
    frame = prices(DAYS)

    result = backfill(daily(frame), manager(tmp_path), KEYS[0], KEYS[-1])

    delta = table(tmp_path)
    assert delta.version() == 0
    assert len(delta.file_uris()) == DAYS
    assert {p[PARTITION_COLUMN] for p in delta.partitions()} == set(KEYS)
    commit = delta.history(1)[0]
    assert commit["dagster_run_id"] == result.run_id
    assert commit["dagster_partition_range"] == f"{KEYS[0]}...{KEYS[-1]}"
    assert commit["dagster_partition_count"] == DAYS
    events = result.asset_materializations_for_node("prices")
    assert [e.partition for e in events] == KEYS
    for event in events:
        assert event.metadata["delta_table"].value == str(tmp_path / "prices")
        assert event.metadata["delta_version"].value == 0
        assert event.metadata["dagster/partition_row_count"].value == 48
        assert f"{PARTITION_COLUMN}={event.partition}/part-" in event.metadata["path"].value
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), frame)


def test_a_range_over_an_existing_table_replaces_exactly_its_partitions(tmp_path):
    """dagster-deltalake-polars fails this: it overwrites with its first day's predicate."""
    old, new = prices(DAYS, version=1), prices(DAYS, version=2)
    backfill(daily(old), manager(tmp_path), KEYS[0], KEYS[-1])

    result = backfill(daily(new), manager(tmp_path), "2024-01-02", "2024-01-04")

    assert result.success
    assert table(tmp_path).version() == 1
    expected = pl.concat(
        [
            days_of(old, "2024-01-01", "2024-01-01"),
            days_of(new, "2024-01-02", "2024-01-04"),
            days_of(old, "2024-01-05", "2024-01-10"),
        ]
    )
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), expected)
    versions = {
        e.metadata["delta_version"].value for e in result.asset_materializations_for_node("prices")
    }
    assert versions == {1}


def test_a_partition_its_frame_has_no_rows_for_is_stored_empty_and_found(tmp_path):
    frame = days_of(prices(DAYS), "2024-01-01", "2024-01-01")

    backfill(daily(frame), manager(tmp_path), "2024-01-01", "2024-01-02")

    assert {p[PARTITION_COLUMN] for p in table(tmp_path).partitions()} == {
        "2024-01-01",
        "2024-01-02",
    }
    got = downstream(daily(frame), dict[str, pl.DataFrame], tmp_path, "2024-01-01", "2024-01-02")
    assert [got[k].height for k in ("2024-01-01", "2024-01-02")] == [48, 0]


# Files rolled at a target size ----------------------------------------------------------

# 300,000 rows a day: past the rows a task writes from memory, and about 5 MB compressed.
BIG_DAY = 300_000


def big_days(version: int = 1) -> pl.DataFrame:
    """Two days of ``BIG_DAY`` rows each, with prices that do not compress away."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3), interval="288ms", closed="left",
        eager=True,
    )  # fmt: skip
    assert stamps.len() == 2 * BIG_DAY
    frame = pl.DataFrame({"ts": stamps})
    return frame.with_columns(
        symbol=pl.format("S{}", pl.int_range(pl.len()) % 50),
        price=pl.int_range(pl.len()).hash(version) / 2**64,
        version=pl.lit(version),
    )


def partition_files(delta: DeltaTable, key: str) -> set[str]:
    return {p for p in delta.file_uris() if f"/{PARTITION_COLUMN}={key}/" in p}


def test_a_partition_past_its_target_file_size_lands_as_several_files_in_one_commit(tmp_path):
    frame = big_days()

    result = backfill(daily(frame), manager(tmp_path, target_file_size=2**20), KEYS[0], KEYS[1])

    delta = table(tmp_path)
    assert delta.version() == 0, "one commit"
    for key in KEYS[:2]:
        assert len(partition_files(delta, key)) > 2
    adds = pl.DataFrame(delta.get_add_actions(flatten=True))
    assert adds["num_records"].sum() == 2 * BIG_DAY, "each file's own stats"
    assert adds["size_bytes"].max() < 2 * 2**20
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), frame)
    for event, day in zip(result.asset_materializations_for_node("prices"), KEYS[:2], strict=True):
        assert event.metadata["dagster/partition_row_count"].value == BIG_DAY
        assert event.metadata["date_min"].value == f"{day} 00:00:00"
        assert event.metadata["date_max"].value == f"{day} 23:59:59.712000"
        assert event.metadata["rows_outside_window"].value == 0


def test_a_rerun_of_a_rolled_partition_replaces_all_its_files(tmp_path):
    old, new = big_days(version=1), big_days(version=2)
    backfill(daily(old), manager(tmp_path, target_file_size=2**20), KEYS[0], KEYS[1])
    before = partition_files(table(tmp_path), KEYS[0])

    backfill(daily(new, target_file_size=2**20), manager(tmp_path), KEYS[0], KEYS[0])

    after = partition_files(table(tmp_path), KEYS[0])
    assert len(after) > 2, "the asset's metadata sets the size"
    assert not after & before
    expected = pl.concat([days_of(new, KEYS[0], KEYS[0]), days_of(old, KEYS[1], KEYS[1])])
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), expected)


# Failures -------------------------------------------------------------------------------


def fragile(frame: pl.DataFrame, broken_day: dt.date, marker: Path) -> dg.AssetsDefinition:
    """``frame``, whose task for ``broken_day`` fails until ``marker`` exists."""

    def check(rows: pl.Series) -> pl.Series:
        import os

        if (rows.struct["ts"].dt.date() == broken_day).any() and not os.path.exists(str(marker)):
            raise ValueError(f"the source broke on {broken_day}")
        return rows.struct["price"]

    # On another column than the date column, so each task's filter is pushed below it.
    price = pl.struct("ts", "price").map_batches(
        check, return_dtype=pl.Float64, is_elementwise=True
    )

    @dg.asset(
        name="prices",
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def asset() -> pl.LazyFrame:
        return frame.lazy().with_columns(price=price)

    return asset


def test_a_failed_partition_keeps_its_rows_and_the_others_commit_in_one_transaction(tmp_path):
    old, new = prices(DAYS, version=1), prices(DAYS, version=2)
    backfill(daily(old), manager(tmp_path), KEYS[0], KEYS[-1])
    asset = fragile(new, dt.date(2024, 1, 3), tmp_path / "fixed")

    with dg.instance_for_test() as instance:
        with pytest.raises(
            piot_dagster.PeriodExecutionError, match="partition\\(s\\) 2024-01-03 failed"
        ):
            backfill(asset, manager(tmp_path), "2024-01-02", "2024-01-04", instance=instance)
        assert instance.get_materialized_partitions(asset.key) == {"2024-01-02", "2024-01-04"}

    assert table(tmp_path).version() == 1
    expected = pl.concat(
        [
            days_of(old, "2024-01-01", "2024-01-01"),
            days_of(new, "2024-01-02", "2024-01-02"),
            days_of(old, "2024-01-03", "2024-01-03"),
            days_of(new, "2024-01-04", "2024-01-04"),
            days_of(old, "2024-01-05", "2024-01-10"),
        ]
    )
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), expected)
    referenced = {Path(uri).name for uri in table(tmp_path).file_uris()}
    on_disk = {p.name for p in (tmp_path / "prices").rglob("*.parquet")}
    # Replaced files stay for time travel until vacuum; none but those is unreferenced.
    assert len(on_disk - referenced) == 2


# Reading --------------------------------------------------------------------------------


def downstream(upstream, annotation, base: Path, first: str, last: str, **asset_in):
    """What a downstream asset over ``first``..``last`` receives as ``annotation``."""
    mapping = dg.TimeWindowPartitionMapping()

    @dg.asset(
        ins={"upstream": dg.AssetIn(upstream.key, partition_mapping=mapping, **asset_in)},
        io_manager_key="memory",
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def received(upstream: annotation) -> object:  # type: ignore[valid-type]
        return upstream

    result = dg.materialize(
        [upstream, received],
        selection=[received],
        resources={"io_manager": manager(base), "memory": dg.InMemoryIOManager()},
        tags={RANGE_START: first, RANGE_END: last},
    )
    return result.output_for_node("received")


def test_a_lazy_input_is_a_delta_scan_that_skips_the_files_its_filter_excludes(tmp_path):
    frame = prices(DAYS)
    asset = daily(frame)
    backfill(asset, manager(tmp_path), KEYS[0], KEYS[-1])
    lazy = downstream(asset, pl.LazyFrame, tmp_path, KEYS[0], KEYS[-1])
    # Every file but 2024-01-05's is gone: a query that needed one would fail.
    keep = {u for u in table(tmp_path).file_uris() if f"={KEYS[4]}/" in u}
    for uri in set(table(tmp_path).file_uris()) - keep:
        Path(uri).unlink()

    got = lazy.filter(pl.col("ts").is_between(dt.datetime(2024, 1, 5), dt.datetime(2024, 1, 5, 23)))

    assert_frame_equal(got.collect(), days_of(frame, KEYS[4], KEYS[4]))


def test_partitions_arrive_in_time_order_after_one_was_rewritten(tmp_path):
    frame = prices(DAYS)
    asset = daily(frame)
    backfill(asset, manager(tmp_path), KEYS[0], KEYS[-1])
    backfill(asset, manager(tmp_path), KEYS[2], KEYS[2])  # its file now comes last in the log

    for annotation in (pl.LazyFrame, pl.DataFrame):
        got = downstream(asset, annotation, tmp_path, KEYS[0], KEYS[-1])
        got = got.collect() if isinstance(got, pl.LazyFrame) else got
        assert_frame_equal(got, frame)


def test_missing_partitions_are_found_from_the_table_and_listed(tmp_path):
    frame = prices(DAYS)
    asset = daily(frame)
    backfill(asset, manager(tmp_path), KEYS[0], KEYS[1])

    with pytest.raises(FileNotFoundError, match=r"2024-01-03, 2024-01-04.*prices"):
        downstream(asset, pl.DataFrame, tmp_path, KEYS[0], KEYS[3])
    got = downstream(
        asset, pl.DataFrame, tmp_path, KEYS[0], KEYS[3], metadata={"allow_missing_partitions": True}
    )
    assert_frame_equal(got, days_of(frame, KEYS[0], KEYS[1]))


# Schema ---------------------------------------------------------------------------------


def test_a_new_column_fails_before_any_task_unless_the_asset_merges_schemas(tmp_path):
    frame = prices(DAYS)
    backfill(daily(frame), manager(tmp_path), KEYS[0], KEYS[0])
    wider = frame.with_columns(note=pl.lit("n"))

    with pytest.raises(
        ValueError, match=r"its frame has column\(s\) \['note'\](?s:.*)\nin asset prices"
    ):
        backfill(daily(wider), manager(tmp_path), KEYS[1], KEYS[1])
    assert table(tmp_path).version() == 0
    assert {Path(u).parent.name for u in table(tmp_path).file_uris()} == {
        f"{PARTITION_COLUMN}={KEYS[0]}"
    }

    assert backfill(daily(wider, schema_mode="merge"), manager(tmp_path), KEYS[1], KEYS[1]).success
    got = rows(tmp_path)
    assert got.filter(pl.col(PARTITION_COLUMN) == KEYS[0])["note"].is_null().all()
    assert (got.filter(pl.col(PARTITION_COLUMN) == KEYS[1])["note"] == "n").all()


def test_a_datetime_in_another_zone_than_the_tables_is_refused_naming_asset_and_fix(tmp_path):
    frame = prices(DAYS).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    backfill(daily(frame), manager(tmp_path), KEYS[0], KEYS[0])
    other = frame.with_columns(pl.col("ts").dt.convert_time_zone("Asia/Tokyo"))

    with pytest.raises(
        ValueError, match=r"'ts'.*convert_time_zone\('UTC'\)(?s:.*)\nin asset prices"
    ):
        backfill(daily(other), manager(tmp_path), KEYS[1], KEYS[1])


def test_a_base_dir_holding_no_delta_table_is_refused_naming_asset_and_fix(tmp_path):
    (tmp_path / "prices").mkdir()
    (tmp_path / "prices" / "2024-01-01.parquet").write_bytes(b"PAR1")

    with pytest.raises(
        piot_dagster.errors.StorageError, match=r"no Delta table(?s:.*)\nin asset prices"
    ):
        backfill(daily(prices(DAYS)), manager(tmp_path), KEYS[0], KEYS[0])


def test_a_frame_with_the_partition_columns_name_is_refused(tmp_path):
    frame = prices(DAYS).with_columns(pl.lit("x").alias(PARTITION_COLUMN))

    with pytest.raises(ValueError, match=r"'dagster_partition'.*rename it(?s:.*)\nin asset prices"):
        backfill(daily(frame), manager(tmp_path), KEYS[0], KEYS[0])


def test_a_bad_schema_mode_is_refused_naming_the_asset(tmp_path):
    with pytest.raises(ValueError, match=r"schema_mode must be 'merge'(?s:.*)\nin asset prices"):
        backfill(daily(prices(DAYS), schema_mode="overwrite"), manager(tmp_path), KEYS[0], KEYS[0])


# Concurrent runs ------------------------------------------------------------------------

TWO_WRITERS = """
import json, sys
from piot_dagster import RayDeltaIOManager, RayResource
from tests.partitioned_prices import prices
from tests.test_delta import backfill, daily

base, first, last, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
io_manager = RayDeltaIOManager(ray=RayResource(), base_dir=base, storage_options=options or None)
assert backfill(daily(prices(10)), io_manager, first, last).success
"""


def two_backfills_at_once(base: str, options: dict[str, str] | None, env: dict[str, str]) -> None:
    """Two single-run backfills of disjoint halves, each in a process of its own."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_WRITERS, base, first, last, json.dumps(options or {})],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first, last in ((KEYS[0], KEYS[4]), (KEYS[5], KEYS[9]))
    ]
    for process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]


def test_two_backfills_of_disjoint_partitions_at_once_both_land_exactly(tmp_path, location_env):
    two_backfills_at_once(str(tmp_path), None, location_env)

    delta = table(tmp_path)
    assert delta.version() == 1
    assert sorted(
        h["dagster_partition_count"] for h in delta.history() if "dagster_partition_count" in h
    ) == [5, 5]
    assert_frame_equal(rows(tmp_path).drop(PARTITION_COLUMN), prices(DAYS))


# Object storage -------------------------------------------------------------------------


def test_a_backfill_to_an_object_store_is_one_commit_read_back_exactly(object_store):
    base_dir, options = object_store
    frame = prices(DAYS)
    asset = daily(frame)
    io_manager = RayDeltaIOManager(ray=RayResource(), base_dir=base_dir, storage_options=options)

    backfill(asset, io_manager, KEYS[0], KEYS[-1])
    backfill(daily(prices(DAYS, version=2)), io_manager, KEYS[3], KEYS[3])

    # Another engine reading the table over plain HTTP (a local test server) says so.
    options = {**options, "allow_http": "true"}
    delta = DeltaTable(f"{base_dir}/prices", storage_options=options)
    assert delta.version() == 1
    expected = pl.concat(
        [days_of(frame, KEYS[0], KEYS[2]), days_of(prices(DAYS, version=2), KEYS[3], KEYS[3]),
         days_of(frame, KEYS[4], KEYS[-1])]
    )  # fmt: skip
    stored = pl.scan_delta(f"{base_dir}/prices", storage_options=options).drop(PARTITION_COLUMN)
    assert_frame_equal(stored.sort("ts", "symbol").collect(), expected)


def test_two_backfills_at_once_on_s3_both_land_exactly(s3_endpoint, location_env):
    from tests import servers

    base_dir = f"s3://{servers.new_bucket(s3_endpoint)}/lake"
    options = servers.s3_options(s3_endpoint)

    two_backfills_at_once(base_dir, options, location_env)

    options = {**options, "allow_http": "true"}
    delta = DeltaTable(f"{base_dir}/prices", storage_options=options)
    assert delta.version() == 1
    stored = pl.scan_delta(f"{base_dir}/prices", storage_options=options).drop(PARTITION_COLUMN)
    assert_frame_equal(stored.sort("ts", "symbol").collect(), prices(DAYS))


LEGACY_S3 = """
import sys, threading
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

# An S3-compatible server of before conditional writes: If-None-Match is ignored.
put_object = S3Response.put_object
def put_ignoring_conditions(self):
    self.headers = {k: v for k, v in self.headers.items() if k.lower() != "if-none-match"}
    return put_object(self)
S3Response.put_object = put_ignoring_conditions
ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False).start()
threading.Event().wait()
"""


def test_a_store_ignoring_conditional_writes_is_refused_before_any_task(tmp_path):
    from tests import servers
    from tests.dagster_server import free_port

    port = free_port()
    command = [sys.executable, "-c", LEGACY_S3, str(port)]
    with servers.process_on_port(command, port, tmp_path / "legacy.log", {}):
        endpoint = f"http://127.0.0.1:{port}"
        base_dir = f"s3://{servers.new_bucket(endpoint)}/lake"
        io_manager = RayDeltaIOManager(
            ray=RayResource(), base_dir=base_dir, storage_options=servers.s3_options(endpoint)
        )
        with pytest.raises(piot_dagster.errors.StorageError) as error:
            backfill(daily(prices(DAYS)), io_manager, KEYS[0], KEYS[0])
    message = described(error.value)
    assert f"the s3 store behind {base_dir} does not honour conditional" in message
    assert message.endswith("\nin asset prices")
    assert "If-None-Match" in message
    assert servers.S3_SECRET not in message


def test_conditional_puts_turned_off_are_refused_saying_what_to_remove(s3_endpoint):
    from tests import servers

    options = {**servers.s3_options(s3_endpoint), "aws_conditional_put": "disabled"}
    base_dir = f"s3://{servers.new_bucket(s3_endpoint)}/lake"
    io_manager = RayDeltaIOManager(ray=RayResource(), base_dir=base_dir, storage_options=options)

    with pytest.raises(piot_dagster.errors.StorageError, match="aws_conditional_put='disabled'"):
        backfill(daily(prices(DAYS)), io_manager, KEYS[0], KEYS[0])


# The engine over a Delta table ----------------------------------------------------------


def test_a_delta_scan_runs_on_ray_bounded_after_and_a_bound_inside_is_explained(tmp_path):
    """Polars cannot show the plan of a Python dataset scan without hanging (its expansion
    waits for the GIL that viewing the plan holds): filters inside such a query are not
    read, and the error says where to put them."""
    frame = prices(DAYS)
    backfill(daily(frame), manager(tmp_path), KEYS[0], KEYS[-1])
    scan = pl.scan_delta(str(tmp_path / "prices")).drop(PARTITION_COLUMN)
    week = pl.col("ts").is_between(dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 9), "left")

    got = scan.piot.execute_on_ray(date_column="ts", time_unit="daily").filter(week).collect()

    assert_frame_equal(got, frame.filter(week))
    inside = scan.filter(week).piot.execute_on_ray(date_column="ts", time_unit="daily")
    with pytest.raises(piot_dagster.UnboundedRangeError, match=r"after execute_on_ray .*Python"):
        inside.collect()
