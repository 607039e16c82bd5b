"""RayParquetIOManager with an object store as base_dir: S3 on moto's standalone server and
Azure on Azurite, both on 127.0.0.1, reached the way real S3 and Azure are (the endpoint
in storage_options), from a real local Ray."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import subprocess
import sys
import textwrap

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from piot_dagster import RayParquetIOManager, RayResource, time_partitions
from piot_dagster.dagster.reading import Part, Wanted, load, scan
from piot_dagster.errors import StorageError
from piot_dagster.storage import PartitionWriter, open_storage
from piot_dagster.storage.object_store import PART_BYTES
from tests.partitioned_prices import (
    FIRST,
    backfill,
    daily,
    days,
    downstream,
    manager,
    object_keys,
    prices,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")
# Writing and reading back -----------------------------------------------------------------


def test_a_backfill_stores_one_object_per_partition_and_reads_back_as_every_annotation(
    object_store,
):
    base_dir, options = object_store
    frame = prices(6)
    upstream = daily(frame, 6)
    io_manager = manager(base_dir, options)

    result = backfill(upstream, io_manager, 6)

    assert result.success
    events = result.asset_materializations_for_node("prices")
    assert sorted(e.partition for e in events) == days(6)
    assert {e.metadata["path"].value for e in events} == {
        f"{base_dir}/prices/{day}.parquet" for day in days(6)
    }
    assert {e.metadata["dagster/partition_row_count"].value for e in events} == {48}
    assert object_keys(base_dir, options) == [f"prices/{day}.parquet" for day in days(6)]
    lazy = downstream(upstream, pl.LazyFrame, io_manager)
    assert isinstance(lazy, pl.LazyFrame)
    assert_frame_equal(lazy.collect(), frame)
    assert_frame_equal(downstream(upstream, pl.DataFrame, io_manager), frame)
    eager = downstream(upstream, dict[str, pl.DataFrame], io_manager)
    assert list(eager) == days(6)
    assert_frame_equal(pl.concat(eager.values()), frame)
    lazies = downstream(upstream, dict[str, pl.LazyFrame], io_manager)
    assert_frame_equal(pl.concat([lf.collect() for lf in lazies.values()]), frame)


def test_a_lazy_input_reads_only_the_partitions_its_filter_can_match(s3_endpoint, caplog):
    from tests.servers import new_bucket, s3_options

    base_dir, options = f"s3://{new_bucket(s3_endpoint)}/lake", s3_options(s3_endpoint)
    frame = prices(60)
    upstream = daily(frame, 60)
    io_manager = manager(base_dir, options)
    assert backfill(upstream, io_manager, 60).success
    lazy = downstream(upstream, pl.LazyFrame, io_manager)
    week = pl.col("ts").is_between(dt.datetime(2024, 2, 5), dt.datetime(2024, 2, 12), closed="left")

    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    got = lazy.filter(week & (pl.col("symbol") == "B")).select("price").collect()

    assert_frame_equal(got, frame.filter(week & (pl.col("symbol") == "B")).select("price"))
    (line,) = [r.getMessage() for r in caplog.records if "partition(s) (" in r.getMessage()]
    found = re.search(r"read (\d+) of (\d+) partition\(s\) \((\d+) of (\d+) bytes\)", line)
    read, total, read_bytes, total_bytes = map(int, found.groups())  # type: ignore[union-attr]
    assert (read, total) == (7, 60), line
    assert read_bytes * 5 < total_bytes, line


def test_missing_partitions_are_listed_or_skipped_as_the_input_asks(s3_endpoint):
    from tests.servers import new_bucket, s3_options

    base_dir, options = f"s3://{new_bucket(s3_endpoint)}/lake", s3_options(s3_endpoint)
    frame = prices(4)
    upstream = daily(frame, 4)
    io_manager = manager(base_dir, options)
    assert backfill(upstream, io_manager, 2).success  # 01-01 and 01-02 only

    with pytest.raises(
        FileNotFoundError, match=r"2 partition\(s\) are not materialized: 2024-01-03, 2024-01-04"
    ):
        downstream(upstream, pl.DataFrame, io_manager)
    got = downstream(
        upstream, pl.DataFrame, io_manager, metadata={"allow_missing_partitions": True}
    )
    assert_frame_equal(got, frame.filter(pl.col("ts") < dt.datetime(2024, 1, 3)))


def test_a_failing_partition_leaves_no_object_and_the_others_are_recorded(s3_endpoint):
    from tests.servers import new_bucket, s3_options

    base_dir, options = f"s3://{new_bucket(s3_endpoint)}/lake", s3_options(s3_endpoint)

    def fail_on_the_third(price: pl.Series) -> pl.Series:
        if (price >= 2 * 24 * 2 / 4).any():  # prices count rows: 2024-01-03 starts at 24.0
            raise RuntimeError("the source failed for this day")
        return price

    frame = prices(3)
    # Elementwise, so each task's window filter on ts runs first.
    failing = frame.lazy().with_columns(
        pl.col("price").map_batches(fail_on_the_third, return_dtype=pl.Float64, is_elementwise=True)
    )

    @dg.asset(
        name="prices",
        partitions_def=time_partitions("daily", FIRST, end="2024-01-04"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def prices_asset() -> pl.LazyFrame:
        return failing

    with dg.instance_for_test() as instance:
        result = backfill(
            prices_asset, manager(base_dir, options), 3, raise_on_error=False, instance=instance
        )
        recorded = instance.get_materialized_partitions(prices_asset.key)

    assert not result.success
    assert object_keys(base_dir, options) == [f"prices/{day}.parquet" for day in days(2)], (
        "no object, partial or temporary, for the failed partition"
    )
    assert sorted(recorded) == days(2)


def test_asset_metadata_overrides_base_dir_and_storage_options_through_envvar(
    s3_endpoint, monkeypatch
):
    from tests.servers import S3_KEY_ID, S3_SECRET, new_bucket, s3_options

    bucket = new_bucket(s3_endpoint)
    monkeypatch.setenv("PIOT_TEST_S3_KEY", S3_KEY_ID)
    monkeypatch.setenv("PIOT_TEST_S3_SECRET", S3_SECRET)
    options = {
        **s3_options(s3_endpoint),
        "aws_access_key_id": dg.EnvVar("PIOT_TEST_S3_KEY"),
        "aws_secret_access_key": dg.EnvVar("PIOT_TEST_S3_SECRET"),
    }
    frame = prices(2)
    upstream = daily(frame, 2, base_dir=f"s3://{bucket}/elsewhere", storage_options=options)
    local = RayParquetIOManager(ray=RayResource(), base_dir="/nonexistent/never/used")

    assert backfill(upstream, local, 2).success

    assert object_keys(f"s3://{bucket}/elsewhere", s3_options(s3_endpoint)) == [
        f"prices/{day}.parquet" for day in days(2)
    ]
    assert_frame_equal(downstream(upstream, pl.DataFrame, local), frame)
    lazy = downstream(upstream, pl.LazyFrame, local)
    assert f"s3://{bucket}/elsewhere" in lazy.explain()
    assert S3_SECRET not in lazy.explain()


def test_a_secret_in_asset_metadata_must_come_from_envvar(s3_endpoint):
    from tests.servers import new_bucket, s3_options

    upstream = daily(
        prices(1),
        1,
        base_dir=f"s3://{new_bucket(s3_endpoint)}/lake",
        storage_options=s3_options(s3_endpoint),
    )
    with pytest.raises(ValueError, match=r"storage_options\['aws_access_key_id'\] is written"):
        backfill(upstream, RayParquetIOManager(ray=RayResource()), 1)


# Two writers of one partition, and readers meanwhile -------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    import polars as pl
    from piot_dagster.storage import PartitionWriter, open_storage

    base_dir, options, rows = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    frame = pl.DataFrame({"version": [rows] * rows})
    writer = PartitionWriter(open_storage(base_dir, options), "asset/2024-01-01.parquet", None)
    for _ in range(25):
        writer.write(frame.lazy())
    """
)


