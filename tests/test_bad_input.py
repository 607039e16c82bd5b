"""The README's bad-input table: every public function and config field meets bad input
with a clear error naming what to fix (cases not already covered where they belong)."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

import piot_dagster
from piot_dagster import RayParquetIOManager, RayResource, time_partitions
from piot_dagster.errors import described


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    import sqlite3

    path = tmp_path_factory.mktemp("bad") / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (d DATE, v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [("2024-01-01", 1), ("2024-01-02", 2)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("query", "error", "names"),
    [
        (42, ValueError, "query must be a non-empty SQL string"),
        ("   ", ValueError, "query must be a non-empty SQL string"),
        ("SELECT 1; SELECT 2", ValueError, "exactly one SELECT"),
        ("DROP TABLE t", ValueError, "exactly one SELECT"),
    ],
)
def test_scan_db_refuses_a_bad_query(sqlite_uri, query, error, names):
    with pytest.raises(error, match=names):
        piot_dagster.scan_db(query, connection=sqlite_uri)


def test_scan_db_refuses_a_schema_that_is_not_a_mapping(sqlite_uri):
    with pytest.raises(TypeError, match="schema must be a mapping"):
        piot_dagster.scan_db("SELECT d FROM t", connection=sqlite_uri, schema=[("d", pl.Date)])


@pytest.mark.parametrize(
    ("uri", "names"),
    [
        ("postgresql://u:p@host:notaport/db", "port"),
        ("duckdb://", "file path"),
        ("sqlite:///no/such/file.db", "no/such/file.db"),
    ],
)
def test_scan_db_refuses_a_malformed_or_missing_connection(uri, names):
    with pytest.raises((ValueError, piot_dagster.DatabaseError), match=names):
        piot_dagster.scan_db("SELECT 1", connection=uri)


@pytest.mark.parametrize(
    ("args", "kwargs", "names"),
    [
        (("fortnightly", "2024-01-01"), {}, "unit must be one of"),
        (("daily", "01/02/2024"), {}, "'%Y-%m-%d'"),
        (("daily", "2024-01-01"), {"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        (("monthly", "2024-01-01"), {"end": "2023-01-01"}, "2023-01-01"),
    ],
)
def test_time_partitions_refuse_bad_arguments(args, kwargs, names):
    with pytest.raises(ValueError, match=names):
        time_partitions(*args, **kwargs)


def test_node_affinity_written_as_a_mapping_becomes_rays_strategy():
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from piot_dagster.engine.ray_tasks import check_remote_options

    node = "ab" * 28
    options = check_remote_options({"scheduling_strategy": {"node_id": node, "soft": True}})
    strategy = options["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert (strategy.node_id, strategy.soft) == (node, True)


def test_ray_resource_fields_are_typed():
    with pytest.raises(Exception, match="num_cpus"):
        RayResource(num_cpus="many")  # type: ignore[arg-type]


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(
    ("metadata", "error", "names"),
    [
        ({"date_column": "d", "max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"date_column": "d", "remote_options": "fast"}, TypeError, "remote_options"),
        ({"date_column": "d", "remote_options": {"num_cpu": 1}}, ValueError, "remote_options"),
        (
            {"date_column": "d", "remote_options": {"scheduling_strategy": {"node": "x"}}},
            ValueError,
            "takes 'node_id'",
        ),
        ({"date_column": "v"}, ValueError, "date_column 'v' is Int64"),
        ({}, ValueError, "set date_column"),
    ],
)
def test_the_io_manager_refuses_bad_settings_naming_the_asset(tmp_path, metadata, error, names):
    @dg.asset(partitions_def=time_partitions("daily", "2024-01-01"), metadata=metadata)
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"d": [dt.date(2024, 1, 1)], "v": [1]})

    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))
    with pytest.raises(error, match=names) as info:
        dg.materialize([numbers], partition_key="2024-01-01", resources={"io_manager": manager})
    assert "asset numbers" in described(info.value)


@pytest.mark.usefixtures("ray_cluster")
def test_an_empty_partition_is_an_empty_file_with_the_schema(tmp_path):
    @dg.asset(partitions_def=time_partitions("daily", "2024-01-01"), metadata={"date_column": "d"})
    def sparse() -> pl.DataFrame:
        return pl.DataFrame({"d": [dt.date(2024, 1, 1)], "v": [1]})

    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))
    result = dg.materialize([sparse], partition_key="2024-01-05", resources={"io_manager": manager})
    assert result.success
    stored = pl.read_parquet(tmp_path / "sparse" / "2024-01-05.parquet")
    assert stored.height == 0
    assert stored.schema == pl.Schema({"d": pl.Date, "v": pl.Int64})
    (event,) = result.asset_materializations_for_node("sparse")
    assert event.metadata["dagster/partition_row_count"].value == 0


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(
    ("dtype", "key", "outcome"),
    [
        (pl.Date, "1066", "empty file"),
        (pl.Datetime("us"), "1200", "empty file"),
        (pl.Datetime("ns"), "1500", "clear error"),  # nanoseconds reach back to 1677 only
    ],
)
def test_partitions_far_in_the_past(tmp_path, dtype, key, outcome):
    """Far-future keys cannot be asked for: Dagster offers partitions up to now only."""
    frame = pl.DataFrame({"d": pl.Series([dt.datetime(2024, 1, 1)]).cast(dtype)})
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path), date_column="d")
    context = dg.build_output_context(
        asset_key=dg.AssetKey("history"),
        asset_partitions_def=time_partitions("yearly", "1000"),
        asset_partition_key_range=dg.PartitionKeyRange(key, key),
        resources={"ray": RayResource()},
    )
    if outcome == "empty file":
        manager.handle_output(context, frame)
        assert pl.read_parquet(tmp_path / "history" / f"{key}.parquet").height == 0
    else:
        with pytest.raises(ValueError, match=r"asset history: partition 1500 .* lies outside"):
            manager.handle_output(context, frame)


def test_a_run_cannot_ask_for_a_partition_after_now(tmp_path):
    @dg.asset(partitions_def=time_partitions("daily", "2024-01-01", end="2400-01-01"))
    def later() -> pl.DataFrame:
        return pl.DataFrame({"d": [dt.date(2024, 1, 1)]})

    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path), date_column="d")
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2300-01-01"):
        dg.materialize([later], partition_key="2300-01-01", resources={"io_manager": manager})
    assert not (tmp_path / "later").exists()


@dg.asset(partitions_def=time_partitions("daily", "2024-01-01"))
def daily_asset() -> None: ...


@dg.asset
def unpartitioned_asset() -> None: ...


@pytest.mark.parametrize(
    ("asset", "kwargs", "error", "names"),
    [
        ("daily_asset", {}, TypeError, "asset must be an asset definition"),
        (
            unpartitioned_asset,
            {},
            TypeError,
            "(?s)partitions must be.*\nin source_change_sensor for asset unpartitioned_asset",
        ),
        (daily_asset, {"connection": "oracle://h/db"}, ValueError, "unsupported URI scheme"),
        (daily_asset, {"query": "DROP TABLE t"}, ValueError, "exactly one SELECT"),
        (daily_asset, {"date_column": 3}, TypeError, "date_column must name a column"),
        (daily_asset, {"date_column": ""}, TypeError, "date_column must name a column"),
    ],
)
def test_source_change_sensor_refuses_bad_arguments(sqlite_uri, asset, kwargs, error, names):
    arguments = {"connection": sqlite_uri, "query": "SELECT d FROM t", "date_column": "d"}
    with pytest.raises(error, match=names):
        piot_dagster.source_change_sensor(asset, **{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("partitions_def", "error", "names"),
    [
        (None, TypeError, "not NoneType"),
        (dg.StaticPartitionsDefinition(["a"]), TypeError, "not StaticPartitionsDefinition"),
        (
            dg.WeeklyPartitionsDefinition("2024-01-07"),  # Dagster's weeks start on Sunday
            ValueError,
            "not hourly, daily, weekly .from Monday.",
        ),
    ],
)
def test_partition_unit_refuses_partitions_that_are_not_calendar_periods(
    partitions_def, error, names
):
    with pytest.raises(error, match=names):
        piot_dagster.partition_unit(partitions_def)


@pytest.mark.parametrize(
    "field",
    [
        {"base_dir": 3},
        {"max_concurrency": "many"},
        {"remote_options": "x"},
        {"date_column": 5},
        {"storage_options": {"aws_region": 1}},
        {"storage_options": "aws_region=eu-west-1"},
        {"infeasible_timeout_s": "soon"},
    ],
)
def test_io_manager_fields_are_typed(field):
    with pytest.raises(Exception, match=next(iter(field))):
        RayParquetIOManager(ray=RayResource(), **field)
