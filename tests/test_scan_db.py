"""scan_db on real SQLite and DuckDB files, the PostgreSQL server on 127.0.0.1:5432 and
the MariaDB server on 127.0.0.1:3306, natively and through unixODBC's drivers."""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import dagster as dg
import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import piot_dagster
from tests.databases import (
    SYMBOLS,
    drop_mysql,
    drop_postgres,
    odbc_string,
    trades_frame,
    write_duckdb,
    write_mysql,
    write_postgres,
    write_sqlite,
)
from tests.strategies import examples

D = pl.col("date")
FRAME = trades_frame()


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "trades.db"
    write_sqlite(path, FRAME)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def duckdb_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("duckdb") / "trades.duckdb"
    write_duckdb(path, FRAME)
    return f"duckdb:///{path}"


@pytest.fixture(scope="module")
def postgres_table(postgres_url: str) -> Iterator[str]:
    table = write_postgres(postgres_url, FRAME)
    yield table
    drop_postgres(postgres_url, table)


@pytest.fixture(scope="module")
def mysql_table(mysql_url: str) -> Iterator[str]:
    table = write_mysql(mysql_url, FRAME)
    yield table
    drop_mysql(mysql_url, table)


@dataclass(frozen=True)
class Source:
    """The same trades in one database, reached one way."""

    kind: str
    uri: str
    table: str = "trades"

    @property
    def query(self) -> str:
        return f"SELECT * FROM {self.table}"

    @property
    def mysql(self) -> bool:
        return self.kind in ("mysql", "odbc-mariadb")

    @property
    def sqlite(self) -> bool:
        return self.kind.endswith("sqlite")

    @property
    def schema(self) -> dict[str, pl.DataType] | None:
        # MySQL's BOOLEAN is TINYINT(1), an integer: the column is declared Boolean here.
        return {"ok": pl.Boolean} if self.mysql else None

    def scan(self, query: str | None = None) -> pl.LazyFrame:
        return piot_dagster.scan_db(query or self.query, connection=self.uri, schema=self.schema)

    def stored(self) -> pl.DataFrame:
        """FRAME as this database keeps it: SQLite has no zones, and neither SQLite nor
        MySQL keeps NaN; ODBC's MariaDB driver knows no zones (UTC wall clock)."""
        frame = FRAME.drop("tstz") if self.sqlite else FRAME
        if self.sqlite or self.mysql:
            frame = frame.with_columns(pl.col("price").fill_nan(None))
        if self.kind == "odbc-mariadb":
            frame = frame.with_columns(pl.col("tstz").dt.replace_time_zone(None))
        return frame


SOURCES = ["sqlite", "duckdb", "postgres", "mysql", "odbc-postgres", "odbc-mariadb", "odbc-sqlite"]


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest) -> Source:
    """The same trades in each database, natively and through ODBC."""
    kind = request.param
    if kind.startswith("odbc"):
        request.getfixturevalue("odbc_drivers")
    if kind in ("postgres", "odbc-postgres"):
        url = request.getfixturevalue("postgres_url")
        table = request.getfixturevalue("postgres_table")
        uri = url if kind == "postgres" else odbc_string("postgres", postgres_url=url)
        return Source(kind, uri, table)
    if kind in ("mysql", "odbc-mariadb"):
        url = request.getfixturevalue("mysql_url")
        table = request.getfixturevalue("mysql_table")
        uri = url if kind == "mysql" else odbc_string("mariadb", mysql_url=url)
        return Source(kind, uri, table)
    uri = request.getfixturevalue("sqlite_uri" if kind.endswith("sqlite") else "duckdb_uri")
    if kind == "odbc-sqlite":
        uri = odbc_string("sqlite", path=uri.removeprefix("sqlite:///"))
    return Source(kind, uri)


