"""Benchmark the Dagster instance's storage (issue 10, on issue 12's workload).

A 10-year daily asset (3,650 partitions) over an indexed SQLite table of 96 rows a day,
backfilled in one run through RayParquetIOManager to a local folder:

- on a SQLite-backed Dagster instance (the default of `dagster dev`);
- on a PostgreSQL-backed one (dagster-postgres), in a database of its own on the server
  of ``--postgres``;
- as the baseline, the engine alone collecting the same 3,650 daily periods;
- and, as the floor any Dagster run stands on, the engine writing each period's file
  itself (the IO manager's tasks, with no Dagster around them);

each instance as Dagster ships it, with DAGSTER_EVENT_BATCH_SIZE alone (it has no
caveat), and with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS as well. Also the
driver's peak RSS growth during a 30-partition and the 3,650-partition backfill (on the
PostgreSQL instance with both switches).

    .venv/bin/python benchmarks/bench_instances.py [--runs 3] [--postgres URL]

Times are medians of ``--runs`` runs, with Ray started before timing.
"""

import argparse
import contextlib
import datetime as dt
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import ray
from bench_engine import arguments, peak_growth, start_ray, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import piot_dagster
from piot_dagster import RayParquetIOManager, RayResource, time_partitions
from piot_dagster.engine.periods import period_of_window, window_filter
from piot_dagster.engine.ray_tasks import DEFAULT_REMOTE_OPTIONS, PeriodTask, ShippedPlan, run
from piot_dagster.storage import PartitionWriter, open_storage
from tests.databases import admin, instance_yaml

DATA = Path(__file__).resolve().parent / ".data"
DAYS = time_partitions("daily", "2015-01-01", end="2025-01-01")
FIRST, END = dt.datetime(2015, 1, 1), dt.datetime(2025, 1, 1)


def table() -> str:
    """96 rows a day (every 15 minutes) over 2015-2024, indexed on ts; its URI."""
    path = DATA / "daily_96.db"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        stamps = pl.datetime_range(FIRST, END, "15m", closed="left", eager=True)
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE ticks (ts TIMESTAMP, v INTEGER)")
        conn.executemany(
            "INSERT INTO ticks VALUES (?, ?)",
            zip(stamps.dt.to_string("%Y-%m-%d %H:%M:%S"), range(stamps.len()), strict=True),
        )
        conn.execute("CREATE INDEX ticks_ts ON ticks (ts)")
        conn.commit()
        conn.close()
    return f"sqlite:///{path}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = arguments(parser, rows=False)
    uri = table()

    @dg.asset(
        partitions_def=DAYS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def ticks() -> pl.LazyFrame:
        return piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=uri)

    keys = DAYS.get_partition_keys()

    def tags(last: str = keys[-1]) -> dict[str, str]:
        return {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": last,
        }

    start_ray()
    database = f"piot_bench_{uuid.uuid4().hex[:8]}"
    admin(args.postgres, f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory)
            resources = {"io_manager": RayParquetIOManager(ray=RayResource(), base_dir=str(out))}
            (out / "sqlite").mkdir()
            (out / "postgres").mkdir()
            (out / "postgres" / "dagster.yaml").write_text(instance_yaml(args.postgres, database))

            def engine_alone() -> int:
                query = piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=uri)
                bounded = query.filter(pl.col("ts").is_between(FIRST, END, closed="left"))
                return (
                    bounded.piot.execute_on_ray(date_column="ts", time_unit="daily")
                    .collect()
                    .height
                )

            def engine_writing() -> int:
                query = piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=uri)
                schema = query.collect_schema()
                storage = open_storage(str(out / "files"))
                work = []
                for key in keys:
                    window = DAYS.time_window_for_partition_key(key)
                    period = period_of_window(window.start, window.end, schema["ts"])
                    writer = PartitionWriter(
                        storage, storage.key(["ticks"], key), "ts", (period.start, period.end)
                    )
                    where = window_filter("ts", schema["ts"], period)
                    work.append((period, PeriodTask(where, None, None, "arrow", writer)))
                results = run(
                    ShippedPlan(query),
                    work,
                    column="ts",
                    schema=schema,
                    options=DEFAULT_REMOTE_OPTIONS,
                    max_concurrency=100,
                    keep_going=True,
                )
                return sum(result.rows for result in results)

            def backfill(home: str, last: str = keys[-1]) -> None:
                with dg.DagsterInstance.from_config(str(out / home)) as instance:
                    result = dg.materialize(
                        [ticks], tags=tags(last), resources=resources, instance=instance
                    )
                    assert result.success

            engine, rows = timed(engine_alone, args.runs)
            writing, written = timed(engine_writing, args.runs, warm_up=False)
            assert written == rows
            figures = {}
            for switched in SWITCHES:
                with switches(switched):
                    for home in ("sqlite", "postgres"):
                        figures[home, switched], _ = timed(
                            lambda home=home: backfill(home), args.runs, warm_up=False
                        )
            with switches(SWITCHES[-1]):
                memory = {
                    n: peak_growth(lambda n=n: backfill("postgres", keys[n - 1]))[:2]
                    for n in (30, len(keys))
                }
    finally:
        admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        ray.shutdown()
    print(f"engine alone, 3,650 daily periods ({rows:,} rows): {engine:.2f} s")
    print(
        f"the engine writing the 3,650 files itself, no Dagster: {writing:.2f} s "
        f"({writing / engine:.1f}x the engine)"
    )
    for (home, switched), seconds in figures.items():
        name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[home]
        how = " and ".join(switched) or "Dagster's defaults"
        print(
            f"single-run backfill, {name} instance, {how}: {seconds:.2f} s "
            f"({seconds / engine:.1f}x the engine)"
        )
    for n, (rss, private) in memory.items():
        print(
            f"driver peak growth, {n:,}-partition backfill: RSS {rss:.0f} MB, "
            f"private {private:.0f} MB"
        )


# Dagster's switches for large runs (README, "Large backfills"): none, batching alone,
# both.
SWITCHES: tuple[tuple[str, ...], ...] = (
    (),
    ("DAGSTER_EVENT_BATCH_SIZE",),
    ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"),
)
_SWITCH_VALUES = {
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}


@contextlib.contextmanager
def switches(names: tuple[str, ...]) -> Iterator[None]:
    """Dagster's switches ``names`` on, read by Dagster when it creates a run and when it
    writes events, both in this process here."""
    os.environ.update({name: _SWITCH_VALUES[name] for name in names})
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)


if __name__ == "__main__":
    main()
