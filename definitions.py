"""The piot-dagster code location: trades in an embedded database, partitioned by day,
week, month and year, and by day x symbol, each partition a Ray task through
RayParquetIOManager; the same days as one Delta table through RayDeltaIOManager (each
run one commit); the table as an observable source with a sensor that refreshes exactly
the days whose rows changed; partition checks; a daily VWAP that Declarative Automation
keeps up to date; and a summary of every stored day, which reads all of trades_daily's
partitions as one frame.

    dagster dev -f definitions.py          # the UI (or `make ui`)
    python definitions.py                   # the demo run (or `make demo`)

Configuration (environment variables, read when Dagster loads this file):

- ``PIOT_SOURCE_URI``: read trades from this database instead of the embedded one, e.g.
  ``postgresql://user:password@host:5432/markets``, ``mysql://user:password@host:3306/markets``
  or an ODBC string, ``Driver={MariaDB Unicode};Server=host;Database=markets;Uid=u;Pwd=p;``
  (a ``trades`` table with ``ts``, ``symbol``, ``price`` and ``qty``);
- ``PIOT_TRADES_DB``: where the embedded SQLite database is built on first use
  (default ``data/trades.db`` beside this file);
- ``PIOT_ASSET_DIR``: where partition files and Delta tables go (default: the Dagster
  instance's storage);
- ``RAY_ADDRESS``: a running Ray cluster to use instead of starting an embedded one.
"""

import datetime as dt
import fcntl
import logging
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import ray
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    AssetCheckExecutionRecordStatus,
)

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayParquetIOManager, RayResource, time_partitions

# Single-run backfills are what these assets are built for; Dagster still calls the
# parameter beta and would say so on every load of this file.
warnings.filterwarnings("ignore", "Parameter `backfill_policy`", dg.BetaWarning)

HERE = Path(__file__).resolve().parent
# defs/, this project's folder of YAML definitions, is imported as the `dg` project's root
# package: from this folder, as `dagster dev -f` run elsewhere would not put it on the path.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
TRADES_DB = Path(os.environ.get("PIOT_TRADES_DB", HERE / "data" / "trades.db"))
SOURCE = os.environ.get("PIOT_SOURCE_URI") or f"sqlite:///{TRADES_DB}"
QUERY = "SELECT ts, symbol, price, qty FROM trades"
FIRST_DAY, END_DAY = dt.date(2022, 1, 1), dt.date(2025, 1, 1)
SYMBOLS = [f"SYM{i:02d}" for i in range(20)]
STEP_MINUTES = 15

DAILY = time_partitions("daily", FIRST_DAY, end=END_DAY)
WEEKLY = time_partitions("weekly", dt.date(2022, 1, 3), end=END_DAY)  # weeks start on Monday
MONTHLY = time_partitions("monthly", FIRST_DAY, end=END_DAY)
DAY_BY_SYMBOL = dg.MultiPartitionsDefinition(
    {"date": DAILY, "symbol": dg.StaticPartitionsDefinition(SYMBOLS)}
)


def synthetic_trades(first: dt.date, end: dt.date) -> pl.DataFrame:
    """Every symbol trades every 15 minutes; prices and sizes are deterministic."""
    stamps = pl.datetime_range(
        dt.datetime.combine(first, dt.time()),
        dt.datetime.combine(end, dt.time()) - dt.timedelta(minutes=STEP_MINUTES),
        f"{STEP_MINUTES}m",
        eager=True,
    )
    frame = pl.DataFrame({"ts": stamps}).join(pl.DataFrame({"symbol": SYMBOLS}), how="cross")
    step = pl.int_range(pl.len())
    return frame.with_columns(
        price=(100 + (step % 997) / 10 + (step % 20) * 5).round(2),
        qty=(1 + step % 50).cast(pl.Int64),
    )


def ensure_trades_db(path: Path = TRADES_DB) -> Path:
    """Build the embedded database on first use: about 2.1M trades, 2022 to 2024, 20
    symbols, indexed on the timestamp, in WAL mode so readers never wait for a writer.
    Built aside and renamed into place, under a lock on its folder (a lock file would be
    left behind), so concurrent first users agree."""
    if path.exists():
        return path
    import adbc_driver_sqlite.dbapi  # only to build it: loading this file stays quick

    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if path.exists():
            return path
        building = path.with_suffix(".building")
        building.unlink(missing_ok=True)
        conn = sqlite3.connect(building)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL, qty INTEGER)")
        conn.close()
        rows = synthetic_trades(FIRST_DAY, END_DAY).with_columns(
            pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S")
        )
        with adbc_driver_sqlite.dbapi.connect(str(building)) as adbc, adbc.cursor() as cur:
            cur.adbc_ingest("trades", rows.to_arrow(), mode="append")
            adbc.commit()
        conn = sqlite3.connect(building)
        conn.execute("CREATE INDEX trades_ts ON trades (ts)")
        conn.commit()
        conn.close()
        os.replace(building, path)
    finally:
        os.close(folder)  # releases the lock
    return path


