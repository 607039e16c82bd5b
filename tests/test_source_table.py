"""The source table and its refresh sensor: exactly the changed partitions, in-place updates
seen through a checksum the database computes, versions kept as Dagster observations; on
real SQLite, DuckDB, PostgreSQL and MariaDB, by URI and by ODBC."""

import datetime as dt
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._core.definitions.observe import observe

import piot_dagster
from piot_dagster import SourceTable, time_partitions
from tests.databases import (
    drop_mysql,
    drop_postgres,
    mysql_connect,
    odbc_string,
    write_mysql,
    write_postgres,
)

DAYS = time_partitions("daily", "2024-01-01", end="2024-05-01")
QUERY = "SELECT ts, symbol, price FROM trades"


def trades() -> pl.DataFrame:
    """Every three hours from 2024-01-01 to 2024-04-30, two symbols."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 4, 30, 21), "3h", eager=True
    )
    frame = pl.DataFrame({"ts": stamps}).join(pl.DataFrame({"symbol": ["A", "B"]}), how="cross")
    return frame.with_columns(price=pl.int_range(pl.len()).cast(pl.Float64) / 8)


class Table:
    """A trades table in one database, and the statements that change it. ``kind`` is
    the database and how it is reached: ``sqlite``, ``duckdb``, ``postgres`` and
    ``mysql`` by URI, ``odbc-postgres`` and ``odbc-mariadb`` the same servers' tables by
    ODBC connection string. ``url`` is the server's URI, for the four server kinds."""

    def __init__(self, kind: str, tmp_path: Path, url: str | None = None) -> None:
        self.kind = kind
        self.server = SERVERS.get(kind, kind)
        frame = trades()
        self.url, self.path = url, None
        if kind == "sqlite":
            path = tmp_path / "trades.db"
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL)")
            conn.executemany(
                "INSERT INTO trades VALUES (?, ?, ?)",
                frame.with_columns(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S")).rows(),
            )
            conn.commit()
            conn.close()
            self.uri, self.name, self.path = f"sqlite:///{path}", "trades", path
        elif kind == "duckdb":
            path = tmp_path / "trades.duckdb"
            conn = duckdb.connect(str(path))
            conn.register("frame", frame.to_arrow())
            conn.execute("CREATE TABLE trades AS SELECT * FROM frame")
            conn.close()
            self.uri, self.name, self.path = f"duckdb:///{path}", "trades", path
        elif self.server == "postgres":
            assert url
            self.name = write_postgres(url, frame, prefix="piot_source", index="ts")
            self.uri = odbc_string("postgres", postgres_url=url) if kind.startswith("odbc") else url
        else:
            assert url
            self.name = write_mysql(url, frame, prefix="piot_source", index="ts", types=MYSQL)
            self.uri = odbc_string("mariadb", mysql_url=url) if kind.startswith("odbc") else url

    @property
    def quoted(self) -> str:
        """The table's name as an identifier of its database's SQL."""
        return f"`{self.name}`" if self.server == "mysql" else f'"{self.name}"'

    def run(self, statement: str) -> None:
        """``statement`` (naming the table ``trades``), on the database's own driver."""
        statement = statement.replace("trades", self.quoted)
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            conn.execute(statement)
            conn.commit()
            conn.close()
        elif self.kind == "duckdb":
            conn = duckdb.connect(str(self.path))
            conn.execute(statement)
            conn.close()
        elif self.server == "postgres":
            import adbc_driver_postgresql.dbapi

            with adbc_driver_postgresql.dbapi.connect(self.url) as conn, conn.cursor() as cur:
                cur.execute(statement)
                conn.commit()
        else:
            conn = mysql_connect(self.url)  # autocommit
            try:
                with conn.cursor() as cursor:
                    cursor.execute(statement)
            finally:
                conn.close()

    def drop(self) -> None:
        if self.server == "postgres":
            drop_postgres(self.url, self.name)
        elif self.server == "mysql":
            drop_mysql(self.url, self.name)

    @property
    def settings(self) -> dict:
        """A SourceTable's settings for this table, daily."""
        query = f"SELECT ts, symbol, price FROM {self.quoted}"
        return {"connection": self.uri, "query": query, "date_column": "ts", "partitions_def": DAYS}


# The server behind each kind of table reached through one.
SERVERS = {
    "postgres": "postgres",
    "odbc-postgres": "postgres",
    "mysql": "mysql",
    "odbc-mariadb": "mysql",
}
MYSQL = {"ts": "DATETIME(6)", "symbol": "VARCHAR(16)", "price": "DOUBLE"}
KINDS = [
    "sqlite",
    "duckdb",
    "postgres",
    "mysql",
    "odbc-postgres",
    "odbc-mariadb",
]


def server_url(request: pytest.FixtureRequest, kind: str) -> str | None:
    """The URI of the server behind ``kind`` (its fixture skips, or fails in CI, when the
    server or the ODBC drivers are missing), or None for a file."""
    if kind.startswith("odbc"):
        request.getfixturevalue("odbc_drivers")
    server = SERVERS.get(kind)
    return request.getfixturevalue(f"{server}_url") if server else None


@pytest.fixture(params=KINDS)
def table(request: pytest.FixtureRequest, tmp_path: Path):
    made = Table(request.param, tmp_path, server_url(request, request.param))
    yield made
    made.drop()


def on_day(day: str) -> str:
    """The condition for rows of ``day``, in every database's SQL (SQLite's ISO text
    compares as the others' timestamps do)."""
    following = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    return f"ts >= '{day}' AND ts < '{following}'"


def refreshed(source: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(name="trades_daily", partitions_def=DAYS, deps=[source.asset])
    def trades_daily() -> None: ...

    return trades_daily


def tick(source: SourceTable, sensor: dg.SensorDefinition, instance: dg.DagsterInstance):
    """One tick as the daemon runs it: evaluated, and its observations recorded."""
    defs = dg.Definitions(assets=[source.asset, refreshed(source)], sensors=[sensor])
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def requested(result) -> list[object]:
    """Each run request as its partition key, or its (first, last) range."""
    return [
        r.partition_key
        or (
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests
    ]


def test_the_sensor_requests_exactly_the_days_appended_to_or_updated_in_place(table):
    source = SourceTable("trades_table", **table.settings)
    sensor = source.sensor(refreshed(source), name="trades_daily_source_changes")
    with dg.instance_for_test() as instance:
        first = tick(source, sensor, instance)
        assert first.run_requests == []
        assert len(source.recorded(instance)) == 121, "the first tick records every day"
        # An append on one day, and two months later an in-place update that keeps the
        # day's row count and latest timestamp.
        table.run("INSERT INTO trades VALUES ('2024-01-05 12:34:00', 'C', 1.5)")
        table.run(
            "UPDATE trades SET price = price + 1 WHERE symbol = 'A' AND ts = '2024-03-20 09:00:00'"
        )
        changed = tick(source, sensor, instance)
        quiet = tick(source, sensor, instance)

    assert requested(changed) == ["2024-01-05", "2024-03-20"], "nothing between them"
    assert quiet.run_requests == []
    assert quiet.skip_message.startswith("checked 121 partitions in ")
    assert quiet.skip_message.endswith(" s: no change")
    assert not changed.cursor, "the versions live in Dagster, not in the cursor"
    assert not quiet.cursor


def test_contiguous_changed_days_share_one_range_run_and_gaps_are_not_filled(table):
    source = SourceTable("trades_table", **table.settings)
    sensor = source.sensor(refreshed(source))
    with dg.instance_for_test() as instance:
        tick(source, sensor, instance)
        for day in ("2024-02-10", "2024-02-11", "2024-02-12", "2024-02-20"):
            table.run(f"INSERT INTO trades VALUES ('{day} 01:00:00', 'C', 2.0)")
        table.run(f"DELETE FROM trades WHERE {on_day('2024-04-01')}")
        result = tick(source, sensor, instance)

    assert requested(result) == [("2024-02-10", "2024-02-12"), "2024-02-20", "2024-04-01"]
    assert len({r.run_key for r in result.run_requests}) == 3


def test_observing_the_source_asset_records_every_partitions_version(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings)
    with dg.instance_for_test() as instance:
        assert observe([source.asset], instance=instance).success
        assert source.recorded(instance) == source.versions()
    assert len(source.versions()) == 121


def test_checksum_columns_choose_what_an_in_place_update_must_touch_to_be_seen(table):
    source = SourceTable("trades_table", **table.settings, checksum_columns=["ts", "symbol"])
    before = source.versions()
    table.run(f"UPDATE trades SET price = -1 WHERE {on_day('2024-01-03')}")
    assert source.versions() == before, "price is not a checksum column"
    table.run(f"UPDATE trades SET symbol = 'Z' WHERE {on_day('2024-01-03')}")
    assert {k for k in before if source.versions()[k] != before[k]} == {"2024-01-03"}


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"date_column": ""}, TypeError, "date_column must name a column"),
        (
            {"partitions_def": dg.HourlyPartitionsDefinition("2024-01-01-00:00")},
            ValueError,
            "days or longer",
        ),
        ({"query": "DROP TABLE trades"}, ValueError, "exactly one SELECT"),
    ],
)
def test_a_source_table_refuses_bad_settings_naming_itself(tmp_path, kwargs, error, names):
    settings = {
        "connection": f"sqlite:///{tmp_path / 'none.db'}",
        "query": QUERY,
        "date_column": "ts",
        "partitions_def": DAYS,
        **kwargs,
    }
    # The name comes first in the message or in a note after it: either order matches.
    with pytest.raises(error, match=f"(?s)(?=.*SourceTable 'trades_table').*{names}"):
        SourceTable("trades_table", **settings)


