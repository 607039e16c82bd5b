"""The demo (``make demo``, or ``python -m scripts.demo [--again]``): a quarter of daily
trades backfilled as one run on Ray, as Parquet files and as one Delta table, each run
judging its days' partition checks; then the downstream assets, the daily VWAP for the
same days and the summary of every stored day. Every run is one of the code location's
named jobs, in the Dagster instance (``DAGSTER_HOME``) that ``make ui`` shows.

What the instance already holds (partitions with their checks judged, or a summary newer
than every stored day) is skipped unless ``--again``.
"""

import argparse
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import ray

from defs.trades import DAILY
from piot_dagster.dagster.reading import ranges
from scripts.trades_db import ensure_trades_db, shown

ROOT = Path(__file__).resolve().parents[1]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DAILY_TABLES = [dg.AssetKey("trades_daily"), dg.AssetKey("trades_daily_delta")]
SUMMARY, UPSTREAM = dg.AssetKey("daily_summary"), dg.AssetKey("trades_daily")
# Each run's job and the asset it stores (with its partition checks, if it has them).
STEPS = {
    "trades_daily_job": DAILY_TABLES[0],
    "trades_daily_delta_job": DAILY_TABLES[1],
    "daily_vwap_job": dg.AssetKey("daily_vwap"),
}


def demo(first: str = "2024-01-01", last: str = "2024-03-31", *, again: bool = False) -> None:
    """Run the demo's jobs for the days ``first`` to ``last`` and print at most 12 lines."""
    built = ensure_trades_db()
    source = f"{shown(built)}, 20 symbols every 15 minutes, 2022 to 2024"
    print(f"piot-dagster demo: the daily trades of {first} to {last}, each day a Ray task")
    # The code location as definitions.py loads it.
    location = dg.load_from_defs_folder(path_within_project=ROOT)
    instance = dg.DagsterInstance.get()
    days = [k for k in DAILY.get_partition_keys() if first <= k <= last]
    graph = location.resolve_asset_graph()
    checks = {
        key: sorted((c for c in graph.asset_check_keys if c.asset_key == key), key=str)
        for key in DAILY_TABLES
    }
    missing = {
        key: days if again else sorted(set(days) - instance.get_materialized_partitions(key))
        for key in STEPS.values()
    }
    # Stored days whose checks were not judged since they were stored (an instance filled
    # before the demo ran checks): judged by a run of the checks alone, which reads what
    # the writing tasks measured, not the data.
    unchecked = {
        key: sorted(
            set(days)
            & instance.get_materialized_partitions(key)
            - set(missing[key])
            - _judged_days(instance, checks[key], days)
        )
        for key in DAILY_TABLES
    }
    summarize = again or _stale(instance, SUMMARY, UPSTREAM)
    seconds = dict.fromkeys([*STEPS.values(), SUMMARY], "skipped")
    if any(missing.values()) or any(unchecked.values()) or summarize:
        started = time.perf_counter()
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        source += f"; Ray: {cpus:.0f} CPUs, ready in {time.perf_counter() - started:.1f} s"
    print(f"  source: {source}")
    for job, key in STEPS.items():
        if missing[key]:
            seconds[key] = _run(instance, location.resolve_job_def(job), missing[key])
    for job, key in STEPS.items():
        if unchecked.get(key):
            subset = location.resolve_job_def(job).get_subset(
                asset_selection=set(), asset_check_selection=set(checks[key])
            )
            _run(instance, subset, unchecked[key])
    # Decided before the runs above, which make the summary stale.
    if summarize:
        seconds[SUMMARY] = _run(instance, location.resolve_job_def("daily_summary_job"), [])
    if ray.is_initialized():
        ray.shutdown()

    print(f"{'asset':<19}{'partitions':>11}{'rows':>10}{'seconds':>9}  stored in")
    for key in STEPS.values():
        partitions, rows, files = _stored(instance, key, days)
        print(f"{key.to_user_string():<19}{partitions:>11,}{rows:>10,}{seconds[key]:>9}  {files}")
    record = _latest(instance, SUMMARY)
    assert record is not None
    assert record.asset_materialization is not None
    summary = record.asset_materialization.metadata
    read = summary["partitions_read"].value
    print(
        f"{'daily_summary':<19}{read:>11,}{summary['dagster/row_count'].value:>10,}"
        f"{seconds[SUMMARY]:>9}  {shown(Path(summary['path'].value))}"
    )
    print(
        f"(daily_summary: every stored day of trades_daily, {read} partitions read as one "
        f"frame: {summary['rows_read'].value:,} rows)"
    )
    judged = []
    for key, keys in checks.items():
        passed = sum(_check_results(instance, keys, days).values())
        wanted = len(keys) * len(set(days) & instance.get_materialized_partitions(key))
        judged.append(f"{key.to_user_string()} {passed:,} of {wanted:,} passed")
    print(f"(partition checks, {len(keys)} of each stored day: {', '.join(judged)})")
    every = DAILY.get_partition_keys()
    absent = set(every) - instance.get_materialized_partitions(UPSTREAM)
    if absent:
        print(
            f"(not stored: {len(absent):,} of trades_daily's {len(every):,} days, "
            f"{ranges(every, absent, 3)}:"
            f" the demo backfills one quarter)"
        )
    if "skipped" in seconds.values():
        print("(skipped: already stored; `make demo DEMO_ARGS=--again` reruns them)")
    print("The UI: `make ui`, then http://127.0.0.1:3000 (Assets > trades_daily)")


def _run(instance: dg.DagsterInstance, job: dg.JobDefinition, days: list[str]) -> str:
    """Run ``job`` in the instance for the range of ``days`` as one run (unpartitioned,
    without days): the seconds it took."""
    started = time.perf_counter()
    job.execute_in_process(
        instance=instance,
        tags={RANGE_START: days[0], RANGE_END: days[-1]} if days else {},
        # The run's failures only: what it did not store, the demo says itself.
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    return f"{time.perf_counter() - started:.1f}"


def _check_results(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], days: list[str]
) -> dict[tuple[str, str], bool]:
    """Whether each of the checks ``keys`` passed on each of ``days``: its latest result,
    if it judged the day's latest materialization."""
    infos = instance.event_log_storage.get_asset_check_partition_info(keys, partition_keys=days)
    results = {}
    for info in infos:
        status = info.latest_execution_status.value
        if info.is_current and status in ("SUCCEEDED", "FAILED"):
            results[(info.partition_key, info.check_key.name)] = status == "SUCCEEDED"
    return results


def _judged_days(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], days: list[str]
) -> set[str]:
    """Those of ``days`` on which every check of ``keys`` judged the latest materialization."""
    results = _check_results(instance, keys, days)
    return {day for day in days if all((day, key.name) in results for key in keys)}


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
            latest.setdefault(record.partition_key, record.asset_materialization.metadata)  # type: ignore[union-attr]
        if not page.has_more:
            break
        cursor = page.cursor
    rows = sum(m["dagster/partition_row_count"].value for m in latest.values())
    if any("delta_table" in m for m in latest.values()):
        table = Path(next(iter(latest.values()))["delta_table"].value)
        version = max(m["delta_version"].value for m in latest.values())
        return len(latest), rows, f"{shown(table)}/ (Delta table, version {version})"
    folder = Path(next(iter(latest.values()))["path"].value).parent
    return len(latest), rows, f"{shown(folder)}/"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The piot-dagster demo (make demo).")
    parser.add_argument(
        "--again", action="store_true", help="rerun partitions already materialized"
    )
    demo(again=parser.parse_args().again)
