"""Partitions larger than a worker's memory: a Ray node inside a 1 GiB memory cgroup
(tests/ray_cluster.py) writes a month of more than 3 GiB in Arrow, read from PostgreSQL
(whose cache stays outside the cap), as one Parquet partition and as one Delta
partition, and reads it back as a downstream asset receives it. The rows stream from the
database to storage, and from storage through the downstream's query; the same runs
collected the month whole before, and the cap killed the worker.

The module's runs attach to this cluster, so it first ends the tests' local Ray session;
the tests after it start that again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import ray
from deltalake import DeltaTable

import piot_dagster
from piot_dagster import PeriodExecutionError, RayDeltaIOManager, RayResource, time_partitions
from tests.ray_cluster import Cluster, Node, attached_cluster

CAP = 2**30
# 48M rows of (ts, symbol, price, qty, note): 8 + 9 + 8 + 8 + 36 bytes a row in Arrow
# (values and offsets), 3.3 GB for January.
ROWS = 48_000_000
JANUARY = time_partitions("monthly", "2024-01-01", end="2024-02-01")
ON_THE_CAPPED_NODE = {"resources": {"capped": 1}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with attached_cluster(tmp_path_factory.mktemp("cap")) as started:
        yield started


@pytest.fixture
def capped(cluster: Cluster) -> Iterator[Node]:
    """A node capped at 1 GiB, offering the resource ``capped``: one per test, so each
    test's peak and kills are its own."""
    node = cluster.add_capped_node(CAP, {"capped": 1})
    yield node
    cluster.remove(node)


@pytest.fixture(scope="module")
def stored_months() -> dict[type, Path]:
    """The folder where January was stored, by IO manager: a reading test reads back what
    the writing test stored, and stores it itself only when it runs alone."""
    return {}


@pytest.fixture
def driver(cluster: Cluster) -> Iterator[None]:
    """This process attached to the cluster, to start tasks of its own."""
    if not ray.is_initialized():
        ray.init(address=cluster.address, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def big_month(postgres_url: str) -> Iterator[tuple[str, dict[str, object]]]:
    """An unlogged PostgreSQL table of ROWS trades in January 2024; its name and the
    aggregates a correct copy must have."""
    import adbc_driver_postgresql.dbapi

    table = f"piot_big_{uuid.uuid4().hex[:8]}"
    try:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE UNLOGGED TABLE {table} AS SELECT "
                # Spread over January, ascending, a few rows a second.
                f"TIMESTAMP '2024-01-01' + (i * 2678399.0 / {ROWS}) * INTERVAL '1 second' AS ts, "
                "'SYM' || lpad((i % 20)::text, 2, '0') AS symbol, "
                "(100 + (i % 997) / 10.0)::float8 AS price, "
                "(1 + i % 50)::int8 AS qty, "
                "substr('abcdefghijklmnopqrstuvwxyz0123456789abcdef', 1 + (i % 7), 32) AS note "
                f"FROM generate_series(0, {ROWS - 1}) AS i"
            )
            cur.execute(
                f"SELECT count(*), sum(qty)::int8, min(ts), max(ts), "
                f"sum(octet_length(symbol) + octet_length(note))::int8 FROM {table}"
            )
            count, qty, first, last, text_bytes = cur.fetchone()
            conn.commit()
        arrow_bytes = count * (8 + 8 + 8 + 4 + 4) + text_bytes
        assert arrow_bytes > 3 * 2**30, "the month is larger than 3 GiB in Arrow"
        assert dt.datetime(2024, 1, 1) == first < last < dt.datetime(2024, 2, 1)
        yield table, {"rows": count, "qty": qty, "first": first, "last": last}
    finally:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            conn.commit()


def month_asset(table: str, postgres_url: str) -> dg.AssetsDefinition:
    @dg.asset(
        name="big_month",
        partitions_def=JANUARY,
        metadata={"date_column": "ts", "remote_options": ON_THE_CAPPED_NODE},
    )
    def big() -> pl.LazyFrame:
        return piot_dagster.scan_db(
            f"SELECT ts, symbol, price, qty, note FROM {table}", connection=postgres_url
        )

    return big


def store_month(
    cluster: Cluster, table: str, postgres_url: str, base_dir: Path, io_manager_class: type
) -> dg.ExecuteInProcessResult:
    """January of ``table`` stored under ``base_dir`` by a run whose task runs on the
    capped node."""
    manager = io_manager_class(ray=RayResource(address=cluster.address), base_dir=str(base_dir))
    return dg.materialize(
        [month_asset(table, postgres_url)],
        partition_key="2024-01-01",
        resources={"io_manager": manager},
    )


