"""A real two-node Ray cluster on this machine (tests/ray_cluster.py): the head, and second
nodes started in a mount namespace of their own, with a private tmpfs over a folder, as a
second machine with its own disk would be. Tasks are pinned to a second node with a custom
resource (``w1``) or node affinity in remote_options; objects go to moto's S3 server.

The module's runs attach to this cluster (``RayResource(address=...)``), so it first ends
the tests' local Ray session; the tests after it start that again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from piot_dagster import PeriodExecutionError, RayParquetIOManager, RayResource, time_partitions
from piot_dagster.errors import StorageError
from tests.dagster_server import BIN
from tests.partitioned_prices import (
    FIRST,
    RANGE_END,
    RANGE_START,
    backfill,
    daily,
    days,
    downstream,
    object_keys,
    prices,
)
from tests.ray_cluster import ENV, Cluster, Node, alive_nodes, attached_cluster
from tests.servers import new_bucket, s3_options


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with attached_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def second_node(cluster: Cluster, tmp_path: Path) -> Iterator[Node]:
    """A node offering the resource ``w1``, with a disk of its own at ``node.private``:
    one per test, as some tests kill theirs."""
    node = cluster.add_private_node(tmp_path / "private", {"w1": 1})
    yield node
    cluster.remove(node)


@pytest.fixture
def bucket(s3_endpoint: str) -> tuple[str, dict[str, str]]:
    return f"s3://{new_bucket(s3_endpoint)}/lake", s3_options(s3_endpoint)


def node_id(cluster: Cluster, resource: str) -> str:
    (node,) = [n for n in alive_nodes(cluster.address) if resource in n["Resources"]]
    return node["NodeID"]


def on(cluster: Cluster, base_dir: str, options: dict[str, str] | None = None, **fields):
    return RayParquetIOManager(
        ray=RayResource(address=cluster.address),
        base_dir=base_dir,
        storage_options=options,
        **fields,
    )


def slowly(frame: pl.DataFrame, seconds: float) -> pl.LazyFrame:
    """``frame``, each partition's task taking ``seconds`` longer."""

    def wait(price: pl.Series) -> pl.Series:
        time.sleep(seconds)
        return price

    # Elementwise, so each task's window filter on ts runs first.
    price = pl.col("price").map_batches(wait, return_dtype=pl.Float64, is_elementwise=True)
    return frame.lazy().with_columns(price)


def kill_raylet_once_stored(
    node: Node, base_dir: str, options: dict, count: int
) -> threading.Thread:
    """``kill -9`` of ``node``'s raylet once ``count`` objects are stored: mid-backfill."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while len(object_keys(base_dir, options)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(node.raylet_pid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_stored_as_a_clean_run(base_dir, options, frame, asset_name="prices") -> list[str]:
    """Every stored partition holds exactly its day's rows of ``frame``; their keys."""
    stored = sorted(
        key.rsplit("/", 1)[1].removesuffix(".parquet") for key in object_keys(base_dir, options)
    )
    for day in stored:
        got = pl.read_parquet(f"{base_dir}/{asset_name}/{day}.parquet", storage_options=options)
        expected = frame.filter(pl.col("ts").dt.date() == dt.date.fromisoformat(day))
        assert_frame_equal(got, expected)
    return stored


# (a) An object store: every partition lands, whichever node wrote it ----------------------


