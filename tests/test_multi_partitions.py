"""Multi-partitions: a time dimension times a static or dynamic one (day x symbol), each
cell one Ray task, stored in Hive's layout by RayParquetIOManager and as a partition of
one Delta table by RayDeltaIOManager, and read back alike from both; on a real local Ray,
scan_db over SQLite, real Parquet files and real Delta tables.
(No `from __future__ import annotations`: Dagster reads the downstream annotations.)"""

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayParquetIOManager, RayResource, time_partitions
from piot_dagster.storage.delta import PARTITION_COLUMN
from tests.conftest import IOManagerClass
from tests.databases import drop_postgres, write_postgres

pytestmark = pytest.mark.usefixtures("ray_cluster")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SYMBOLS = ["SYM01", "SYM02", "SYM03"]
DAYS = time_partitions("daily", "2024-01-01", end="2024-01-08")
DAY_BY_SYMBOL = dg.MultiPartitionsDefinition(
    {"date": DAYS, "symbol": dg.StaticPartitionsDefinition(SYMBOLS)}
)
QUERY = "SELECT ts, symbol, price FROM prices"


@pytest.fixture(scope="module")
def prices_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Hourly prices of three symbols through the first week of 2024, in SQLite."""
    path = tmp_path_factory.mktemp("multi") / "prices.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE prices (ts TIMESTAMP, symbol TEXT, price REAL)")
    rows = [
        (str(dt.datetime(2024, 1, 1) + dt.timedelta(hours=h)), symbol, h + n / 10)
        for h in range(7 * 24)
        for n, symbol in enumerate(SYMBOLS)
    ]
    conn.executemany("INSERT INTO prices VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def prices_source(request: pytest.FixtureRequest, prices_uri: str) -> Iterator[tuple[str, str]]:
    """(connection, query) over the same prices in SQLite or in PostgreSQL."""
    if request.param == "sqlite":
        yield prices_uri, QUERY
        return
    url = request.getfixturevalue("postgres_url")
    table = write_postgres(url, source(prices_uri).collect(), prefix="piot_cells", index="ts")
    yield url, f'SELECT ts, symbol, price FROM "{table}"'
    drop_postgres(url, table)


def source(uri: str, query: str = QUERY) -> pl.LazyFrame:
    return piot_dagster.scan_db(query, connection=uri)


def cell(uri: str, day: str, symbol: str, query: str = QUERY) -> pl.DataFrame:
    start = dt.datetime.fromisoformat(day)
    return (
        source(uri, query)
        .filter(
            pl.col("ts").is_between(start, start + dt.timedelta(days=1), closed="left"),
            pl.col("symbol") == symbol,
        )
        .collect()
    )


def mapped(uri: str, partitions_def: dg.PartitionsDefinition = DAY_BY_SYMBOL, query: str = QUERY):
    @dg.asset(
        name="prices",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "partition_columns": {"symbol": "symbol"}},
    )
    def prices() -> pl.LazyFrame:
        return source(uri, query)

    return prices


def resources(tmp_path: Path, io_manager_class: IOManagerClass) -> dict:
    return {
        "io_manager": io_manager_class(ray=RayResource(), base_dir=str(tmp_path)),
        "memory": dg.InMemoryIOManager(),
    }


def backfill(
    asset, tmp_path: Path, io_manager_class: IOManagerClass, first: str, last: str, **kw
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        resources=resources(tmp_path, io_manager_class),
        tags={RANGE_START: first, RANGE_END: last},
        **kw,
    )


def stored(
    tmp_path: Path, io_manager_class: IOManagerClass, asset: str, day: str, symbol: str
) -> pl.DataFrame:
    """The cell (``day``, ``symbol``) of ``asset`` as another reader sees it: its Parquet
    file in Hive's layout, or its rows of the Delta table without the partition column."""
    if io_manager_class is RayDeltaIOManager:
        key = str(dg.MultiPartitionKey({"date": day, "symbol": symbol}))
        table = pl.read_delta(str(tmp_path / asset))
        return table.filter(pl.col(PARTITION_COLUMN) == key).drop(PARTITION_COLUMN)
    return pl.read_parquet(tmp_path / asset / f"symbol={symbol}" / f"{day}.parquet")


# Writing --------------------------------------------------------------------------------


