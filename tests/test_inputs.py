"""What a downstream asset receives from RayParquetIOManager and RayDeltaIOManager alike,
as Dagster's UPathIOManager behaves: Optional inputs and outputs, self-dependent assets,
and column selection; on a real local Ray, real Parquet files and real Delta tables.
(No `from __future__ import annotations`: Dagster reads the downstream annotations.)"""

import datetime as dt
from pathlib import Path
from typing import Optional

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from piot_dagster import RayDeltaIOManager, RayResource, time_partitions
from piot_dagster.storage.delta import PARTITION_COLUMN
from tests.conftest import IOManagerClass

pytestmark = pytest.mark.usefixtures("ray_cluster")
DAYS = time_partitions("daily", "2024-01-01", end="2024-01-04")
FRAME = pl.DataFrame(
    {
        "d": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
        "v": [1, 2, 3],
        "note": ["a", "b", "c"],
    }
)


def resources(tmp_path: Path, io_manager_class: IOManagerClass) -> dict:
    return {
        "io_manager": io_manager_class(ray=RayResource(), base_dir=str(tmp_path)),
        "memory": dg.InMemoryIOManager(),
    }


def stored(tmp_path: Path, io_manager_class: IOManagerClass, asset: str) -> pl.DataFrame:
    """Every stored partition of ``asset``, in partition key order, as another reader
    sees it: its Parquet files, or its Delta table's rows without the partition column."""
    if io_manager_class is RayDeltaIOManager:
        table = pl.read_delta(str(tmp_path / asset))
        return table.sort(PARTITION_COLUMN, maintain_order=True).drop(PARTITION_COLUMN)
    return pl.concat(pl.read_parquet(path) for path in sorted((tmp_path / asset).iterdir()))


def received(
    upstream: dg.AssetsDefinition,
    annotation: object,
    tmp_path: Path,
    io_manager_class: IOManagerClass,
    **asset_in,
):
    """What an asset receives for ``upstream`` annotated ``annotation``."""

    @dg.asset(ins={"upstream": dg.AssetIn(upstream.key, **asset_in)}, io_manager_key="memory")
    def downstream(upstream: annotation) -> object:  # type: ignore[valid-type]
        return upstream

    result = dg.materialize(
        [upstream, downstream],
        selection=[downstream],
        resources=resources(tmp_path, io_manager_class),
    )
    return result.output_for_node("downstream")


@dg.asset
def whole() -> pl.DataFrame:
    return FRAME


@dg.asset(partitions_def=DAYS, metadata={"date_column": "d"})
def daily() -> pl.DataFrame:
    return FRAME


# Optional inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "kind"),
    [
        (pl.DataFrame | None, pl.DataFrame),
        (Optional[pl.DataFrame], pl.DataFrame),  # noqa: UP045  (the spelling users write too)
        (pl.LazyFrame | None, pl.LazyFrame),
    ],
)
def test_an_optional_input_is_none_until_its_upstream_is_stored_then_its_type(
    tmp_path, io_manager_class, annotation, kind
):
    assert received(whole, annotation, tmp_path, io_manager_class) is None

    assert dg.materialize([whole], resources=resources(tmp_path, io_manager_class)).success

    got = received(whole, annotation, tmp_path, io_manager_class)
    assert isinstance(got, kind)
    assert_frame_equal(got.collect() if isinstance(got, pl.LazyFrame) else got, FRAME)


def test_an_optional_partitioned_input_skips_missing_partitions(tmp_path, io_manager_class):
    assert received(daily, pl.DataFrame | None, tmp_path, io_manager_class) is None
    assert dg.materialize(
        [daily], partition_key="2024-01-02", resources=resources(tmp_path, io_manager_class)
    ).success

    assert_frame_equal(received(daily, pl.DataFrame | None, tmp_path, io_manager_class), FRAME[1:2])
    by_day = received(daily, dict[str, pl.DataFrame | None], tmp_path, io_manager_class)
    assert list(by_day) == ["2024-01-02"]


def test_a_required_input_of_missing_partitions_says_how_to_make_it_optional(
    tmp_path, io_manager_class
):
    with pytest.raises(FileNotFoundError, match=r"annotate the input `\.\.\. \| None`"):
        received(daily, pl.DataFrame, tmp_path, io_manager_class)