def test_an_s3_backfill_on_the_second_node_lands_every_partition_for_the_head_to_read(
    cluster, second_node, bucket
):
    base_dir, options = bucket
    frame = prices(8)
    upstream = daily(frame, 8, remote_options={"resources": {"w1": 0.01}})
    worker = node_id(cluster, "w1")

    result = backfill(upstream, on(cluster, base_dir, options), 8)

    assert result.success
    events = result.asset_materializations_for_node("prices")
    assert sorted(e.partition for e in events) == days(8)
    assert {e.metadata["ray_node"].value.split()[0] for e in events} == {worker[:12]}
    assert assert_stored_as_a_clean_run(base_dir, options, frame) == days(8)

    # A downstream asset whose tasks run on the head reads each partition from S3.
    @dg.asset(
        partitions_def=time_partitions("daily", FIRST, end=FIRST + dt.timedelta(days=8)),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "remote_options": {"resources": {"head": 0.01}}},
    )
    def doubled(prices: pl.LazyFrame) -> pl.LazyFrame:
        return prices.with_columns(pl.col("price") * 2)

    result = dg.materialize(
        [upstream, doubled],
        selection=[doubled],
        resources={"io_manager": on(cluster, base_dir, options)},
        tags={RANGE_START: days(8)[0], RANGE_END: days(8)[-1]},
    )
    assert result.success
    head = node_id(cluster, "head")
    events = result.asset_materializations_for_node("doubled")
    assert {e.metadata["ray_node"].value.split()[0] for e in events} == {head[:12]}
    got = downstream(doubled, pl.DataFrame, on(cluster, base_dir, options), upstream)
    assert_frame_equal(got, frame.with_columns(pl.col("price") * 2))


# (b) A local base_dir the nodes do not share fails loudly --------------------------------


def test_a_local_base_dir_on_a_node_with_its_own_disk_fails_naming_the_node_and_partitions(
    cluster, second_node
):
    frame = prices(4)
    upstream = daily(frame, 4, remote_options={"resources": {"w1": 0.01}})
    base_dir = second_node.private / "assets"
    worker = node_id(cluster, "w1")

    with dg.instance_for_test() as instance:
        with pytest.raises(StorageError) as error:
            backfill(upstream, on(cluster, str(base_dir)), 4, instance=instance)
        assert instance.get_materialized_partitions(upstream.key) == set()

    message = str(error.value)
    assert "4 partition(s) were written where this Dagster process cannot see them" in message
    assert f"on Ray node {worker[:12]}" in message
    assert "2024-01-01, 2024-01-02, 2024-01-03, 2024-01-04" in message
    assert "object store" in message
    assert "every Ray node mounts" in message
    assert list(base_dir.rglob("*")) == [], "nothing reached the disk this process sees"


def test_a_local_base_dir_every_node_mounts_passes_the_check(cluster, second_node, tmp_path):
    frame = prices(3)
    upstream = daily(frame, 3, remote_options={"resources": {"w1": 0.01}})
    shared = tmp_path / "shared"  # outside the node's private tmpfs: both see it

    assert backfill(upstream, on(cluster, str(shared)), 3).success

    assert_frame_equal(downstream(upstream, pl.DataFrame, on(cluster, str(shared))), frame)


# (c) A node lost mid-backfill ------------------------------------------------------------


def test_a_lost_node_under_soft_affinity_is_replaced_by_the_head_and_every_partition_lands(
    cluster, second_node, bucket
):
    base_dir, options = bucket
    frame = prices(10)
    affinity = NodeAffinitySchedulingStrategy(node_id(cluster, "w1"), soft=True)

    @dg.asset(
        name="prices",
        partitions_def=time_partitions("daily", FIRST, end=FIRST + dt.timedelta(days=10)),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "remote_options": {"scheduling_strategy": affinity}},
    )
    def slow_prices() -> pl.LazyFrame:
        return slowly(frame, 0.4)

    killer = kill_raylet_once_stored(second_node, base_dir, options, 3)
    result = backfill(slow_prices, on(cluster, base_dir, options), 10)
    killer.join()

    assert result.success
    nodes = {
        e.metadata["ray_node"].value.split()[0]
        for e in result.asset_materializations_for_node("prices")
    }
    assert node_id(cluster, "head")[:12] in nodes, "the head took over the lost node's tasks"
    assert assert_stored_as_a_clean_run(base_dir, options, frame) == days(10)