CELLS = [f"2024-01-0{d}|{s}" for d in (2, 3, 4) for s in ("SYM01", "SYM02")]


def backfilled_cells(
    prices_source: tuple[str, str], tmp_path: Path, io_manager_class: IOManagerClass
) -> tuple[list[dg.AssetMaterialization], pl.DataFrame]:
    """Backfill ``CELLS`` as one run and check what every format owes: a materialization
    per cell, each cell stored as the source's rows, and the cell's day and symbol in the
    database's ``WHERE``. Returns the events and every cell's rows, sorted."""
    uri, query = prices_source
    result = backfill(mapped(uri, query=query), tmp_path, io_manager_class, CELLS[0], CELLS[-1])

    assert result.success
    events = result.asset_materializations_for_node("prices")
    assert sorted(e.partition for e in events) == CELLS
    for event in events:
        day, symbol = str(event.partition).split("|")
        stored_cell = stored(tmp_path, io_manager_class, "prices", day, symbol)
        assert_frame_equal(stored_cell, cell(uri, day, symbol, query))
        sql = event.metadata["sql"].value
        assert f"\"symbol\" = '{symbol}'" in sql
        assert f"'{day}" in sql
    expected = pl.concat([cell(uri, *key.split("|"), query) for key in CELLS])
    return events, expected.sort("ts", "symbol")


def test_a_two_dimensional_backfill_is_one_run_of_one_task_per_cell_in_hives_layout(
    prices_source, tmp_path
):
    events, expected = backfilled_cells(prices_source, tmp_path, RayParquetIOManager)

    for event in events:
        day, symbol = str(event.partition).split("|")
        path = tmp_path / "prices" / f"symbol={symbol}" / f"{day}.parquet"
        assert event.metadata["path"].value == str(path)
    # One table to Hive readers: Polars and DuckDB.
    hive = pl.scan_parquet(tmp_path / "prices", hive_partitioning=True).collect()
    assert_frame_equal(hive.sort("ts", "symbol"), expected)
    glob = str(tmp_path / "prices" / "*" / "*.parquet")
    by_duckdb = duckdb.sql(
        f"SELECT ts, symbol, price FROM read_parquet('{glob}', hive_partitioning = true)"
    ).pl()
    assert_frame_equal(by_duckdb.sort("ts", "symbol"), expected)


def test_a_two_dimensional_backfill_is_one_commit_of_one_file_per_cell_in_a_delta_table(
    prices_source, tmp_path
):
    events, expected = backfilled_cells(prices_source, tmp_path, RayDeltaIOManager)

    table = DeltaTable(str(tmp_path / "prices"))
    assert table.version() == 0
    assert sorted(p[PARTITION_COLUMN] for p in table.partitions()) == CELLS
    assert len(table.file_uris()) == len(CELLS)
    for event in events:
        assert event.metadata["delta_table"].value == str(tmp_path / "prices")
        assert event.metadata["delta_version"].value == 0
    # One table to Delta readers: Polars and delta-rs's own.
    by_polars = pl.read_delta(str(tmp_path / "prices")).drop(PARTITION_COLUMN)
    assert_frame_equal(by_polars.sort("ts", "symbol"), expected)
    by_delta_rs = pl.DataFrame(table.to_pyarrow_table()).drop(PARTITION_COLUMN)
    assert_frame_equal(by_delta_rs.sort("ts", "symbol"), expected)