# Optional outputs -----------------------------------------------------------------------


def test_an_optional_output_returning_none_stores_nothing_and_the_run_succeeds(
    tmp_path, io_manager_class
):
    @dg.asset(partitions_def=DAYS, metadata={"date_column": "d"})
    def sometimes() -> pl.DataFrame | None:
        return None

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [sometimes],
            partition_key="2024-01-01",
            resources=resources(tmp_path, io_manager_class),
            instance=instance,
        )
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]

    assert result.success
    assert "asset sometimes returned None: nothing was stored" in messages
    assert not (tmp_path / "sometimes").exists()
    assert received(sometimes, pl.DataFrame | None, tmp_path, io_manager_class) is None


# Self-dependent assets ------------------------------------------------------------------

PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def running_total(annotation: object) -> dg.AssetsDefinition:
    """Each day's total: the previous day's plus the day's own value."""

    @dg.asset(
        name="total",
        partitions_def=DAYS,
        metadata={"date_column": "d"},
        ins={"previous": dg.AssetIn("total", partition_mapping=PREVIOUS_DAY)},
    )
    def total(context: dg.AssetExecutionContext, previous: annotation) -> pl.DataFrame:  # type: ignore[valid-type]
        day = dt.date.fromisoformat(context.partition_key)
        if isinstance(previous, dict):
            previous = next(iter(previous.values()), None)
        before = 0 if previous is None or previous.is_empty() else previous["total"][0]
        today = FRAME.filter(pl.col("d") == day)["v"][0]
        return pl.DataFrame({"d": [day], "total": [before + today]})

    return total


@pytest.mark.parametrize("annotation", [pl.DataFrame | None, dict[str, pl.DataFrame]])
def test_a_self_dependent_daily_asset_starts_from_nothing_on_its_first_day(
    tmp_path, io_manager_class, annotation
):
    total = running_total(annotation)
    for day in DAYS.get_partition_keys():
        assert dg.materialize(
            [total], partition_key=day, resources=resources(tmp_path, io_manager_class)
        ).success

    assert stored(tmp_path, io_manager_class, "total")["total"].to_list() == [1, 3, 6]


def test_a_self_dependent_asset_with_a_required_input_fails_clearly_on_its_first_day(
    tmp_path, io_manager_class
):
    with pytest.raises(ValueError, match="the partition mapping gives no partition of it"):
        dg.materialize(
            [running_total(pl.DataFrame)],
            partition_key="2024-01-01",
            resources=resources(tmp_path, io_manager_class),
        )


# Column selection -----------------------------------------------------------------------


def test_asset_in_columns_are_selected_and_pushed_into_a_lazy_scan(tmp_path, io_manager_class):
    assert dg.materialize(
        [daily],
        resources=resources(tmp_path, io_manager_class),
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    ).success
    only = {"metadata": {"columns": ["d", "v"]}}

    eager = received(daily, pl.DataFrame, tmp_path, io_manager_class, **only)
    lazy = received(daily, pl.LazyFrame, tmp_path, io_manager_class, **only)
    by_day = received(daily, dict[str, pl.LazyFrame], tmp_path, io_manager_class, **only)

    assert_frame_equal(eager, FRAME.select("d", "v"))
    # Only d and v are read; a Delta scan reads the partition column it filters on too.
    delta = io_manager_class is RayDeltaIOManager
    assert ("PROJECT 3/4 COLUMNS" if delta else "PROJECT 2/3 COLUMNS") in lazy.explain()
    assert_frame_equal(lazy.collect(), FRAME.select("d", "v"))
    assert all(lf.collect_schema().names() == ["d", "v"] for lf in by_day.values())


def test_asset_in_columns_the_partitions_lack_are_named(tmp_path, io_manager_class):
    assert dg.materialize([whole], resources=resources(tmp_path, io_manager_class)).success
    with pytest.raises(ValueError, match=r"names \['price'\], which the stored partitions lack"):
        received(
            whole, pl.DataFrame, tmp_path, io_manager_class, metadata={"columns": ["v", "price"]}
        )