def test_a_large_partition_goes_up_in_parts_and_a_stopped_upload_is_aborted(s3_endpoint):
    import boto3

    from tests.servers import S3_KEY_ID, S3_SECRET, new_bucket, s3_options

    bucket = new_bucket(s3_endpoint)
    storage = open_storage(f"s3://{bucket}/lake", s3_options(s3_endpoint))
    # Hashes do not compress: about 24 MB of Parquet, three parts.
    frame = pl.select(v=pl.int_range(3_000_000).hash(7))
    writer = PartitionWriter(storage, "asset/2024-01-01.parquet", None)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )

    assert writer.write(frame.lazy(), proceed=lambda: False) is None
    assert object_keys(f"s3://{bucket}/lake", s3_options(s3_endpoint)) == []
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket), "aborted"

    written = writer.write(frame.lazy())
    assert written is not None
    assert written.bytes > 2 * PART_BYTES
    head = client.head_object(Bucket=bucket, Key="lake/asset/2024-01-01.parquet")
    assert head["ContentLength"] == written.bytes
    assert head["ETag"].strip('"').endswith("-3"), "three parts"
    assert_frame_equal(pl.read_parquet(written.uri, storage_options=s3_options(s3_endpoint)), frame)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    assert not storage.spool(writer.key, writer.token).exists(), "the spooled file is gone"