def test_an_unmapped_dimension_takes_the_frame_as_the_runs_one_key(
    prices_uri, tmp_path, io_manager_class
):
    @dg.asset(
        partitions_def=DAY_BY_SYMBOL,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def quotes(context: dg.AssetExecutionContext) -> pl.LazyFrame:
        # As dagster-polars users write it: the symbol from the partition key.
        symbols = {k.keys_by_dimension["symbol"] for k in context.partition_keys}
        return source(prices_uri).filter(pl.col("symbol").is_in(sorted(symbols)))

    result = backfill(quotes, tmp_path, io_manager_class, "2024-01-01|SYM02", "2024-01-03|SYM02")

    assert result.success
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        got = stored(tmp_path, io_manager_class, "quotes", day, "SYM02")
        assert_frame_equal(got, cell(prices_uri, day, "SYM02"))
    with pytest.raises(ValueError, match=r"asset quotes: the run covers 2 keys of dimension"):
        backfill(quotes, tmp_path, io_manager_class, "2024-01-01|SYM01", "2024-01-01|SYM02")


def test_a_dynamic_second_dimension_works_as_a_static_one(prices_uri, tmp_path, io_manager_class):
    symbols = dg.DynamicPartitionsDefinition(name="symbols")
    partitions_def = dg.MultiPartitionsDefinition({"date": DAYS, "symbol": symbols})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbols", ["SYM01", "SYM03"])
        result = backfill(
            mapped(prices_uri, partitions_def),
            tmp_path,
            io_manager_class,
            "2024-01-05|SYM01",
            "2024-01-06|SYM03",
            instance=instance,
        )
    assert result.success
    for day in ("2024-01-05", "2024-01-06"):
        for symbol in ("SYM01", "SYM03"):
            got = stored(tmp_path, io_manager_class, "prices", day, symbol)
            assert_frame_equal(got, cell(prices_uri, day, symbol))


# Reading --------------------------------------------------------------------------------


@pytest.fixture
def stored_week(
    prices_uri: str, tmp_path: Path, io_manager_class: IOManagerClass
) -> dg.AssetsDefinition:
    prices = mapped(prices_uri)
    assert backfill(
        prices, tmp_path, io_manager_class, "2024-01-01|SYM01", "2024-01-07|SYM03"
    ).success
    return prices


def receive(
    upstream,
    annotation,
    tmp_path: Path,
    io_manager_class: IOManagerClass,
    *,
    partitions_def=None,
    key=None,
    asset_in=None,
):
    """What an asset (partitioned by ``partitions_def``, run for ``key``) receives."""

    @dg.asset(
        ins={"prices": dg.AssetIn(upstream.key, **(asset_in or {}))},
        partitions_def=partitions_def,
        io_manager_key="memory",
    )
    def downstream(prices: annotation) -> object:  # type: ignore[valid-type]
        return prices

    result = dg.materialize(
        [upstream, downstream],
        selection=[downstream],
        resources=resources(tmp_path, io_manager_class),
        partition_key=key,
    )
    return result.output_for_node("downstream")


def test_a_non_partitioned_downstream_reads_every_cell_as_every_annotation(
    prices_uri, stored_week, tmp_path, io_manager_class
):
    everything = source(prices_uri).collect().sort("ts", "symbol")

    eager = receive(stored_week, pl.DataFrame, tmp_path, io_manager_class)
    lazy = receive(stored_week, pl.LazyFrame, tmp_path, io_manager_class)
    by_cell = receive(stored_week, dict[str, pl.DataFrame], tmp_path, io_manager_class)

    assert_frame_equal(eager.sort("ts", "symbol"), everything)
    assert_frame_equal(lazy.collect().sort("ts", "symbol"), everything)
    assert len(by_cell) == 21
    assert_frame_equal(by_cell["2024-01-05|SYM03"], cell(prices_uri, "2024-01-05", "SYM03"))


def test_a_daily_downstream_of_a_day_by_symbol_upstream_reads_every_symbol_of_its_day(
    prices_uri, stored_week, tmp_path, io_manager_class
):
    # Dagster maps a day to all of that day's cells.
    got = receive(
        stored_week, pl.DataFrame, tmp_path, io_manager_class, partitions_def=DAYS, key="2024-01-03"
    )
    expected = pl.concat(cell(prices_uri, "2024-01-03", s) for s in SYMBOLS)
    assert_frame_equal(got.sort("ts", "symbol"), expected.sort("ts", "symbol"))


def test_a_downstream_by_symbol_reads_every_day_of_its_symbol(
    prices_uri, stored_week, tmp_path, io_manager_class
):
    by_symbol = dg.StaticPartitionsDefinition(SYMBOLS)
    mapping = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="symbol")
    got = receive(
        stored_week,
        pl.DataFrame,
        tmp_path,
        io_manager_class,
        partitions_def=by_symbol,
        key="SYM02",
        asset_in={"partition_mapping": mapping},
    )
    expected = source(prices_uri).filter(pl.col("symbol") == "SYM02").collect()
    assert_frame_equal(got, expected)