def pushed_sql(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The statements scan_db sent: it logs each to `piot_dagster.sql` at DEBUG."""
    return [r.getMessage() for r in caplog.records if r.name == "piot_dagster.sql"]


# 1. The call --------------------------------------------------------------------------


def test_the_seed_call_works_as_written(sqlite_uri):
    lf = piot_dagster.scan_db("SELECT date, symbol, price FROM trades", connection=sqlite_uri)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect_schema().names() == ["date", "symbol", "price"]
    assert lf.collect().height == FRAME.height


def test_postgres_scheme_alias_works(postgres_url, postgres_table):
    alias = postgres_url.replace("postgresql://", "postgres://", 1)
    lf = piot_dagster.scan_db(f"SELECT id FROM {postgres_table}", connection=alias)
    assert lf.collect().height == FRAME.height


# 2. The schema ------------------------------------------------------------------------


def test_schema_comes_from_declared_types_in_every_database(source):
    assert source.scan().collect_schema() == source.stored().schema


def test_results_are_cast_to_the_declared_schema(source):
    assert_frame_equal(source.scan().collect().sort("id"), source.stored())


def test_postgres_numeric_and_narrow_types_map_to_polars(postgres_url):
    import adbc_driver_postgresql.dbapi

    table = "piot_types_" + os.urandom(4).hex()
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {table} (a numeric(10, 2), b integer, c smallint, d real, "
            "e varchar(5), f timestamptz, g timestamp, h date, i boolean)"
        )
        cur.execute(
            f"INSERT INTO {table} VALUES (1.25, 2, 3, 0.5, 'x', '2024-01-01 10:00+02', "
            "'2024-01-01 10:00', '2024-01-01', true)"
        )
        conn.commit()
    try:
        lf = piot_dagster.scan_db(f"SELECT * FROM {table}", connection=postgres_url)
        assert lf.collect_schema() == pl.Schema(
            {
                "a": pl.Float64,
                "b": pl.Int32,
                "c": pl.Int16,
                "d": pl.Float32,
                "e": pl.String,
                "f": pl.Datetime("us", "UTC"),
                "g": pl.Datetime("us"),
                "h": pl.Date,
                "i": pl.Boolean,
            }
        )
        row = lf.collect().row(0)
        assert row[0] == 1.25
        assert row[5] == dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)
    finally:
        drop_postgres(postgres_url, table)


def test_a_schema_argument_overrides_declared_types(sqlite_uri):
    lf = piot_dagster.scan_db(
        "SELECT id, qty FROM trades", connection=sqlite_uri, schema={"qty": pl.Float64}
    )
    assert lf.collect_schema() == pl.Schema({"id": pl.Int64, "qty": pl.Float64})
    assert lf.collect()["qty"].dtype == pl.Float64


def test_a_schema_argument_naming_an_unknown_column_is_refused(sqlite_uri):
    with pytest.raises(ValueError, match="'nope'"):
        piot_dagster.scan_db(
            "SELECT id FROM trades", connection=sqlite_uri, schema={"nope": pl.Int8}
        )


def test_sqlite_computed_columns_take_the_type_of_their_values(sqlite_uri):
    lf = piot_dagster.scan_db(
        "SELECT id, price * 2 AS double_price, symbol || '!' AS shout FROM trades",
        connection=sqlite_uri,
    )
    assert lf.collect_schema() == pl.Schema(
        {"id": pl.Int64, "double_price": pl.Float64, "shout": pl.String}
    )


# 3. and 4. Pushdown -------------------------------------------------------------------


def test_only_the_columns_the_query_needs_are_selected(source, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    got = source.scan().filter(pl.col("qty") > 3).select("id").collect()
    assert got.height > 0
    (sql,) = pushed_sql(caplog)
    assert re.match(r'SELECT ["`]id["`], ["`]qty["`] FROM \(', sql) or re.match(
        r'SELECT ["`]qty["`], ["`]id["`] FROM \(', sql
    )


def test_translatable_predicates_reach_the_database_as_a_where(source, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = source.scan()
    lf.filter(D.is_between(dt.date(2024, 1, 5), dt.date(2024, 1, 9)), pl.col("qty") >= 2).collect()
    (sql,) = pushed_sql(caplog)
    assert re.search(r'["`]date["`] >=', sql)
    assert re.search(r'["`]qty["`] >= 2', sql)


def test_a_contradiction_asks_the_database_for_no_row(source, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = source.scan()
    day = dt.date(2024, 1, 5)
    got = lf.filter(D.is_between(day, day, closed="left")).collect()
    assert got.height == 0
    assert got.schema == lf.collect_schema()
    (sql,) = pushed_sql(caplog)
    assert sql.endswith("WHERE FALSE")


def test_an_untranslatable_and_term_is_dropped_and_the_rest_pushed(sqlite_uri, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = piot_dagster.scan_db("SELECT * FROM trades", connection=sqlite_uri)
    odd = pl.when(pl.col("qty") > 10).then(pl.col("price") > 5).otherwise(pl.col("ok"))
    got = lf.filter((pl.col("qty") < 20) & odd).collect()
    expected = lf.collect().filter((pl.col("qty") < 20) & odd)
    assert_frame_equal(got, expected)
    assert pushed_sql(caplog)[0].endswith('WHERE "qty" < 20')


@pytest.mark.parametrize(
    ("predicate", "where"),
    [
        (D.dt.year() == 2024, r'["`]date["`] >= .*2024-01-01.* AND ["`]date["`] < .*2025-01-01'),
        (D.dt.year() >= 2024, r'WHERE ["`]date["`] >= (?!.* AND ).*2024-01-01'),
        (D.dt.year() < 2024, r'WHERE ["`]date["`] < (?!.* AND ).*2024-01-01'),
    ],
    ids=["==", ">=", "<"],
)
def test_a_year_comparison_polars_rewrites_is_pushed_as_its_calendar_bounds(
    source, caplog, predicate, where
):
    # Polars 2.2 gives `>=` an upper end at the dtype's last date, which no Python date
    # holds: the lower end is still pushed.
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = source.scan()
    assert_frame_equal(lf.filter(predicate).collect(), lf.collect().filter(predicate))
    assert re.search(where, pushed_sql(caplog)[0]), pushed_sql(caplog)[0]


def test_an_or_with_an_untranslatable_branch_is_not_pushed(sqlite_uri, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = piot_dagster.scan_db("SELECT * FROM trades", connection=sqlite_uri)
    odd = pl.when(pl.col("qty") > 10).then(pl.col("price") > 5).otherwise(pl.col("ok"))
    predicate = (pl.col("qty") < 3) | odd
    assert_frame_equal(lf.filter(predicate).collect(), lf.collect().filter(predicate))
    assert "WHERE" not in pushed_sql(caplog)[0]


def test_the_peer_when_then_case_keeps_every_row(source):
    """polars-io-tools drops the when/then branch and returns 50 rows where 182 are right."""
    lf = source.scan()
    predicate = (pl.col("qty") > 20) | pl.when(pl.col("symbol") == "AAPL").then(True).otherwise(
        pl.col("price") < 10
    )
    assert_frame_equal(lf.filter(predicate).collect().sort("id"), lf.collect().filter(predicate))


def test_injection_attempts_have_no_side_effect(source):
    lf = source.scan()
    evil = "x'; DROP TABLE trades; --"
    got = lf.filter((pl.col("symbol") == evil) | pl.col("symbol").str.starts_with("x';")).collect()
    assert set(got["symbol"]) == {evil}
    assert lf.collect().height == FRAME.height


def test_an_is_in_of_a_thousand_values_is_pushed_and_right(source, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = source.scan()
    values = list(range(0, 3000, 3))
    predicate = pl.col("id").is_in(values)
    assert_frame_equal(lf.filter(predicate).collect().sort("id"), lf.collect().filter(predicate))
    assert all(" IN (" in sql for sql in pushed_sql(caplog)[:1])


@pytest.mark.parametrize("prefix", ["50%", "50%_", "x'", "it"])
def test_starts_with_escapes_like_wildcards(source, prefix):
    lf = source.scan()
    predicate = pl.col("symbol").str.starts_with(prefix)
    assert_frame_equal(lf.filter(predicate).collect().sort("id"), lf.collect().filter(predicate))


# 5. n_rows ----------------------------------------------------------------------------


def test_head_before_filter_is_not_a_where_with_limit(source, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = source.scan(f"{source.query} ORDER BY id")
    late = D >= dt.date(2024, 3, 1)
    got = lf.head(10).filter(late).collect()
    assert got.height == 0
    assert_frame_equal(got, lf.collect().head(10).filter(late))
    assert pushed_sql(caplog)[0].endswith("LIMIT 10")
    assert "WHERE" not in pushed_sql(caplog)[0]
    assert_frame_equal(lf.filter(late).head(10).collect(), lf.collect().filter(late).head(10))


# 6. Fetching --------------------------------------------------------------------------


@pytest.mark.parametrize("module", [pickle, cloudpickle], ids=["pickle", "cloudpickle"])
def test_the_plan_pickles_and_reads_after_a_round_trip(source, module):
    lf = source.scan().filter(pl.col("qty") > 3)
    assert_frame_equal(module.loads(module.dumps(lf)).collect(), lf.collect())


@pytest.mark.usefixtures("odbc_drivers")
def test_an_odbc_value_too_long_for_its_buffer_fails_and_is_never_truncated(mysql_url):
    """MariaDB's ODBC driver reports a capped value's length as the cap: 70,000 bytes
    would read as 65,536 without the check that no value fills its buffer."""
    from tests.databases import mysql_connect

    table = "piot_long_" + os.urandom(4).hex()
    conn = mysql_connect(mysql_url)
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id INT, s MEDIUMTEXT)")
        cursor.execute(
            f"INSERT INTO {table} VALUES (1, REPEAT('x', 60000)), (2, REPEAT('z', 70000))"
        )
    try:
        lf = piot_dagster.scan_db(
            f"SELECT id, s FROM {table}", connection=odbc_string("mariadb", mysql_url=mysql_url)
        )
        short = lf.filter(pl.col("id") == 1).collect()
        assert short["s"].str.len_bytes().to_list() == [60000]
        with pytest.raises(piot_dagster.DatabaseError, match=r"columns \['s'\].*mysql://"):
            lf.collect()
        full = piot_dagster.scan_db(f"SELECT id, s FROM {table}", connection=mysql_url)
        assert full.collect()["s"].str.len_bytes().to_list() == [60000, 70000]
    finally:
        drop_mysql(mysql_url, table)
        conn.close()


def test_duckdb_files_are_opened_read_only(duckdb_uri):
    path = duckdb_uri.removeprefix("duckdb:///")
    before = Path(path).stat().st_mtime_ns
    other = duckdb.connect(path, read_only=True)  # another read-only reader is fine
    try:
        assert piot_dagster.scan_db("SELECT * FROM trades", connection=duckdb_uri).collect().height
    finally:
        other.close()
    assert Path(path).stat().st_mtime_ns == before


def test_a_duckdb_file_is_writable_the_moment_a_plain_collect_returns(tmp_path):
    path = tmp_path / "trades.duckdb"
    write_duckdb(path, FRAME)
    assert (
        piot_dagster.scan_db("SELECT * FROM trades", connection=f"duckdb:///{path}")
        .collect()
        .height
    )
    # Outside a Ray worker no connection is kept: a writer, even in this process, gets in.
    writer = duckdb.connect(str(path))
    writer.execute("DELETE FROM trades")
    writer.close()


def test_results_stream_in_batches(sqlite_uri):
    lf = piot_dagster.scan_db("SELECT * FROM trades", connection=sqlite_uri)
    with pl.Config(streaming_chunk_size=50):
        assert_frame_equal(lf.collect(), lf.collect(engine="streaming"))


# 7. With execute_on_ray ---------------------------------------------------------------


def test_each_sqlite_period_query_uses_the_date_index(sqlite_uri, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = piot_dagster.scan_db("SELECT date, symbol, price FROM trades", connection=sqlite_uri)
    window = (D >= pl.lit(dt.date(2024, 1, 1))) & (D < pl.lit(dt.date(2024, 2, 1)))
    lf.filter(window).collect()
    (sql,) = pushed_sql(caplog)
    conn = sqlite3.connect(sqlite_uri.removeprefix("sqlite:///"))
    plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    conn.close()
    assert "USING INDEX trades_date" in plan, plan


# ISO-8601 spellings of one instant that SQLite tables hold side by side.
SPELLINGS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M"]


def spelled(t: dt.datetime, i: int) -> str:
    """``t`` in one of the spellings that hold it exactly; midnights often as a bare date."""
    if t.time() == dt.time() and i % 2:
        return t.date().isoformat()
    fits = [f for f in SPELLINGS if t.second == 0 or "%S" in f]
    return t.strftime(fits[i % len(fits)])


@pytest.fixture(scope="module")
def spellings_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every 20 minutes of January and February 2024, in mixed spellings."""
    path = tmp_path_factory.mktemp("spellings") / "ticks.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ticks (ts TIMESTAMP, v INTEGER)")
    conn.execute("CREATE INDEX ticks_ts ON ticks (ts)")
    start = dt.datetime(2024, 1, 1)
    rows = [(spelled(start + dt.timedelta(minutes=20 * i), i), i) for i in range(60 * 72)]
    rows += [("2024-01-31T23:59", -1), ("2024-02-01 00:00:00", -2), ("2024-02-01", -3)]
    conn.executemany("INSERT INTO ticks VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


TICK_TIMES = st.one_of(
    st.datetimes(dt.datetime(2023, 12, 30), dt.datetime(2024, 3, 2)),
    st.dates(dt.date(2023, 12, 30), dt.date(2024, 3, 2)).map(
        lambda d: dt.datetime.combine(d, dt.time())
    ),
)


@settings(deadline=None, max_examples=examples(150))
@given(
    op=st.sampled_from(["<", "<=", ">", ">=", "=="]),
    first=TICK_TIMES,
    second=st.one_of(st.none(), TICK_TIMES),
    closed=st.sampled_from(["both", "left", "right", "none"]),
)
def test_sqlite_bounds_over_mixed_spellings_equal_plain_polars(
    spellings_uri, op, first, second, closed
):
    lf = piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=spellings_uri)
    ts = pl.col("ts")
    compare = {
        "<": ts < first,
        "<=": ts <= first,
        ">": ts > first,
        ">=": ts >= first,
        "==": ts == first,
    }
    predicate = (
        compare[op] if second is None else ts.is_between(*sorted([first, second]), closed=closed)
    )
    expected = lf.collect().filter(predicate)
    assert_frame_equal(lf.filter(predicate).collect().sort("v"), expected.sort("v"))