def trades_source() -> pl.LazyFrame:
    if not os.environ.get("PIOT_SOURCE_URI"):
        ensure_trades_db()
    return piot_dagster.scan_db(QUERY, connection=SOURCE)


# The table itself, as an observable source: its per-day data versions are what the
# refresh sensor compares, and it gives the trades assets their lineage.
trades_table = piot_dagster.SourceTable(
    "trades_table", connection=SOURCE, query=QUERY, date_column="ts", partitions_def=DAILY
)


def partitioned_trades(
    name: str,
    partitions_def: dg.PartitionsDefinition,
    *,
    stored_as: str = "parquet",
    **metadata: object,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", **metadata},
        io_manager_key="delta_io_manager" if stored_as == "delta" else "io_manager",
        kinds={"polars", "ray", stored_as},
        deps=[trades_table.asset],
        group_name="trades",
        description="Trades of the partition's period, read by scan_db in a Ray task"
        + (", committed to one Delta table once per run." if stored_as == "delta" else "."),
    )
    def trades() -> pl.LazyFrame:
        return trades_source()

    return trades


trades_daily = partitioned_trades("trades_daily", DAILY)
trades_weekly = partitioned_trades("trades_weekly", WEEKLY)
trades_monthly = partitioned_trades("trades_monthly", MONTHLY)
# trades_yearly is defined in YAML, defs/trades_yearly/defs.yaml, through the
# PartitionedQuery component; load_from_defs_folder below brings it in.
# Day x symbol: each cell one Ray task, its day and symbol both in scan_db's WHERE, stored
# as trades_by_symbol/symbol=SYM01/2024-01-05.parquet.
trades_by_symbol = partitioned_trades(
    "trades_by_symbol", DAY_BY_SYMBOL, partition_columns={"symbol": "symbol"}
)
# The same days as one Delta table: each task writes its day's data file, each run (a
# whole backfill) is one commit; other engines read it as a table (pl.scan_delta, DuckDB).
trades_daily_delta = partitioned_trades("trades_daily_delta", DAILY, stored_as="delta")


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"date_column": "day"},
    kinds={"polars", "ray", "parquet"},
    group_name="analytics",
    # Recompute a day whenever its trades change, any day: eager() alone would look only
    # at the latest day.
    automation_condition=dg.AutomationCondition.eager().without(
        dg.AutomationCondition.in_latest_time_window()
    ),
)
def daily_vwap(trades_daily: pl.LazyFrame) -> pl.DataFrame:
    """Volume-weighted average price and volume per symbol, for each day of trades."""
    return (
        trades_daily.group_by(pl.col("ts").dt.date().alias("day"), "symbol")
        .agg(
            vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum(),
            volume=pl.col("qty").sum(),
            trades=pl.len(),
        )
        .sort("day", "symbol")
        .collect()
    )