def test_concurrent_writers_of_one_object_never_give_a_reader_a_mixed_version(s3_endpoint):
    from tests.servers import new_bucket, s3_options

    base_dir, options = f"s3://{new_bucket(s3_endpoint)}/lake", s3_options(s3_endpoint)
    storage = open_storage(base_dir, options)
    part = [Part("2024-01-01", "asset/2024-01-01.parquet")]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, base_dir, json.dumps(options), str(rows)])
        for rows in (40_000, 90_000)
    ]
    reads = 0
    while any(w.poll() is None for w in writers):
        if storage.list(["asset"]):
            # Eager and lazy reads alike: one version, whole.
            eager = load(storage, part, Wanted.of(pl.DataFrame), None)
            for frame in (eager, scan(storage, part, None)):
                got = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
                version = got["version"][0]
                assert got.height == version, "a read mixed or truncated versions"
                assert got["version"].n_unique() == 1
                reads += 1
    assert all(w.returncode == 0 for w in writers)
    assert reads > 10
    assert object_keys(base_dir, options) == ["asset/2024-01-01.parquet"]


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_large_partition_is_read_from_a_snapshot_that_a_replacement_meanwhile_leaves_whole(
    where, request, tmp_path
):
    from tests.servers import new_bucket, s3_options

    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        storage = open_storage(f"s3://{new_bucket(endpoint)}/lake", s3_options(endpoint))
    else:
        storage = open_storage(tmp_path)
    key = "asset/2024-01-01.parquet"
    # Hashes do not compress: about 24 MB of Parquet, too large to be read into memory.
    old = pl.select(v=pl.int_range(3_000_000).hash(7))
    new = old.select(pl.col("v") + 1)
    assert PartitionWriter(storage, key, None).write(old.lazy()) is not None
    (listed,) = storage.list(["asset"]).values()
    assert listed.stored.size > 2 * PART_BYTES
    part = Part("2024-01-01", key, size=listed.stored.size, version=listed.stored.version)

    batches = scan(storage, [part], None).collect_batches(chunk_size=100_000)
    first = next(batches)
    assert PartitionWriter(storage, key, None).write(new.lazy()) is not None

    assert_frame_equal(pl.concat([first, *batches]), old)
    (listed,) = storage.list(["asset"]).values()
    replaced = Part("2024-01-01", key, size=listed.stored.size, version=listed.stored.version)
    assert_frame_equal(scan(storage, [replaced], None).collect(), new)
    # A version the listing no longer shows: the current one, whole.
    assert_frame_equal(scan(storage, [part], None).collect(), new)
    if where == "folder":
        assert [p.name for p in (tmp_path / "asset").iterdir()] == ["2024-01-01.parquet"]


# Where partitions live ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_dir", "kind", "bucket", "uri"),
    [
        ("s3://lake/piot/", "ObjectStorage", "lake", "s3://lake/piot"),
        ("gs://lake", "ObjectStorage", "lake", "gs://lake"),
        ("az://container/piot", "ObjectStorage", "container", "az://container/piot"),
        (
            "abfss://container@account.dfs.core.windows.net/piot",
            "ObjectStorage",
            "container",
            "abfss://container@account.dfs.core.windows.net/piot",
        ),
        ("file:///srv/assets", "LocalStorage", "", "/srv/assets"),
        ("/srv/assets/", "LocalStorage", "", "/srv/assets"),
    ],
)
def test_base_dir_uris_name_their_store_bucket_and_location(base_dir, kind, bucket, uri):
    options = {"account_name": "account"} if base_dir.startswith("az") else None
    storage = open_storage(base_dir, options)
    assert type(storage).__name__ == kind
    assert (storage.location.bucket, storage.location.uri) == (bucket, uri)
    assert storage.uri(storage.key(["trades"], "2024-01-05")) == f"{uri}/trades/2024-01-05.parquet"


# Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_dir", "options", "error", "names"),
    [
        ("hdfs://lake/x", None, ValueError, r"unknown scheme 'hdfs'; use a local path, file://"),
        ("s3:///x", None, ValueError, r"names no bucket; write it as s3://<bucket>/<prefix>"),
        ("file://otherhost/x", None, ValueError, r"names the host 'otherhost'"),
        ("s3://lake/x", {"aws_bogus": "1"}, ValueError, r"'aws_bogus' is not an option for s3://"),
        (
            "gs://lake/x",
            {"google_bogus": "1"},
            ValueError,
            r"'google_bogus' is not an option for gs",
        ),
        ("az://lake/x", {"azure_bogus": "1"}, ValueError, r"'azure_bogus' is not an option for az"),
    ],
)
def test_a_bad_base_dir_or_storage_option_names_the_asset_and_the_fix(
    base_dir, options, error, names
):
    # The asset is named in the message, or in a note after it: either order matches.
    with pytest.raises(error, match=rf"(?s)(?=.*asset prices).*{names}"):
        backfill(daily(prices(1), 1), manager(base_dir, options), 1)


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ("aws_region=x", TypeError, "storage_options must be a mapping"),
        ({"aws_region": 1}, TypeError, "values must be strings.*'aws_region'"),
    ],
)
def test_storage_options_in_metadata_must_be_a_mapping_of_strings(options, error, names):
    asset = daily(prices(1), 1, base_dir="s3://lake/x", storage_options=options)
    with pytest.raises(error, match=f"(?s)(?=.*asset prices).*{names}"):
        backfill(asset, RayParquetIOManager(ray=RayResource()), 1)


def test_a_missing_bucket_is_named_with_its_endpoint(s3_endpoint):
    from tests.servers import s3_options

    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist at http"):
        backfill(daily(prices(1), 1), manager("s3://no-such-bucket/x", s3_options(s3_endpoint)), 1)


def test_an_unreachable_endpoint_is_named(tmp_path):
    from tests.dagster_server import free_port
    from tests.servers import s3_options

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(StorageError, match=f"cannot reach {endpoint}(?s:.*)\nin asset prices"):
        backfill(daily(prices(1), 1), manager("s3://lake/x", s3_options(endpoint)), 1)
    gcs = {"google_base_url": endpoint, "google_skip_signature": "true"}
    with pytest.raises(StorageError, match=f"cannot reach {endpoint}"):
        backfill(daily(prices(1), 1), manager("gs://lake/x", gcs), 1)


def test_an_endpoint_without_credentials_is_refused_before_any_request(s3_endpoint):
    options = {"aws_endpoint_url": s3_endpoint, "aws_region": "us-east-1"}
    with pytest.raises(StorageError, match="set an endpoint but no credentials"):
        backfill(daily(prices(1), 1), manager("s3://lake/x", options), 1)


def test_refused_credentials_name_the_bucket_and_never_the_secret(
    tmp_path, azurite_endpoint, monkeypatch, caplog, capsys
):
    from tests.servers import azure_options, moto_server, new_container, s3_options

    secrets = ["wrong-secret-" + "7" * 24, base64.b64encode(b"a wrong account key " * 3).decode()]
    monkeypatch.setenv("PIOT_TEST_SECRET", secrets[0])
    monkeypatch.setenv("PIOT_TEST_KEY", secrets[1])
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    # moto checks signatures once told to; Azurite always does.
    with moto_server(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="0") as checking:
        s3 = {**s3_options(checking), "aws_secret_access_key": dg.EnvVar("PIOT_TEST_SECRET")}
        azure = {**azure_options(azurite_endpoint), "account_key": dg.EnvVar("PIOT_TEST_KEY")}
        cases = [
            ("s3://lake/x", s3, r"bucket 'lake' was refused \(InvalidAccessKeyId\)"),
            (
                f"az://{new_container(azurite_endpoint)}/x",
                azure,
                r"container '.*' was refused \(AuthorizationFailure\)",
            ),
        ]
        for base_dir, options, names in cases:
            io_manager = manager(base_dir, options)
            with dg.instance_for_test() as instance:
                refused = f"access to the {names}(?s:.*)\nin asset prices"
                with pytest.raises(StorageError, match=refused):
                    backfill(daily(prices(1), 1), io_manager, 1, instance=instance)
                (run,) = instance.get_runs()
                seen += [repr(e) for e in instance.all_logs(run.run_id)]
            seen += [repr(io_manager), str(io_manager)]
    seen += [caplog.text, *capsys.readouterr()]
    assert not [text for text in seen for secret in secrets if secret in text]