def test_a_sqlite_bound_at_midnight_is_the_date_itself(spellings_uri, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=spellings_uri)
    day = (pl.col("ts") >= dt.datetime(2024, 1, 31)) & (pl.col("ts") < dt.datetime(2024, 2, 1))
    got = lf.filter(day).collect()
    (sql,) = pushed_sql(caplog)
    assert "\"ts\" >= '2024-01-31' AND \"ts\" < '2024-02-01'" in sql
    # What the database hands over is the day and nothing more: 72 ticks and 23:59.
    conn = sqlite3.connect(spellings_uri.removeprefix("sqlite:///"))
    (fetched,) = conn.execute(f"SELECT COUNT(*) FROM ({sql})").fetchone()
    conn.close()
    assert fetched == got.height == 73


@pytest.mark.usefixtures("ray_cluster")
def test_each_daily_partition_on_sqlite_fetches_only_its_day(spellings_uri, tmp_path):
    @dg.asset(
        partitions_def=piot_dagster.time_partitions("daily", "2024-01-01"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def ticks() -> pl.LazyFrame:
        return piot_dagster.scan_db("SELECT ts, v FROM ticks", connection=spellings_uri)

    manager = piot_dagster.RayParquetIOManager(
        ray=piot_dagster.RayResource(), base_dir=str(tmp_path)
    )
    tags = {
        "dagster/asset_partition_range_start": "2024-01-30",
        "dagster/asset_partition_range_end": "2024-02-01",
    }
    result = dg.materialize([ticks], tags=tags, resources={"io_manager": manager})
    conn = sqlite3.connect(spellings_uri.removeprefix("sqlite:///"))
    fetched, stored = {}, {}
    for event in result.asset_materializations_for_node("ticks"):
        sql = event.metadata["sql"].value.removeprefix("```sql\n").removesuffix("\n```")
        fetched[event.partition] = conn.execute(f"SELECT COUNT(*) FROM ({sql})").fetchone()[0]
        stored[event.partition] = event.metadata["dagster/partition_row_count"].value
    conn.close()
    # 72 ticks a day; the 31st also 23:59, the 1st also its two spelled midnights.
    assert fetched == stored == {"2024-01-30": 72, "2024-01-31": 73, "2024-02-01": 74}


@pytest.mark.usefixtures("ray_cluster")
def test_the_seed_example_reads_only_the_first_quarter_from_postgres(postgres_url):
    import time

    import adbc_driver_postgresql.dbapi

    days = pl.date_range(dt.date(2022, 1, 1), dt.date(2024, 12, 31), eager=True)
    frame = pl.DataFrame({"date": days.repeat_by(40).explode()}).with_columns(
        symbol=pl.lit("AAPL"), price=pl.int_range(pl.len()).cast(pl.Float64)
    )
    table = write_postgres(postgres_url, frame, prefix="piot_three_years")

    def tuples_read() -> tuple[int, int]:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT coalesce(seq_tup_read, 0), coalesce(idx_tup_fetch, 0) "
                f"FROM pg_stat_user_tables WHERE relname = '{table}'"
            )
            return cur.fetchone()

    try:
        before = tuples_read()
        lf = piot_dagster.scan_db(
            f"SELECT date, symbol, price FROM {table}", connection=postgres_url
        )
        result = (
            lf.filter(D.is_between(pl.date(2024, 1, 1), pl.date(2024, 3, 31)))
            .piot.execute_on_ray(date_column="date", time_unit="monthly")
            .collect()
        )
        q1_rows = 91 * 40
        assert result.height == q1_rows
        # The statistics of the workers' sessions reach the view within a second or so.
        deadline = time.monotonic() + 15
        while True:
            after = tuples_read()
            read = (after[0] - before[0]) + (after[1] - before[1])
            if read >= q1_rows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after[0] == before[0], "a sequential scan read the whole table"
        assert q1_rows <= read <= q1_rows * 1.05, f"{read} tuples read for {q1_rows} rows"
    finally:
        drop_postgres(postgres_url, table)


# 8. Bad input -------------------------------------------------------------------------


def test_an_unknown_scheme_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"sqlite://.*duckdb://.*postgresql://.*mysql://.*ODBC"):
        piot_dagster.scan_db("SELECT 1", connection="oracle://scott@localhost/db")


