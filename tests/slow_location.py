"""A code location whose partitions take a second each, so tests can interrupt a backfill
while it runs. Environment: PIOT_ASSET_DIR (base_dir), PIOT_TEST_EVENTS (a file each task
appends ``start``/``end`` to), PIOT_TEST_VERSION (stamped on every row), RAY_ADDRESS."""

import datetime as dt
import os

import dagster as dg
import polars as pl

from piot_dagster import RayParquetIOManager, RayResource, time_partitions

DAYS = 20
TASK_SECONDS = 1.0


def prices(version: int) -> pl.DataFrame:
    """Hourly rows for the first DAYS days of 2024, each stamped with ``version``."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1),
        dt.datetime(2024, 1, 1) + dt.timedelta(days=DAYS, hours=-1),
        "1h",
        eager=True,
    )
    return pl.DataFrame({"ts": stamps, "version": pl.repeat(version, stamps.len(), eager=True)})


def slowly(events: str) -> pl.Expr:
    """Passes ``version`` through, after recording the task's start and sleeping."""

    def step(version: pl.Series) -> pl.Series:
        import time

        with open(events, "a") as log:
            log.write("start\n")
        time.sleep(TASK_SECONDS)
        with open(events, "a") as log:
            log.write("end\n")
        return version

    return pl.col("version").map_batches(step, return_dtype=pl.Int32)


@dg.asset(
    partitions_def=time_partitions("daily", "2024-01-01", end=f"2024-01-{DAYS + 1:02d}"),
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"date_column": "ts", "max_concurrency": 4},
)
def slow_prices() -> pl.LazyFrame:
    version = int(os.environ.get("PIOT_TEST_VERSION", "2"))
    return prices(version).lazy().with_columns(version=slowly(os.environ["PIOT_TEST_EVENTS"]))


defs = dg.Definitions(
    assets=[slow_prices],
    jobs=[dg.define_asset_job("slow_job", [slow_prices])],
    resources={
        "io_manager": RayParquetIOManager(
            ray=RayResource(), base_dir=os.environ.get("PIOT_ASSET_DIR", "assets")
        )
    },
    executor=dg.in_process_executor,
)
