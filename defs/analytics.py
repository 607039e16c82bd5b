"""Downstream of the trades: the daily VWAP, which Declarative Automation keeps up to
date, and the summary of every stored day, which reads all of trades_daily's partitions
as one frame; their jobs."""

import os

import dagster as dg
import polars as pl

from piot_dagster.dagster.formats.registry import FORMATS

from .trades import DAILY

# The IO manager the trades assets store with: one for the whole location.
PARQUET = FORMATS["parquet"].resource_key


@dg.definitions
def defs() -> dg.Definitions:
    base_dir = {"base_dir": d} if (d := os.environ.get("PIOT_ASSET_DIR")) else {}

    @dg.asset(
        partitions_def=DAILY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "day", **base_dir},
        io_manager_key=PARQUET,
        kinds={"polars", "ray", "parquet"},
        group_name="analytics",
        # Recompute a day whenever its trades change, any day: eager() alone would look
        # only at the latest day.
        automation_condition=dg.AutomationCondition.eager().without(
            dg.AutomationCondition.in_latest_time_window()
        ),
    )
    def daily_vwap(trades_daily: pl.LazyFrame) -> pl.DataFrame:
        """Volume-weighted average price and volume per symbol, for each day of trades."""
        return vwap_by_day(trades_daily)

    @dg.asset(
        # Every stored day, whichever were materialized: days never run are skipped (and
        # counted in a warning), not an error.
        ins={"trades_daily": dg.AssetIn(metadata={"allow_missing_partitions": True})},
        metadata=base_dir,
        io_manager_key=PARQUET,
        kinds={"polars", "ray", "parquet"},
        group_name="analytics",
    )
    def daily_summary(trades_daily: pl.LazyFrame) -> dg.Output[pl.DataFrame]:
        """One row per stored day of trades_daily (trades, symbols, volume, VWAP, first and
        last trade), from all its partitions concatenated into one frame by one lazy scan."""
        summary = summarize(trades_daily)
        days = summary.get_column("day")
        return dg.Output(
            summary,
            metadata={
                "partitions_read": summary.height,  # each stored partition holds one day
                "rows_read": int(summary.get_column("trades").sum()),
                "first_day": str(days.min()) if summary.height else "",
                "last_day": str(days.max()) if summary.height else "",
            },
        )

    return dg.Definitions(
        assets=[daily_vwap, daily_summary],
        jobs=[
            dg.define_asset_job("daily_vwap_job", selection=[daily_vwap]),
            dg.define_asset_job("daily_summary_job", selection=[daily_summary]),
        ],
    )


def vwap_by_day(trades: pl.LazyFrame) -> pl.DataFrame:
    """daily_vwap's rows: per day and symbol, the VWAP, the volume and the trades."""
    return (
        trades.group_by(pl.col("ts").dt.date().alias("day"), "symbol")
        .agg(
            vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum(),
            volume=pl.col("qty").sum(),
            trades=pl.len(),
        )
        .sort("day", "symbol")
        .collect()
    )


def summarize(trades: pl.LazyFrame) -> pl.DataFrame:
    """daily_summary's rows: one per day of ``trades``."""
    return (
        trades.group_by(pl.col("ts").dt.date().alias("day"))
        .agg(
            trades=pl.len(),
            symbols=pl.col("symbol").n_unique(),
            volume=pl.col("qty").sum(),
            vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum(),
            first_trade=pl.col("ts").min(),
            last_trade=pl.col("ts").max(),
        )
        .sort("day")
        .collect()
    )
