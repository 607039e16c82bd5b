"""The trades: the table as an observable source with its refresh sensor, and the trades
by day, week, month, day x symbol (Parquet) and day (Delta), each partition a Ray task;
partition checks on the daily tables; their jobs. (trades_yearly is in YAML, beside.)"""

import datetime as dt
import os
from pathlib import Path

import dagster as dg

from piot_dagster import SourceTable, partitioned_query, time_partitions

PROJECT = Path(__file__).resolve().parents[1]
QUERY = "SELECT ts, symbol, price, qty FROM trades"
FIRST_DAY, END_DAY = dt.date(2022, 1, 1), dt.date(2025, 1, 1)
SYMBOLS = [f"SYM{i:02d}" for i in range(20)]

DAILY = time_partitions("daily", FIRST_DAY, end=END_DAY)
WEEKLY = time_partitions("weekly", dt.date(2022, 1, 3), end=END_DAY)  # weeks start on Monday
MONTHLY = time_partitions("monthly", FIRST_DAY, end=END_DAY)
DAY_BY_SYMBOL = dg.MultiPartitionsDefinition(
    {"date": DAILY, "symbol": dg.StaticPartitionsDefinition(SYMBOLS)}
)


def trades_db() -> Path:
    """The embedded SQLite database: ``PIOT_TRADES_DB``, else ``data/trades.db``."""
    return Path(os.environ.get("PIOT_TRADES_DB") or PROJECT / "data" / "trades.db")


def source() -> str:
    """The trades' database: ``PIOT_SOURCE_URI``, else the embedded one. It is opened only
    when a run reads it, so the location loads (``dg check defs``) before ``make demo``
    builds it; a run without it fails naming the file."""
    return os.environ.get("PIOT_SOURCE_URI") or f"sqlite:///{trades_db()}"


def source_table() -> SourceTable:
    """The table itself, as an observable source: its per-day data versions are what the
    refresh sensor compares, and it gives the trades assets their lineage."""
    return SourceTable(
        "trades_table", connection=source(), query=QUERY, date_column="ts", partitions_def=DAILY
    )


@dg.definitions
def defs() -> dg.Definitions:
    table = source_table()
    connection = table.connection
    base_dir = os.environ.get("PIOT_ASSET_DIR")

    def trades(
        name: str, partitions_def: dg.PartitionsDefinition, **options: object
    ) -> dg.Definitions:
        delta = options.get("stored_as") == "delta"
        return partitioned_query(
            name,
            query=QUERY,
            connection=connection,
            date_column="ts",
            partitions_def=partitions_def,
            base_dir=base_dir,
            group_name="trades",
            deps=[table.key.to_user_string()],
            description="Trades of the partition's period, read by scan_db in a Ray task"
            + (", committed to one Delta table once per run." if delta else "."),
            **options,  # type: ignore[arg-type]
        )

    # Each stored day of either daily table is checked (rows in the window, no null date,
    # the same schema as the day before, at least one row), in the run that stores it.
    daily = trades("trades_daily", DAILY, min_rows=1)
    location = dg.Definitions.merge(
        daily,
        trades("trades_weekly", WEEKLY),
        trades("trades_monthly", MONTHLY),
        # Day x symbol: each cell one Ray task, its day and symbol both in scan_db's
        # WHERE, stored as trades_by_symbol/symbol=SYM01/2024-01-05.parquet.
        trades("trades_by_symbol", DAY_BY_SYMBOL, partition_columns={"symbol": "symbol"}),
        # The same days as one Delta table: each task writes its day's data file, each run
        # (a whole backfill) is one commit; other engines read it as a table.
        trades("trades_daily_delta", DAILY, stored_as="delta", min_rows=1),
    )
    (trades_daily,) = daily.assets  # type: ignore[misc]
    return dg.Definitions.merge(
        location,
        dg.Definitions(
            assets=[table.asset],
            sensors=[
                table.sensor(
                    trades_daily,  # type: ignore[arg-type]
                    name="trades_daily_source_changes",
                    minimum_interval_seconds=30,
                )
            ],
            # Partitioned as their assets are (Dagster infers it); selecting an asset
            # selects its checks, so each run judges the days it stores.
            jobs=[
                dg.define_asset_job(f"{name}_job", selection=[name])
                for name in ("trades_daily", "trades_daily_delta", "trades_monthly")
            ],
            # One process per run: Ray starts (or connects) once per run, not once per step.
            executor=dg.in_process_executor,
        ),
    )