@dg.asset(
    # Every stored day, whichever were materialized: days never run are skipped (and
    # listed in a warning), not an error.
    ins={"trades_daily": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    kinds={"polars", "ray", "parquet"},
    group_name="analytics",
)
def daily_summary(trades_daily: pl.LazyFrame) -> dg.Output[pl.DataFrame]:
    """One row per stored day of trades_daily (trades, symbols, volume, VWAP, first and
    last trade), from all its partitions concatenated into one frame by one lazy scan."""
    summary = (
        trades_daily.group_by(pl.col("ts").dt.date().alias("day"))
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
    days = summary.get_column("day")
    return dg.Output(
        summary,
        # Each stored partition holds one day, with rows (its checks ask for min_rows=1).
        metadata={
            "partitions_read": summary.height,
            "rows_read": int(summary.get_column("trades").sum()),
            "first_day": str(days.min()) if summary.height else "",
            "last_day": str(days.max()) if summary.height else "",
        },
    )


# Each stored day of either table is checked (rows in the window, no null date, the same
# schema as the day before, at least one row), in the run that stores it.
CHECKS = {
    asset.key: piot_dagster.partition_checks(asset, min_rows=1)
    for asset in (trades_daily, trades_daily_delta)
}

# One Ray for both IO managers: a run storing both kinds sets it up once.
RAY = RayResource()

trades_daily_refresh = trades_table.sensor(
    trades_daily, name="trades_daily_source_changes", minimum_interval_seconds=30
)

# Everything: the assets defined here, and those defined in YAML under defs/ (a `dg`
# project's folder; `dg list defs` shows both).
defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[
            trades_table.asset,
            trades_daily,
            trades_weekly,
            trades_monthly,
            trades_by_symbol,
            trades_daily_delta,
            daily_vwap,
            daily_summary,
        ],
        asset_checks=list(CHECKS.values()),
        jobs=[
            # Partitioned as their assets are (Dagster infers it).
            dg.define_asset_job("trades_daily_job", selection=[trades_daily]),
            dg.define_asset_job("trades_daily_delta_job", selection=[trades_daily_delta]),
            dg.define_asset_job("trades_monthly_job", selection=[trades_monthly]),
            dg.define_asset_job("daily_summary_job", selection=[daily_summary]),
        ],
        sensors=[trades_daily_refresh],
        resources={
            "io_manager": RayParquetIOManager(ray=RAY, base_dir=os.environ.get("PIOT_ASSET_DIR")),
            "delta_io_manager": RayDeltaIOManager(
                ray=RAY, base_dir=os.environ.get("PIOT_ASSET_DIR")
            ),
        },
        # One process per run: Ray starts (or connects) once per run, not once per step.
        executor=dg.in_process_executor,
    ),
    dg.load_from_defs_folder(path_within_project=HERE),
)


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def demo(first: str = "2024-01-01", last: str = "2024-03-31", *, again: bool = False) -> None:
    """Build the database, backfill a quarter of daily partitions as one run on Ray, as
    Parquet files and as one Delta table, each run judging its days' partition checks;
    then the downstream assets: the daily VWAP for the same days, and the summary of every
    stored day; print a short summary. What the instance already holds (partitions with
    their checks judged, or a summary newer than every stored day) is skipped unless
    ``again``."""
    started = time.perf_counter()
    built = not TRADES_DB.exists()
    ensure_trades_db()
    print(
        f"piot-dagster demo: the daily trades of {first} to {last}, each day a Ray task\n"
        f"  source: {_shown(TRADES_DB)}, 20 symbols every 15 minutes, 2022 to 2024 "
        f"({'built' if built else 'found'} in {time.perf_counter() - started:.1f} s)"
    )
    instance = dg.DagsterInstance.get()
    keys = [k for k in DAILY.get_partition_keys() if first <= k <= last]
    # What each run needs defined, and the asset it stores. The tables' partition checks
    # are selected with them (selecting an asset selects its checks): each run judges the
    # days it stores.
    steps = [
        ([trades_daily, CHECKS[trades_daily.key]], trades_daily),
        ([trades_daily_delta, CHECKS[trades_daily_delta.key]], trades_daily_delta),
        ([trades_daily, daily_vwap], daily_vwap),
    ]
    missing = {
        asset.key: keys
        if again
        else sorted(set(keys) - instance.get_materialized_partitions(asset.key))
        for _, asset in steps
    }
    # Stored days whose checks were not judged since they were stored (an instance the
    # demo filled before it ran checks): judged by a run of the checks alone, which reads
    # what the writing tasks measured, not the data.
    unchecked = {
        key: sorted(
            set(keys)
            & instance.get_materialized_partitions(key)
            - set(missing[key])
            - _judged_days(instance, key, keys)
        )
        for key in CHECKS
    }
    seconds = dict.fromkeys([*missing, daily_summary.key], "skipped")
    if (
        any(missing.values())
        or any(unchecked.values())
        or again
        or _stale(instance, daily_summary.key, trades_daily.key)
    ):
        started = time.perf_counter()
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
        print(
            f"  Ray: {ray.cluster_resources().get('CPU', 0):.0f} CPUs, ready in "
            f"{time.perf_counter() - started:.1f} s"
        )
    for definitions, asset in steps:
        if missing[asset.key]:
            seconds[asset.key] = _materialize(instance, definitions, [asset], missing[asset.key])
    for definitions, asset in steps:
        if unchecked.get(asset.key):
            checks = dg.AssetSelection.checks_for_assets(asset)
            _materialize(instance, definitions, checks, unchecked[asset.key])
    # Checked only now: the backfill above makes the summary stale.
    if again or _stale(instance, daily_summary.key, trades_daily.key):
        seconds[daily_summary.key] = _materialize(
            instance, [trades_daily, daily_summary], [daily_summary], days=[]
        )
    ray.shutdown()
    print(f"\n{'asset':<19}{'partitions':>11}{'rows':>10}{'seconds':>9}  stored in")
    for _, asset in steps:
        partitions, rows, files = _stored(instance, asset.key, keys)
        name = asset.key.to_user_string()
        print(f"{name:<19}{partitions:>11,}{rows:>10,}{seconds[asset.key]:>9}  {files}")
    record = _latest(instance, daily_summary.key)
    assert record is not None
    assert record.asset_materialization is not None
    summary = record.asset_materialization.metadata
    print(
        f"{'daily_summary':<19}{summary['partitions_read'].value:>11,}"
        f"{summary['dagster/row_count'].value:>10,}{seconds[daily_summary.key]:>9}  "
        f"{_shown(Path(summary['path'].value))}"
    )
    print(
        f"(daily_summary: every stored day of trades_daily, {summary['partitions_read'].value} "
        f"partitions read as one frame: {summary['rows_read'].value:,} rows)"
    )
    judged = []
    for key, checks in CHECKS.items():
        results = _check_results(instance, key, keys)
        passed = sum(results.values())
        wanted = len(checks.check_keys) * len(set(keys) & instance.get_materialized_partitions(key))
        judged.append(f"{key.to_user_string()} {passed:,} of {wanted:,} passed")
    print(f"(partition checks, {len(checks.check_keys)} of each stored day: {', '.join(judged)})")
    if "skipped" in seconds.values():
        print("(skipped: already materialized; `make demo DEMO_ARGS=--again` reruns them)")
    print("\nThe UI: `make ui`, then http://127.0.0.1:3000 (Assets > trades_daily)")


