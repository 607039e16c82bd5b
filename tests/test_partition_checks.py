"""Partitioned asset checks: one result per partition, judged from what the writing Ray task
measured; on a real local Ray and real Parquet files."""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from piot_dagster import RayParquetIOManager, RayResource, partition_checks, time_partitions

pytestmark = pytest.mark.usefixtures("ray_cluster")
DAYS = time_partitions("daily", "2024-01-01", end="2024-01-06")
RANGE = {
    "dagster/asset_partition_range_start": "2024-01-01",
    "dagster/asset_partition_range_end": "2024-01-05",
}


def hourly() -> pl.DataFrame:
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 5, 23), "1h", eager=True
    )
    return pl.DataFrame({"ts": stamps, "v": pl.int_range(stamps.len(), eager=True)})


@dg.asset(
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"date_column": "ts"},
)
def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
    frame = hourly()
    # From 2024-01-04 on, a new column appears.
    if any(k >= "2024-01-04" for k in context.partition_keys):
        frame = frame.with_columns(extra=pl.lit("x"))
    return frame


def results(tmp_path: Path, *assets, **run) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Each check's result by (check name, partition), from one run."""
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(assets), resources={"io_manager": manager}, instance=instance, **run
        )
        assert result.success
    return {
        (e.event_specific_data.check_name, e.event_specific_data.partition): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_a_single_run_backfill_gets_one_result_per_partition_and_check(tmp_path):
    checks = partition_checks(readings, min_rows=25)

    got = results(tmp_path, readings, checks, tags=RANGE)

    days = [f"2024-01-0{d}" for d in range(1, 6)]
    assert sorted(got) == sorted(
        (name, day)
        for name in ("rows_in_window", "no_null_dates", "schema_as_previous", "min_rows")
        for day in days
    )
    assert all(got["rows_in_window", day].passed for day in days)
    assert all(got["no_null_dates", day].passed for day in days)
    # Each day holds 24 rows: fewer than asked, a warning.
    assert not any(got["min_rows", day].passed for day in days)
    assert got["min_rows", "2024-01-01"].severity == dg.AssetCheckSeverity.WARN
    # The whole range saw the new column, so each day matches the one before it.
    assert all(got["schema_as_previous", day].passed for day in days)


def test_a_partition_whose_schema_changed_from_the_previous_one_warns(tmp_path):
    checks = partition_checks(readings)
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        for day in ("2024-01-03", "2024-01-04"):
            run = dg.materialize(
                [readings, checks],
                partition_key=day,
                resources={"io_manager": manager},
                instance=instance,
            )
            assert run.success
        (changed,) = [
            e.event_specific_data
            for e in run.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "schema_as_previous"
        ]
    assert not changed.passed
    assert changed.severity == dg.AssetCheckSeverity.WARN
    assert changed.partition == "2024-01-04"
    assert "extra: String" in changed.metadata["differences"].value
    assert (tmp_path / "readings" / "2024-01-04.parquet").exists(), "a failed check deletes nothing"


def test_the_writing_task_measures_what_the_checks_judge(tmp_path):
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))
    result = dg.materialize(
        [readings], partition_key="2024-01-02", resources={"io_manager": manager}
    )
    (event,) = result.asset_materializations_for_node("readings")
    assert event.metadata["rows_outside_window"].value == 0
    assert event.metadata["date_nulls"].value == 0


def test_partition_checks_refuse_an_unpartitioned_asset_or_a_bad_minimum():
    @dg.asset
    def whole() -> None: ...

    with pytest.raises(TypeError, match="partition_checks: asset must be a partitioned asset"):
        partition_checks(whole)
    with pytest.raises(TypeError, match="min_rows must be an int"):
        partition_checks(readings, min_rows="many")  # type: ignore[arg-type]