def test_an_unmapped_cells_symbol_comes_back_as_a_column_named_after_its_dimension(
    prices_uri, tmp_path, io_manager_class
):
    @dg.asset(partitions_def=DAY_BY_SYMBOL, metadata={"date_column": "ts"})
    def bare(context: dg.AssetExecutionContext) -> pl.LazyFrame:
        symbol = context.partition_key.keys_by_dimension["symbol"]
        return source(prices_uri).filter(pl.col("symbol") == symbol).drop("symbol")

    key = dg.MultiPartitionKey({"date": "2024-01-02", "symbol": "SYM03"})
    assert dg.materialize(
        [bare], partition_key=key, resources=resources(tmp_path, io_manager_class)
    ).success

    got = receive(
        bare,
        pl.DataFrame,
        tmp_path,
        io_manager_class,
        asset_in={"metadata": {"allow_missing_partitions": True}},
    )
    assert_frame_equal(got, cell(prices_uri, "2024-01-02", "SYM03"), check_column_order=False)


# Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "names"),
    [
        ({"symbol": "ticker"}, "maps dimension 'symbol' to column 'ticker', which its frame lacks"),
        ({"symbol": "price"}, "the key 'SYM01' of dimension 'symbol' is not a value of column"),
        ({"symbol": 1}, "partition_columns must map dimension names to column names"),
    ],
)
def test_a_bad_column_mapping_names_the_asset_and_what_to_fix(
    prices_uri, tmp_path, io_manager_class, columns, names
):
    @dg.asset(
        partitions_def=DAY_BY_SYMBOL,
        metadata={"date_column": "ts", "partition_columns": columns},
    )
    def prices() -> pl.LazyFrame:
        return source(prices_uri)

    key = dg.MultiPartitionKey({"date": "2024-01-02", "symbol": "SYM01"})
    with pytest.raises((ValueError, TypeError), match=f"asset prices: .*{names}"):
        dg.materialize([prices], partition_key=key, resources=resources(tmp_path, io_manager_class))


def test_a_static_key_that_cannot_name_a_folder_is_refused(prices_uri, tmp_path):
    odd = dg.MultiPartitionsDefinition(
        {"date": DAYS, "symbol": dg.StaticPartitionsDefinition(["A/B"])}
    )
    key = dg.MultiPartitionKey({"date": "2024-01-02", "symbol": "A/B"})
    refused = r"'symbol=A/B' cannot name a file(?s:.*)\nin asset prices"
    with pytest.raises(ValueError, match=refused):
        dg.materialize(
            [mapped(prices_uri, odd)],
            partition_key=key,
            resources=resources(tmp_path, RayParquetIOManager),
        )


def test_a_static_key_that_cannot_be_a_delta_partition_value_is_refused(prices_uri, tmp_path):
    """Any key names a Delta partition once escaped ('A/B' too), but not one whose escaped
    folder name is longer than a file name may be."""
    long = "é" * 50  # 300 bytes once escaped
    odd = dg.MultiPartitionsDefinition(
        {"date": DAYS, "symbol": dg.StaticPartitionsDefinition(["A/B", long])}
    )
    refused = r"the partition key '2024-01-02\|é+' (?s:.*)\nin asset prices"
    with pytest.raises(ValueError, match=refused):
        dg.materialize(
            [mapped(prices_uri, odd, query=f"SELECT ts, '{long}' AS symbol, price FROM prices")],
            partition_key=dg.MultiPartitionKey({"date": "2024-01-02", "symbol": long}),
            resources=resources(tmp_path, RayDeltaIOManager),
        )
    assert not (tmp_path / "prices").exists(), "refused before any task wrote"


def test_multi_partitions_without_a_time_dimension_are_refused(
    prices_uri, tmp_path, io_manager_class
):
    untimed = dg.MultiPartitionsDefinition(
        {"a": dg.StaticPartitionsDefinition(["x"]), "b": dg.StaticPartitionsDefinition(["y"])}
    )
    key = dg.MultiPartitionKey({"a": "x", "b": "y"})
    refused = r"multi-partitions need a time dimension(?s:.*)\nin asset prices"
    with pytest.raises(TypeError, match=refused):
        dg.materialize(
            [mapped(prices_uri, untimed)],
            partition_key=key,
            resources=resources(tmp_path, io_manager_class),
        )