def test_checksum_columns_the_query_lacks_fail_the_tick_naming_them(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings, checksum_columns=["price", "volume"])
    with pytest.raises(
        ValueError, match=r"not \['volume'\]; its columns are \['ts', 'symbol', 'price'\]"
    ):
        source.versions()


def test_an_update_that_only_changes_case_or_a_trailing_space_is_seen(table):
    """MySQL's default collation finds 'a' = 'A' and 'B ' = 'B': the checksum must not."""
    source = SourceTable("trades_table", **table.settings)
    before = source.versions()
    table.run("UPDATE trades SET symbol = 'a' WHERE symbol = 'A' AND ts = '2024-01-10 03:00:00'")
    table.run("UPDATE trades SET symbol = 'B ' WHERE symbol = 'B' AND ts = '2024-02-02 15:00:00'")
    after = source.versions()
    assert {k for k in before if after[k] != before[k]} == {"2024-01-10", "2024-02-02"}


def test_days_fold_into_monthly_partitions(table):
    months = time_partitions("monthly", "2024-01-01", end="2024-05-01")
    source = SourceTable("trades_table", **{**table.settings, "partitions_def": months})
    assert sorted(source.versions()) == ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    before = source.versions()
    table.run("INSERT INTO trades VALUES ('2024-02-29 23:00:00', 'C', 1.0)")
    assert {k for k, v in source.versions().items() if v != before[k]} == {"2024-02-01"}


