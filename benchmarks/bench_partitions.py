"""Benchmark Dagster-native partitions (issue 11), on the code location's demo database
(2.1M trades of 20 symbols over 1,096 days, SQLite, indexed on ts).

- (a) a day x symbol asset, 365 days x 20 symbols = 7,300 cells, backfilled as one run
  through RayParquetIOManager: time and the driver's peak RSS, beside a one-cell run;
- (b) a quiet tick of the refresh sensor over the 1,096 days: time and the rows the
  database scanned, beside the same GROUP BY without the checksum (what the sensor
  cost before it saw in-place updates).

    .venv/bin/python benchmarks/bench_partitions.py [--runs 3]

Times are medians of ``--runs`` runs, with Ray started before timing.
"""

import importlib.util
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from bench_engine import arguments, memory_mb, peak_growth, start_ray, timed

from piot_dagster import RayParquetIOManager, RayResource
from piot_dagster.dagster.formats.registry import FORMATS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"


def location() -> dg.Definitions:
    """The code location (definitions.py), with its database in benchmarks/.data."""
    os.environ["PIOT_TRADES_DB"] = str(DATA / "demo_trades.db")
    DATA.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "scripts.trades_db"], cwd=ROOT, check=True)
    spec = importlib.util.spec_from_file_location("piot_definitions", ROOT / "definitions.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.defs()


def cells(defs: dg.Definitions, runs: int) -> None:
    """(a): 7,300 cells as one run."""
    asset = defs.get_assets_def("trades_by_symbol")
    tags = {
        "dagster/asset_partition_range_start": "2024-01-01|SYM00",
        "dagster/asset_partition_range_end": "2024-12-30|SYM19",
    }
    with tempfile.TemporaryDirectory() as directory, dg.instance_for_test() as instance:
        io_manager = RayParquetIOManager(ray=RayResource(), base_dir=directory)
        resources = {FORMATS["parquet"].resource_key: io_manager}

        def one() -> None:
            key = dg.MultiPartitionKey({"date": "2024-06-03", "symbol": "SYM07"})
            run = dg.materialize([asset], partition_key=key, resources=resources, instance=instance)
            assert run.success

        def backfill() -> int:
            run = dg.materialize([asset], tags=tags, resources=resources, instance=instance)
            assert run.success
            return len(run.asset_materializations_for_node("trades_by_symbol"))

        one()  # warm-up
        base = memory_mb()[0]
        one_rss, _, _ = peak_growth(one)
        all_rss, _, count = peak_growth(backfill)
        seconds, _ = timed(backfill, runs, warm_up=False)
    print(f"(a) {count:,} day x symbol cells in one run: {seconds:.1f} s")
    print(f"    driver peak RSS {base + all_rss:.0f} MB, one cell {base + one_rss:.0f} MB")


def tick(defs: dg.Definitions, runs: int) -> None:
    """(b): a quiet tick over 1,096 days, and the GROUP BY without its checksum."""
    (sensor,) = defs.sensors
    with dg.instance_for_test() as instance:

        def evaluate() -> object:
            context = dg.build_sensor_context(instance=instance, definitions=defs)
            result = sensor.evaluate_tick(context)
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
            return result

        started = time.perf_counter()
        evaluate()  # the first tick records 1,096 versions
        first = time.perf_counter() - started
        quiet, result = timed(evaluate, runs, warm_up=False)
        assert not result.run_requests, "nothing changed"  # type: ignore[attr-defined]
    database = str(DATA / "demo_trades.db")
    plain = "SELECT substr(ts, 1, 10), COUNT(*), MAX(ts) FROM trades GROUP BY 1"
    conn = sqlite3.connect(database)
    without, _ = timed(lambda: conn.execute(plain).fetchall(), runs)
    rows = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
    conn.close()
    print(f"(b) a quiet tick over 1,096 days: {quiet:.2f} s, {rows:,} rows scanned")
    print(f"    ({result.skip_message})")  # type: ignore[attr-defined]
    print(f"    the GROUP BY without the checksum: {without:.2f} s; the first tick {first:.1f} s")


def main() -> None:
    args = arguments(rows=False)
    defs = location()
    start_ray()
    cells(defs, args.runs)
    tick(defs, args.runs)


if __name__ == "__main__":
    main()