@pytest.mark.parametrize("uri", ["sqlite://relative.db", "sqlite:///", "trades.db", 42])
def test_a_malformed_uri_is_refused_clearly(uri):
    with pytest.raises((ValueError, TypeError), match="connection"):
        piot_dagster.scan_db("SELECT 1", connection=uri)


def test_an_unreachable_server_names_host_and_port_but_not_the_password():
    uri = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/test"
    with pytest.raises(piot_dagster.DatabaseError) as info:
        piot_dagster.scan_db("SELECT 1", connection=uri)
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "s3cr3t-pw" not in message
    # The driver's own exception is not kept either: it may quote the URI.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_a_syntax_error_names_the_query(sqlite_uri):
    with pytest.raises(ValueError, match="SELEC date FROM trades"):
        piot_dagster.scan_db("SELEC date FROM trades", connection=sqlite_uri)


def test_a_missing_table_names_the_query(source):
    with pytest.raises(piot_dagster.DatabaseError, match="SELECT date FROM no_such_table"):
        piot_dagster.scan_db("SELECT date FROM no_such_table", connection=source.uri)


@pytest.mark.usefixtures("ray_cluster")
def test_a_query_without_the_date_column_names_the_column(sqlite_uri):
    lf = piot_dagster.scan_db("SELECT symbol, price FROM trades", connection=sqlite_uri)
    with pytest.raises(ValueError, match="date_column 'date'"):
        lf.piot.execute_on_ray(date_column="date", time_unit="monthly")


