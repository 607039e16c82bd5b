"""Assets and helpers shared by the object-store and cluster tests: hourly prices of two
symbols, a daily asset over them, backfills, and what a downstream asset receives."""

import datetime as dt
from typing import Any

import dagster as dg
import obstore
import polars as pl
from obstore.store import from_url

from piot_dagster import RayParquetIOManager, RayResource, time_partitions

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
FIRST = dt.date(2024, 1, 1)


def prices(days: int, version: int = 1) -> pl.DataFrame:
    """Hourly prices of two symbols from 2024-01-01, each row stamped with ``version``."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1) + dt.timedelta(days=days, hours=-1),
        "1h", eager=True,
    )  # fmt: skip
    frame = pl.DataFrame({"ts": stamps}).join(pl.DataFrame({"symbol": ["A", "B"]}), how="cross")
    return frame.with_columns(
        price=pl.int_range(pl.len()).cast(pl.Float64) / 4, version=pl.lit(version)
    ).sort("ts", "symbol")


def days(count: int) -> list[str]:
    return [str(FIRST + dt.timedelta(days=n)) for n in range(count)]


def daily(frame: pl.DataFrame, count: int, **metadata: Any) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=time_partitions("daily", FIRST, end=FIRST + dt.timedelta(days=count)),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", **metadata},
    )
    def prices() -> pl.LazyFrame:
        return frame.lazy()

    return prices


def manager(base_dir: str, options: dict[str, str], **fields: Any) -> RayParquetIOManager:
    return RayParquetIOManager(
        ray=RayResource(), base_dir=base_dir, storage_options=options, **fields
    )


def backfill(asset: dg.AssetsDefinition, io_manager: RayParquetIOManager, count: int, **kw):
    first, last = days(count)[0], days(count)[-1]
    return dg.materialize(
        [asset],
        resources={"io_manager": io_manager},
        tags={RANGE_START: first, RANGE_END: last},
        **kw,
    )


def object_keys(base_dir: str, options: dict[str, str]) -> list[str]:
    """Every object under ``base_dir`` (keys relative to it), listed with obstore directly."""
    store = from_url(base_dir, config=options, client_options={"allow_http": True})
    return sorted(meta["path"] for batch in obstore.list(store) for meta in batch)


def downstream(upstream, annotation, io_manager, *others, **asset_in):
    """Materialize an asset that receives ``upstream`` as ``annotation``; what it got.
    ``others`` are the assets ``upstream`` depends on.
    (This module has no ``from __future__ import annotations``: Dagster reads the
    annotation itself.)"""

    @dg.asset(
        ins={"prices": dg.AssetIn(upstream.key, **asset_in)},
        io_manager_key="memory",
    )
    def received(prices: annotation) -> object:  # type: ignore[valid-type]
        return prices

    result = dg.materialize(
        [*others, upstream, received],
        selection=[received],
        resources={"io_manager": io_manager, "memory": dg.InMemoryIOManager()},
    )
    return result.output_for_node("received")
