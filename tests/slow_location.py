"""A code location whose partitions take a second each, so tests can interrupt a backfill
while it runs. Environment: PIOT_ASSET_DIR (base_dir), PIOT_TEST_EVENTS (a file each task
appends ``start``/``end`` to), PIOT_TEST_VERSION (stamped on every row), RAY_ADDRESS."""

import datetime as dt
import os

import dagster as dg
import polars as pl

from piot_dagster import RayDeltaIOManager, RayParquetIOManager, RayResource, time_partitions

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


def slow_asset(name: str, io_manager_key: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        io_manager_key=io_manager_key,
        partitions_def=time_partitions("daily", "2024-01-01", end=f"2024-01-{DAYS + 1:02d}"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "max_concurrency": 4},
    )
    def slow() -> pl.LazyFrame:
        version = int(os.environ.get("PIOT_TEST_VERSION", "2"))
        return prices(version).lazy().with_columns(version=slowly(os.environ["PIOT_TEST_EVENTS"]))

    return slow


slow_prices = slow_asset("slow_prices", "io_manager")
# The same partitions in a Delta table.
slow_prices_delta = slow_asset("slow_prices_delta", "delta_io_manager")
BASE_DIR = os.environ.get("PIOT_ASSET_DIR", "assets")

defs = dg.Definitions(
    assets=[slow_prices, slow_prices_delta],
    jobs=[dg.define_asset_job("slow_job", [slow_prices])],
    resources={
        "io_manager": RayParquetIOManager(ray=RayResource(), base_dir=BASE_DIR),
        "delta_io_manager": RayDeltaIOManager(ray=RayResource(), base_dir=BASE_DIR),
    },
    executor=dg.in_process_executor,
)
