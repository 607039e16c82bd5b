"""Partitions larger than a worker's memory: a Ray node inside a 1 GiB memory cgroup
(tests/ray_cluster.py) writes a month of more than 3 GiB in Arrow, read from PostgreSQL
(whose cache stays outside the cap), as one Parquet partition and as one Delta
partition. The rows stream from the database to storage; the same runs collected the
month whole before, and the cap killed the worker.

The module's runs attach to this cluster, so it first ends the tests' local Ray session;
the tests after it start that again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import dagster as dg
import polars as pl
import pytest

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayResource, time_partitions
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
    cluster, capped, big_month, postgres_url, tmp_path, io_manager_class
):
    table, expected = big_month
    manager = io_manager_class(ray=RayResource(address=cluster.address), base_dir=str(tmp_path))
    result = dg.materialize(
        [month_asset(table, postgres_url)],
        partition_key="2024-01-01",
        resources={"io_manager": manager},
    )
    assert result.success
    assert capped.oom_kills() == 0, "no process of the capped node was killed"
    assert capped.peak_bytes() <= CAP
    (event,) = result.asset_materializations_for_node("big_month")
    assert event.metadata["dagster/partition_row_count"].value == ROWS
    if io_manager_class is RayDeltaIOManager:
        stored = pl.scan_delta(str(tmp_path / "big_month"))
    else:
        stored = pl.scan_parquet(tmp_path / "big_month" / "2024-01-01.parquet")
    assert aggregates(stored) == expected