def test_a_tick_whose_source_cannot_be_read_is_skipped_saying_why(tmp_path):
    settings = {**Table("sqlite", tmp_path, None).settings}
    source = SourceTable("trades_table", **{**settings, "connection": "sqlite:///no/such.db"})
    with dg.instance_for_test() as instance:
        result = tick(source, source.sensor(refreshed(source)), instance)
    assert result.run_requests == []
    assert "the source could not be read" in result.skip_message


def test_source_change_sensor_is_the_one_call_form(tmp_path):
    table = Table("sqlite", tmp_path, None)
    asset = refreshed(SourceTable("trades_table", **table.settings))
    settings = {k: v for k, v in table.settings.items() if k != "partitions_def"}
    sensor = piot_dagster.source_change_sensor(asset, **settings)
    source = SourceTable("trades_daily_source", **table.settings)
    with dg.instance_for_test() as instance:
        tick(source, sensor, instance)
        table.run("INSERT INTO trades VALUES ('2024-04-02 01:00:00', 'C', 1.0)")
        assert requested(tick(source, sensor, instance)) == ["2024-04-02"]
    assert sensor.name == "trades_daily_source_changes"


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param("postgresql://reader:s3cret-pw@127.0.0.1:1/markets", id="postgresql"),
        pytest.param("mysql://reader:s3cret-pw@127.0.0.1:1/markets", id="mysql"),
        pytest.param(
            "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=markets;Uid=reader;"
            "Pwd=s3cret-pw;",
            id="odbc",
        ),
    ],
)
def test_a_password_in_the_connection_shows_nowhere(connection, request):
    if connection.startswith("Driver="):
        request.getfixturevalue("odbc_drivers")
    table = SourceTable(
        "trades_table",
        connection=connection,
        query=QUERY,
        date_column="ts",
        partitions_def=DAYS,
    )
    with pytest.raises(piot_dagster.DatabaseError) as error:
        table.versions()
    shown = [repr(table), table.asset.description or "", str(error.value)]
    assert not [text for text in shown if "s3cret-pw" in text]