def _materialize(
    instance: dg.DagsterInstance,
    definitions: list[dg.AssetsDefinition | dg.AssetChecksDefinition],
    selection: list[dg.AssetsDefinition] | dg.AssetSelection,
    days: list[str],
) -> str:
    """Run ``selection`` of ``definitions`` in the instance, for the range of ``days`` as
    one run (or unpartitioned, without days): the seconds it took."""
    started = time.perf_counter()
    dg.materialize(
        definitions,
        selection=selection,
        instance=instance,
        resources=defs.resources,
        tags={RANGE_START: days[0], RANGE_END: days[-1]} if days else {},
        # The run's failures and warnings, not its step-by-step events.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    return f"{time.perf_counter() - started:.1f}"


def _check_results(
    instance: dg.DagsterInstance, key: dg.AssetKey, days: list[str]
) -> dict[tuple[str, str], bool]:
    """Whether each check of ``key`` passed on each of ``days``: its latest result, if it
    judged the day's latest materialization."""
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(CHECKS[key].check_keys), partition_keys=days
    )
    return {
        (info.partition_key, info.check_key.name): info.latest_execution_status
        == AssetCheckExecutionRecordStatus.SUCCEEDED
        for info in infos
        if info.is_current
        and info.latest_execution_status in COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    }


def _judged_days(instance: dg.DagsterInstance, key: dg.AssetKey, days: list[str]) -> set[str]:
    """Those of ``days`` on which every check of ``key`` judged the latest materialization."""
    results = _check_results(instance, key, days)
    names = [check.name for check in CHECKS[key].check_keys]
    return {day for day in days if all((day, name) in results for name in names)}


def _stale(instance: dg.DagsterInstance, key: dg.AssetKey, upstream: dg.AssetKey) -> bool:
    """Whether ``key`` was never materialized, or ``upstream`` was since."""
    latest, feeding = _latest(instance, key), _latest(instance, upstream)
    return latest is None or (feeding is not None and feeding.storage_id > latest.storage_id)


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """``key``'s latest materialization (of any partition), if any."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), 1).records
    return records[0] if records else None


def _stored(
    instance: dg.DagsterInstance, key: dg.AssetKey, keys: list[str]
) -> tuple[int, int, str]:
    """How many of partitions ``keys`` of asset ``key`` the instance holds, their rows
    (each partition's latest materialization) and where: the folder of their files, or
    their Delta table and its newest version committed."""
    latest: dict[str | None, Mapping[str, Any]] = {}
    cursor = None
    while len(latest) < len(keys):  # newest first: each partition's first is its latest
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=keys), 1000, cursor
        )
        for record in page.records:
            latest.setdefault(record.partition_key, record.asset_materialization.metadata)
        if not page.has_more:
            break
        cursor = page.cursor
    rows = sum(m["dagster/partition_row_count"].value for m in latest.values())
    if any("delta_table" in m for m in latest.values()):
        table = Path(next(iter(latest.values()))["delta_table"].value)
        version = max(m["delta_version"].value for m in latest.values())
        return len(latest), rows, f"{_shown(table)}/ (Delta table, version {version})"
    folder = Path(next(iter(latest.values()))["path"].value).parent
    return len(latest), rows, f"{_shown(folder)}/"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The piot-dagster demo (make demo).")
    parser.add_argument(
        "--again", action="store_true", help="rerun partitions already materialized"
    )
    demo(again=parser.parse_args().again)
