"""Benchmark the Dagster integration (issue 4).

Workload: a monthly asset over the 10M-row SQLite trades table of bench_scan_db
(2022-2024), backfilled for its 36 months. Compares, in one process with Ray started
before timing:

- (a) one single-run backfill through RayParquetIOManager;
- (b) 36 separate single-partition runs through it;
- (c) a plain Dagster asset that collects and writes each partition in process, no Ray;

and the driver's peak memory in (a) against a one-partition run (target <= 1.5x).
Target: (a) at least 5x faster than (b).

    .venv/bin/python benchmarks/bench_dagster.py [--rows 10000000] [--runs 3]

Times are medians of ``--runs`` runs.
"""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl
import ray
from bench_engine import arguments, memory_mb, peak_growth, start_ray, timed
from bench_scan_db import build

import piot_dagster
from piot_dagster import RayParquetIOManager, RayResource, time_partitions

MONTHS = time_partitions("monthly", "2022-01-01", end="2025-01-01")
RANGE = {
    "dagster/asset_partition_range_start": "2022-01-01",
    "dagster/asset_partition_range_end": "2024-12-01",
}


def assets(uri: str, out: Path) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=MONTHS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "date"},
    )
    def trades() -> pl.LazyFrame:
        return piot_dagster.scan_db("SELECT date, symbol, price FROM trades", connection=uri)

    @dg.asset(partitions_def=MONTHS, backfill_policy=dg.BackfillPolicy.single_run())
    def trades_in_process(context: dg.AssetExecutionContext) -> None:
        source = piot_dagster.scan_db("SELECT date, symbol, price FROM trades", connection=uri)
        (out / "plain").mkdir(parents=True, exist_ok=True)
        for key in context.partition_keys:
            window = MONTHS.time_window_for_partition_key(key)
            month = pl.col("date").is_between(window.start.date(), window.end.date(), closed="left")
            source.filter(month).collect().write_parquet(out / "plain" / f"{key}.parquet")

    return trades, trades_in_process


def main() -> None:
    args = arguments()
    uri, _ = build(args.rows)["sqlite"]
    start_ray()
    # A persistent (SQLite-backed) instance, as `dagster dev` keeps: each run records its
    # events there, as in a real deployment.
    with tempfile.TemporaryDirectory() as directory, dg.instance_for_test() as instance:
        out = Path(directory)
        trades, plain = assets(uri, out)
        resources = {"io_manager": RayParquetIOManager(ray=RayResource(), base_dir=str(out))}

        def one() -> None:
            assert dg.materialize(
                [trades], partition_key="2023-06-01", resources=resources, instance=instance
            ).success

        def single_run() -> None:
            assert dg.materialize(
                [trades], tags=RANGE, resources=resources, instance=instance
            ).success

        def separate_runs() -> None:
            for key in MONTHS.get_partition_keys():
                assert dg.materialize(
                    [trades], partition_key=key, resources=resources, instance=instance
                ).success

        def in_process() -> None:
            assert dg.materialize([plain], tags=RANGE, instance=instance).success

        one()  # warm-up: Ray workers, imports
        base = memory_mb()[0]
        one_rss, one_private, _ = peak_growth(one)
        a_rss, a_private, _ = peak_growth(single_run)
        a, _ = timed(single_run, args.runs, warm_up=False)
        b, _ = timed(separate_runs, args.runs, warm_up=False)
        c, _ = timed(in_process, args.runs, warm_up=False)
        rows = pl.scan_parquet(out / "trades" / "*.parquet").select(pl.len()).collect().item()
    print(f"{rows:,} rows in 36 monthly partitions")
    print(f"(a) one single-run backfill on Ray   {a:7.2f} s")
    print(
        f"(b) 36 single-partition runs on Ray {b:7.2f} s   (a) is {b / a:.1f}x faster (target >= 5)"
    )
    print(f"(c) plain asset, in process, no Ray {c:7.2f} s   (a) is {c / a:.1f}x faster")
    print(
        f"driver peak RSS: (a) {base + a_rss:.0f} MB, one partition {base + one_rss:.0f} MB, "
        f"ratio {(base + a_rss) / (base + one_rss):.2f} (target <= 1.5); growth over the "
        f"{base:.0f} MB before: (a) {a_rss:.0f} MB (private {a_private:.0f} MB), "
        f"one partition {one_rss:.0f} MB (private {one_private:.0f} MB)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
