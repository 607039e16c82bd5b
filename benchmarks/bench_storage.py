"""Benchmark object storage (issue 10), against moto's S3 server on loopback.

- (a) a 36-month single-run backfill of the 10M-row SQLite trades table (bench_scan_db)
  to ``s3://``, against the same to a local ``base_dir``: the ratio;
- (b) ``load_input`` of 3,650 daily partitions from ``s3://`` as a LazyFrame: listing and
  planning time, then a filtered collect that touches one month, against Polars' own
  ``scan_parquet`` over the same objects;
- (c) the driver's peak RSS during (a) against a one-partition run: it must not grow with
  the partitions' data.

    .venv/bin/python benchmarks/bench_storage.py [--rows 10000000] [--runs 3]

Times are medians of ``--runs`` runs, with Ray started before timing.
"""

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl
import ray
from bench_dagster import RANGE, assets
from bench_engine import arguments, memory_mb, peak_growth, start_ray, timed
from bench_scan_db import build

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from piot_dagster import RayParquetIOManager, RayResource, time_partitions
from tests.servers import moto_server, new_bucket, s3_options

YEARS = time_partitions("daily", "2015-01-01", end="2025-01-01")
FEBRUARY_2020 = pl.col("ts").is_between(
    dt.datetime(2020, 2, 1), dt.datetime(2020, 3, 1), closed="left"
)


def backfills(uri: str, endpoint: str, runs: int, instance: dg.DagsterInstance) -> None:
    """(a) and (c): the 36-month backfill to S3 and to a local folder."""
    with tempfile.TemporaryDirectory() as directory:
        trades, _ = assets(uri, Path(directory))
        managers = {
            "s3": RayParquetIOManager(
                ray=RayResource(),
                base_dir=f"s3://{new_bucket(endpoint)}/lake",
                storage_options=s3_options(endpoint),
            ),
            "local": RayParquetIOManager(ray=RayResource(), base_dir=directory),
        }

        def backfill(where: str, **tags: str) -> None:
            resources = {"io_manager": managers[where]}
            run = dg.materialize(
                [trades], tags=tags or RANGE, resources=resources, instance=instance
            )
            assert run.success

        def one_month() -> None:
            assert dg.materialize(
                [trades],
                partition_key="2023-06-01",
                resources={"io_manager": managers["s3"]},
                instance=instance,
            ).success

        one_month()  # warm-up: Ray workers, imports, the bucket
        base = memory_mb()[0]
        one_rss, _, _ = peak_growth(one_month)
        all_rss, all_private, _ = peak_growth(lambda: backfill("s3"))
        s3, _ = timed(lambda: backfill("s3"), runs, warm_up=False)
        local, _ = timed(lambda: backfill("local"), runs, warm_up=False)
    ratio = (base + all_rss) / (base + one_rss)
    print(f"(a) 36-month single-run backfill: s3:// {s3:.2f} s, local {local:.2f} s")
    print(f"    ratio s3 / local {s3 / local:.2f}")
    print(f"(c) driver peak RSS: 36 months {base + all_rss:.0f} MB, one {base + one_rss:.0f} MB")
    print(f"    ratio {ratio:.2f}; growth {all_rss:.0f} MB (private {all_private:.0f} MB)")


def ten_years(endpoint: str, runs: int, instance: dg.DagsterInstance) -> None:
    """(b): 3,650 daily partitions in S3, loaded as one LazyFrame."""
    base_dir, options = f"s3://{new_bucket(endpoint)}/lake", s3_options(endpoint)
    manager = RayParquetIOManager(ray=RayResource(), base_dir=base_dir, storage_options=options)
    stamps = pl.datetime_range(
        dt.datetime(2015, 1, 1), dt.datetime(2024, 12, 31, 23), "1h", eager=True
    )

    @dg.asset(
        partitions_def=YEARS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def hourly() -> pl.LazyFrame:
        return pl.LazyFrame({"ts": stamps, "v": pl.int_range(stamps.len(), eager=True)})

    keys = YEARS.get_partition_keys()
    tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    started = time.perf_counter()
    assert dg.materialize(
        [hourly], tags=tags, resources={"io_manager": manager}, instance=instance
    ).success
    print(f"    (3,650 daily partitions written to S3 in {time.perf_counter() - started:.1f} s)")

    def load() -> pl.LazyFrame:
        context = dg.build_input_context(
            asset_key=hourly.key,
            asset_partitions_def=YEARS,
            asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
            dagster_type=dg.DagsterType(lambda _, __: True, typing_type=pl.LazyFrame, name="lf"),
            upstream_output=dg.build_output_context(
                asset_key=hourly.key, definition_metadata={"date_column": "ts"}
            ),
        )
        return manager.load_input(context)

    planning, lazy = timed(load, runs)
    month, ours = timed(lambda: lazy.filter(FEBRUARY_2020).collect(), runs)
    uris = [f"{base_dir}/hourly/{key}.parquet" for key in keys]
    polars_month, theirs = timed(
        lambda: pl.scan_parquet(uris, storage_options=options).filter(FEBRUARY_2020).collect(), runs
    )
    assert ours.equals(theirs)
    print(f"(b) load_input of 3,650 partitions as a LazyFrame: {planning:.2f} s to list and plan")
    print(f"    a one-month collect {month:.2f} s ({ours.height} rows)")
    print(f"    Polars' scan_parquet, same objects and filter: {polars_month:.2f} s")
    print(f"    ratio Polars / ours {polars_month / month:.1f}")


def main() -> None:
    args = arguments()
    uri, _ = build(args.rows)["sqlite"]
    start_ray()
    with (
        tempfile.TemporaryDirectory() as directory,
        moto_server(Path(directory) / "moto.log") as endpoint,
        dg.instance_for_test() as instance,
    ):
        backfills(uri, endpoint, args.runs, instance)
        ten_years(endpoint, args.runs, instance)
    ray.shutdown()


if __name__ == "__main__":
    main()