def aggregates(stored: pl.LazyFrame) -> dict[str, object]:
    """The same aggregates, of what was stored: one streaming pass."""
    return (
        stored.select(
            rows=pl.len(),
            qty=pl.col("qty").sum(),
            first=pl.col("ts").min(),
            last=pl.col("ts").max(),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )


def test_a_month_larger_than_the_workers_memory_lands_exactly_under_a_1_gib_cap(
    cluster, capped, big_month, postgres_url, tmp_path, io_manager_class, stored_months
):
    table, expected = big_month
    result = store_month(cluster, table, postgres_url, tmp_path, io_manager_class)
    assert result.success
    stored_months[io_manager_class] = tmp_path
    assert capped.oom_kills() == 0, "no process of the capped node was killed"
    assert capped.peak_bytes() <= CAP
    (event,) = result.asset_materializations_for_node("big_month")
    assert event.metadata["dagster/partition_row_count"].value == ROWS
    if io_manager_class is RayDeltaIOManager:
        stored = pl.scan_delta(str(tmp_path / "big_month"))
        files = DeltaTable(str(tmp_path / "big_month")).file_uris()
        assert len(files) > 1, "rolled at target_file_size"
    else:
        stored = pl.scan_parquet(tmp_path / "big_month" / "2024-01-01.parquet")
    assert aggregates(stored) == expected


@ray.remote(max_retries=0)
def read_downstream(io_manager_class: type, base_dir: str, copy: str) -> dict[str, object]:
    """What a downstream asset does with January received as a ``pl.LazyFrame`` through
    the IO manager: aggregate it and copy it with ``sink_parquet``. The aggregates of
    both, and this worker's peak RSS."""
    manager = io_manager_class(ray=RayResource(), base_dir=base_dir)
    context = dg.build_input_context(
        asset_key=dg.AssetKey("big_month"),
        asset_partitions_def=JANUARY,
        asset_partition_key_range=dg.PartitionKeyRange("2024-01-01", "2024-01-01"),
        dagster_type=dg.DagsterType(lambda _, __: True, typing_type=pl.LazyFrame, name="lf"),
        upstream_output=dg.build_output_context(
            asset_key=dg.AssetKey("big_month"), definition_metadata={"date_column": "ts"}
        ),
    )
    month = manager.load_input(context)
    assert isinstance(month, pl.LazyFrame)
    read = aggregates(month)
    month.sink_parquet(copy, engine="streaming")
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if "VmHWM" in line)
    return {"read": read, "copied": aggregates(pl.scan_parquet(copy)), "rss": peak_kb * 1024}


def test_a_stored_month_larger_than_the_workers_memory_reads_back_lazily_under_a_1_gib_cap(
    cluster, capped, driver, big_month, postgres_url, tmp_path, io_manager_class, stored_months
):
    table, expected = big_month
    base_dir = stored_months.get(io_manager_class)
    if base_dir is None:
        assert store_month(cluster, table, postgres_url, tmp_path, io_manager_class).success
        base_dir = tmp_path
    capped.reset_peak()

    got = ray.get(
        read_downstream.options(**ON_THE_CAPPED_NODE).remote(
            io_manager_class, str(base_dir), str(tmp_path / "copy.parquet")
        )
    )

    assert got["read"] == expected
    assert got["copied"] == expected
    assert capped.oom_kills() == 0, "no process of the capped node was killed"
    print(
        f"{io_manager_class.__name__}: the reading worker peaked at {got['rss'] / 2**20:.0f} "
        f"MiB, the capped node at {capped.peak_bytes() / 2**20:.0f} MiB"
    )


def test_a_month_larger_than_the_workers_memory_streams_back_through_execute_on_ray(
    capped, driver, big_month, postgres_url, tmp_path
):
    table, expected = big_month
    january = pl.col("ts").is_between(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1), closed="left"
    )
    query = (
        piot_dagster.scan_db(
            f"SELECT ts, symbol, price, qty, note FROM {table}", connection=postgres_url
        )
        .filter(january)
        .piot.execute_on_ray(
            date_column="ts", time_unit="monthly", remote_options=ON_THE_CAPPED_NODE
        )
    )

    query.sink_parquet(tmp_path / "january.parquet")

    assert aggregates(pl.scan_parquet(tmp_path / "january.parquet")) == expected
    assert capped.oom_kills() == 0, "no process of the capped node was killed"
    assert capped.peak_bytes() <= CAP


def hog(stamps: pl.Series) -> pl.Series:
    """How many bytes were written to for each of ``stamps``: 2 GiB, more than the capped
    node may hold."""
    held = b"\x01" * (2 * 2**30)
    return pl.Series([len(held)] * len(stamps), dtype=pl.Int64)


def test_a_task_the_cap_kills_is_reported_out_of_memory_naming_its_period_node_and_cap(
    cluster, capped, driver
):
    january = pl.col("ts").is_between(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1), closed="left"
    )
    query = piot_dagster.execute_on_ray(
        pl.LazyFrame({"ts": [dt.datetime(2024, 1, 15)]})
        .filter(january)
        .with_columns(held=pl.col("ts").map_batches(hog, return_dtype=pl.Int64)),
        date_column="ts",
        time_unit="monthly",
        remote_options={**ON_THE_CAPPED_NODE, "max_retries": 0},
    )
    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "capped" in n["Resources"]]

    with pytest.raises(PeriodExecutionError) as failed:
        query.collect()

    message = str(failed.value)
    assert capped.oom_kills() >= 1
    assert f"period {failed.value.period}: out of memory" in message
    assert f"node {node[:12]}" in message
    assert "capped at 1.0 GiB" in message
    assert 'remote_options={"memory": <bytes>}' in message
    assert "smaller periods" in message