# Reached through ODBC, and MySQL's own quoting ------------------------------------------


def test_a_source_table_over_odbc_sqlite_is_defined_but_its_first_use_says_to_use_sqlite_uri(
    tmp_path, odbc_drivers
):
    path = tmp_path / "trades.db"
    # Defined before the file exists, as a code location loads before its database.
    source = SourceTable(
        "trades_table",
        connection=odbc_string("sqlite", path=str(path)),
        query=QUERY,
        date_column="ts",
        partitions_def=DAYS,
    )
    Table("sqlite", tmp_path)
    assert path.exists()
    with pytest.raises(
        ValueError,
        match=r"SQLite has no hash function .* use connection='sqlite:///<path>' here\n"
        r"in SourceTable 'trades_table'",
    ):
        source.versions()


def test_a_source_table_over_an_odbc_server_not_yet_up_is_defined_and_its_tick_skipped(
    odbc_drivers,
):
    connection = "Driver={MariaDB Unicode};Server=127.0.0.1;Port=1;Database=test;Uid=root;"
    source = SourceTable(
        "trades_table", connection=connection, query=QUERY, date_column="ts", partitions_def=DAYS
    )
    sensor = source.sensor(refreshed(source))
    assert source.asset.description == f"The rows of `{QUERY}` on {connection}."
    with dg.instance_for_test() as instance:
        result = tick(source, sensor, instance)
    assert result.run_requests == []
    assert "the source could not be read: could not connect (odbc at 127.0.0.1:1)" in (
        result.skip_message or ""
    )


def test_a_backtick_quoted_mysql_query_is_fingerprinted_alike_by_uri_and_by_odbc(
    mysql_url, odbc_drivers, tmp_path
):
    table = Table("mysql", tmp_path, mysql_url)
    try:
        query = f"SELECT `ts`, `symbol`, `price` FROM `{table.name}`"
        connections = [
            mysql_url,
            "mariadb://" + mysql_url.split("://", 1)[1],
            odbc_string("mariadb", mysql_url=mysql_url),
        ]
        sources = [
            SourceTable(
                "trades_table", connection=c, query=query, date_column="ts", partitions_def=DAYS
            )
            for c in connections
        ]
        before = [source.versions() for source in sources]
        table.run("UPDATE trades SET price = -price WHERE symbol = 'B' AND ts = '2024-02-14 06:00'")
        after = [source.versions() for source in sources]
    finally:
        table.drop()
    assert len(before[0]) == 121
    assert before == [before[0]] * 3, "by URI and by ODBC alike"
    assert after == [after[0]] * 3
    assert {k for k in before[0] if after[0][k] != before[0][k]} == {"2024-02-14"}