def test_the_password_never_shows_in_errors_logs_repr_or_explain(
    postgres_url, postgres_table, caplog
):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    secret = "pw-that-must-not-leak"
    uri = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    lf = piot_dagster.scan_db(f"SELECT * FROM {postgres_table}", connection=uri)
    lf.filter(pl.col("qty") > 3).collect()
    with pytest.raises(piot_dagster.DatabaseError) as info:
        piot_dagster.scan_db("SELECT * FROM no_such_table", connection=uri)
    from piot_dagster.sql.connection import Connection

    shown = [
        lf.explain(),
        lf.explain(optimized=False),
        repr(lf),
        str(lf),
        str(info.value),
        repr(Connection.parse(uri)),
        caplog.text,
    ]
    assert all(secret not in text for text in shown)
    assert "***" in lf.explain()


# Differential: pushdown never changes the answer ---------------------------------------

LITERAL_DATES = st.dates(dt.date(2023, 12, 15), dt.date(2024, 5, 1))
LITERAL_TIMES = st.datetimes(dt.datetime(2023, 12, 15), dt.datetime(2024, 5, 1))


@st.composite
def sql_leaves(draw: st.DrawFn, schema: pl.Schema) -> pl.Expr:
    ops = [
        lambda c, v: c < v,
        lambda c, v: c <= v,
        lambda c, v: c > v,
        lambda c, v: c >= v,
        lambda c, v: c == v,
        lambda c, v: c != v,
    ]
    op = draw(st.sampled_from(ops))
    flip = draw(st.booleans())

    def cmp(column: pl.Expr, value: object) -> pl.Expr:
        return op(column, value) if not flip else op(pl.lit(value), column)

    kind = draw(
        st.sampled_from(
            [
                "date",
                "ts",
                "tstz",
                "between",
                "point",
                "crossed",
                "in_dates",
                "qty",
                "in_qty",
                "price",
                "symbol",
                "starts",
                "in_symbol",
                "null",
                "ok",
                "year",
                "opaque",
            ]
        )
    )
    if kind == "year":  # rewritten by Polars 2.2 into a range of the column itself
        column = pl.col(draw(st.sampled_from(["date", "ts"])))
        return cmp(column.dt.year(), draw(st.sampled_from([2023, 2024, 2025])))
    if kind == "tstz" and "tstz" not in schema:
        kind = "ts"
    if kind == "date":
        return cmp(D, draw(LITERAL_DATES))
    if kind == "ts":
        return cmp(pl.col("ts"), draw(LITERAL_TIMES))
    if kind == "tstz":
        zone = dt.UTC if schema["tstz"].time_zone else None  # type: ignore[union-attr]
        return cmp(pl.col("tstz"), draw(LITERAL_TIMES).replace(tzinfo=zone))
    if kind == "between":
        lo, hi = sorted([draw(LITERAL_DATES), draw(LITERAL_DATES)])
        return D.is_between(lo, hi, closed=draw(st.sampled_from(["both", "left", "right", "none"])))
    if kind == "point":  # a single point, or nothing (closed on one side or neither)
        column, value = draw(
            st.sampled_from([(D, draw(LITERAL_DATES)), (pl.col("ts"), draw(LITERAL_TIMES))])
        )
        return column.is_between(
            value, value, closed=draw(st.sampled_from(["both", "left", "right", "none"]))
        )
    if kind == "crossed":  # an empty range: t > a and a > t
        value = draw(LITERAL_TIMES)
        return (pl.col("ts") > value) & (pl.lit(value) > pl.col("ts"))
    if kind == "in_dates":
        return D.is_in(
            pl.Series(draw(st.lists(LITERAL_DATES, max_size=4)), dtype=pl.Date).implode()
        )
    if kind == "qty":
        return cmp(pl.col("qty"), draw(st.integers(-2, 30)))
    if kind == "in_qty":
        values = draw(st.lists(st.one_of(st.none(), st.integers(0, 30)), max_size=6))
        return pl.col("qty").is_in(
            pl.Series(values, dtype=pl.Int64).implode(), nulls_equal=draw(st.booleans())
        )
    if kind == "price":
        return cmp(pl.col("price"), draw(st.floats(-5, 110, allow_nan=False)))
    if kind == "symbol":
        value = draw(st.sampled_from([s for s in SYMBOLS if s] + ["Aapl", "none", ""]))
        return pl.col("symbol") == value if draw(st.booleans()) else pl.col("symbol") != value
    if kind == "starts":
        return pl.col("symbol").str.starts_with(
            draw(
                st.sampled_from(
                    ["A", "a", "50%", "x'", "it", "", "BRK_", "Ö", "x\\", "a\\'", "AAPL "]
                )
            )
        )
    if kind == "in_symbol":
        return pl.col("symbol").is_in(
            pl.Series(
                draw(st.lists(st.sampled_from(SYMBOLS), max_size=3)), dtype=pl.String
            ).implode()
        )
    if kind == "null":
        column = pl.col(draw(st.sampled_from(["date", "ts", "qty", "symbol", "ok"])))
        return column.is_null() if draw(st.booleans()) else column.is_not_null()
    if kind == "ok":
        return pl.col("ok") if draw(st.booleans()) else pl.col("ok") == draw(st.booleans())
    return draw(
        st.sampled_from(
            [
                pl.when(pl.col("qty") > 10).then(pl.col("price") > 5).otherwise(pl.col("ok")),
                pl.col("price").abs() > 40,
                pl.col("symbol").str.len_chars() > 4,
                D.dt.weekday() < 6,
            ]
        )
    )