def test_a_lost_node_that_alone_offered_a_resource_fails_the_run_naming_what_did_not_land(
    cluster, second_node, bucket
):
    base_dir, options = bucket
    frame = prices(10)

    @dg.asset(
        name="prices",
        partitions_def=time_partitions("daily", FIRST, end=FIRST + dt.timedelta(days=10)),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "remote_options": {"resources": {"w1": 0.01}}},
    )
    def slow_prices() -> pl.LazyFrame:
        return slowly(frame, 0.4)

    killer = kill_raylet_once_stored(second_node, base_dir, options, 3)
    started = time.monotonic()
    with dg.instance_for_test() as instance:
        with pytest.raises(PeriodExecutionError) as error:
            backfill(
                slow_prices,
                on(cluster, base_dir, options, infeasible_timeout_s=3),
                10,
                instance=instance,
            )
        recorded = instance.get_materialized_partitions(slow_prices.key)
    killer.join()

    assert time.monotonic() - started < 90, "the run did not hang"
    landed = assert_stored_as_a_clean_run(base_dir, options, frame)
    assert set(recorded) == set(landed), "Dagster records exactly what landed"
    message = str(error.value)
    lost = [day for day in days(10) if day not in landed]
    assert lost
    assert f"partition(s) {', '.join(lost)} failed" in message
    assert "no alive Ray node offers" in message
    assert "'w1': 0.01" in message


# Attach modes: Ray Client, "auto" and a GCS address -------------------------------------

DRIVER = textwrap.dedent(
    """
    import datetime as dt, json, sys
    import dagster as dg, polars as pl
    import piot_dagster
    from piot_dagster import RayParquetIOManager, RayResource, time_partitions

    address, base_dir, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    stamps = pl.datetime_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 31), "6h", eager=True)
    frame = pl.DataFrame({"ts": stamps, "v": pl.int_range(stamps.len(), eager=True)})
    ray = RayResource(address=address)
    with dg.build_resources({"ray": ray}) as resources:
        resources.ray.connect()  # it connects on first use: here Ray is used directly
        window = (dt.datetime(2024, 1, 15), dt.datetime(2024, 3, 1))
        query = frame.lazy().filter(pl.col("ts").is_between(*window, closed="left"))
        for how in ("arrow", "ipc", "parquet"):
            got = query.piot.execute_on_ray(date_column="ts", time_unit="monthly", return_as=how)
            assert got.collect().equals(query.collect()), how

        @dg.asset(
            partitions_def=time_partitions("daily", "2024-01-01", end="2024-01-06"),
            backfill_policy=dg.BackfillPolicy.single_run(),
            metadata={"date_column": "ts"},
        )
        def values() -> pl.LazyFrame:
            return frame.lazy()

        @dg.asset(io_manager_key="memory")
        def total(values: pl.DataFrame) -> int:
            return int(values["v"].sum())

        manager = RayParquetIOManager(ray=ray, base_dir=base_dir, storage_options=options)
        tags = {
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-05",
        }
        assert dg.materialize([values], resources={"io_manager": manager}, tags=tags).success
        result = dg.materialize(
            [values, total], selection=[total],
            resources={"io_manager": manager, "memory": dg.InMemoryIOManager()},
        )
        expected = frame.filter(pl.col("ts") < dt.datetime(2024, 1, 6))["v"].sum()
        print(json.dumps({"total": result.output_for_node("total"), "expected": int(expected)}))
    """
)


@pytest.mark.parametrize("mode", ["ray client", "auto", "gcs address"])
def test_every_attach_mode_runs_execute_on_ray_and_a_backfill(cluster, bucket, mode, tmp_path):
    base_dir, options = bucket
    address = {"ray client": cluster.client_address, "auto": "auto"}.get(mode, cluster.address)
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    if mode == "auto":  # "auto" finds the cluster through RAY_ADDRESS, as users set it
        env["RAY_ADDRESS"] = cluster.address
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)

    out = subprocess.run(
        [str(BIN / "python"), str(script), address, base_dir, json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["total"] == summary["expected"]