def sql_predicates(schema: pl.Schema) -> st.SearchStrategy[pl.Expr]:
    return st.recursive(
        sql_leaves(schema),
        lambda children: st.one_of(
            st.tuples(children, children).map(lambda ab: ab[0] & ab[1]),
            st.tuples(children, children).map(lambda ab: ab[0] | ab[1]),
            children.map(lambda a: ~a),
        ),
        max_leaves=5,
    )


@settings(
    deadline=None,
    max_examples=examples(60),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_pushdown_equals_reading_everything_and_filtering_in_polars(source, data):
    lf = source.scan()
    predicate = data.draw(sql_predicates(lf.collect_schema()))
    expected = lf.collect().filter(predicate)
    assert_frame_equal(lf.filter(predicate).collect().sort("id"), expected.sort("id"))


def test_a_case_insensitive_sqlite_column_never_loses_rows(tmp_path):
    path = tmp_path / "nocase.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER, s TEXT COLLATE NOCASE)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "A"), (2, "a"), (3, "b")])
    conn.commit()
    conn.close()
    lf = piot_dagster.scan_db("SELECT id, s FROM t", connection=f"sqlite:///{path}")
    for predicate in [
        pl.col("s") == "a",
        pl.col("s") != "a",
        ~(pl.col("s") == "a"),
        pl.col("s").is_in(["a"]),
        ~pl.col("s").is_in(["a"]),
        pl.col("s").str.starts_with("a"),
        ~pl.col("s").str.starts_with("a"),
    ]:
        assert_frame_equal(lf.filter(predicate).collect(), lf.collect().filter(predicate))
