"""scan_db on the MariaDB server on 127.0.0.1:3306, by URI (connectorx) and through the
MariaDB ODBC driver (arrow-odbc), where the peer gets answers wrong: collations that
ignore case, accents and trailing spaces, backslash escapes and the server's SQL modes,
time zones and DATETIME(0), declared types, and passwords. Also what the ODBC drivers for
PostgreSQL and SQLite declare, and the SQL sent to databases that cannot run here (SQL
Server, Oracle, Snowflake, an unknown one)."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster.engine.plan_reader import predicate_expr
from piot_dagster.sql.connection import Connection
from piot_dagster.sql.dialects import DIALECTS, GENERIC, Dialect, from_dbms_name
from piot_dagster.sql.pushdown import to_sql_filter, wrap_query
from tests.databases import (
    drop_mysql,
    drop_postgres,
    mysql_connect,
    odbc_string,
    write_mysql,
)
from tests.strategies import examples

D = pl.col("date")
S = pl.col("symbol")
Q = pl.col("qty")


def pushed_sql(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The statements scan_db sent: it logs each to `piot_dagster.sql` at DEBUG."""
    return [r.getMessage() for r in caplog.records if r.name == "piot_dagster.sql"]


def where_of(sql: str) -> str:
    """The WHERE clause scan_db wrapped around the query, or ''."""
    _, _, where = sql.rpartition(") AS q")
    return where.strip()


def assert_same_as_polars(lf: pl.LazyFrame, predicate: pl.Expr) -> pl.DataFrame:
    """The pushed-down filter gives what Polars gives on the same rows, read whole."""
    expected = lf.collect().filter(predicate).sort("id")
    got = lf.filter(predicate).collect().sort("id")
    assert_frame_equal(got, expected)
    return got


@pytest.fixture(params=["uri", "odbc"])
def mariadb(request: pytest.FixtureRequest, mysql_url: str) -> str:
    """The MariaDB server, by ``mysql://`` URI and by an ODBC connection string."""
    if request.param == "odbc":
        request.getfixturevalue("odbc_drivers")
        return odbc_string("mariadb", mysql_url=mysql_url)
    return mysql_url


@contextlib.contextmanager
def server_globals(url: str, **values: str) -> Iterator[dict[str, object]]:
    """``SET GLOBAL name = <SQL expression>`` for each of ``values``, in order; new sessions
    pick them up. The originals are restored in reverse order, whatever happens."""
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            names = list(values)
            cursor.execute("SELECT " + ", ".join(f"@@GLOBAL.{name}" for name in names))
            before = dict(zip(names, cursor.fetchone(), strict=True))
            try:
                for name, value in values.items():
                    cursor.execute(f"SET GLOBAL {name} = {value}")
                yield before
            finally:
                for name in reversed(names):
                    cursor.execute(f"SET GLOBAL {name} = %s", (before[name],))
    finally:
        conn.close()


def fresh_session(url: str, statement: str) -> tuple:
    """One row of ``statement`` on a new connection that sets nothing (not even the zone)."""
    import pymysql

    parts = urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchone()
    finally:
        conn.close()


def row_count(url: str, table: str) -> int:
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
            return cursor.fetchone()[0]
    finally:
        conn.close()


# The symbols table: what MariaDB's default collation and escaping make traps ------------

# Equal under utf8mb4_general_ci (case, accents, PAD SPACE) but not in Polars; LIKE's
# wildcards; quotes of both kinds.
COLLATION_TRAPS = ["AAPL", "aapl", "AAPL ", "MSFT", "BRK.B", "BRK_B", "Ölf", "Olf"]
QUOTES = ["it's", 'a"b', "50%_off", "x!y"]
# Backslashes, which MySQL reads as escapes unless NO_BACKSLASH_ESCAPES is set. {table} is
# the table itself: an injection that worked would drop it.
BACKSLASHES = ["\\'; DROP TABLE {table}; --", "a\\'b", "x\\", "\\", "50\\%"]
NEWLINE = "a\nb"
SYMBOL_ROWS = 600


@dataclass(frozen=True)
class SymbolsTable:
    name: str
    frame: pl.DataFrame

    @property
    def query(self) -> str:
        return f"SELECT id, symbol, qty FROM {self.name}"

    def scan(self, connection: str) -> pl.LazyFrame:
        return piot_dagster.scan_db(self.query, connection=connection)


@pytest.fixture(scope="module")
def symbols_table(mysql_url: str) -> Iterator[SymbolsTable]:
    """Every trap value, many rows each, and NULLs, in a VARCHAR of the server's default
    collation (utf8mb4_general_ci)."""
    empty = pl.DataFrame(schema={"id": pl.Int64, "symbol": pl.String, "qty": pl.Int64})
    table = write_mysql(mysql_url, empty, prefix="piot_symbols", index="id")
    try:
        values = [
            *COLLATION_TRAPS,
            *QUOTES,
            *(v.format(table=table) for v in BACKSLASHES),
            NEWLINE,
            None,
        ]
        frame = pl.DataFrame(
            {
                "id": range(SYMBOL_ROWS),
                "symbol": [values[i % len(values)] for i in range(SYMBOL_ROWS)],
                "qty": [i % 10 for i in range(SYMBOL_ROWS)],
            },
            schema=empty.schema,
        )
        conn = mysql_connect(mysql_url)
        try:
            with conn.cursor() as cursor:
                cursor.executemany(f"INSERT INTO `{table}` VALUES (%s, %s, %s)", frame.rows())
        finally:
            conn.close()
        yield SymbolsTable(table, frame)
    finally:
        drop_mysql(mysql_url, table)


# 1. The peer's wrong answers ----------------------------------------------------------


def test_the_symbols_read_back_exactly_as_written(mariadb, symbols_table):
    """The basis of every comparison below: trailing spaces, accents, quotes, backslashes
    and newlines survive the round trip, by URI and by ODBC."""
    lf = symbols_table.scan(mariadb)
    assert lf.collect_schema() == symbols_table.frame.schema
    assert_frame_equal(lf.collect().sort("id"), symbols_table.frame)


PEER_WRONG = [
    pytest.param(S < "b", id="lt-b"),
    pytest.param(S != "AAPL", id="ne-AAPL"),
    pytest.param(~S.is_in(["aapl", "MSFT"]), id="not-in"),
    pytest.param(S == "Olf", id="eq-Olf"),
    pytest.param(S.str.starts_with("BRK_"), id="starts-BRK_"),
    pytest.param(S.str.starts_with("a"), id="starts-a"),
    pytest.param(S == "AAPL ", id="eq-AAPL-space"),
    pytest.param(S.is_in(["Olf", "aapl"]), id="in-Olf-aapl"),
    pytest.param(~(S == "AAPL"), id="not-eq"),
    pytest.param(~S.str.starts_with("a"), id="not-starts-a"),
    pytest.param((S != "MSFT") & (Q > 3), id="ne-and-qty"),
    pytest.param(S >= "MSFT", id="ge-MSFT"),
]


@pytest.mark.parametrize("predicate", PEER_WRONG)
def test_string_filters_the_peer_gets_wrong_equal_polars(mariadb, symbols_table, predicate):
    """polars-io-tools returned 5,840 rows for `symbol < 'b'` where Polars gives 13,140:
    a case-insensitive, PAD SPACE collation makes `<`, `<>` and NOT IN return a subset."""
    got = assert_same_as_polars(symbols_table.scan(mariadb), predicate)
    assert got.height > 0


def test_string_order_and_negations_stay_in_polars_while_equality_is_pushed(
    mariadb, symbols_table, caplog
):
    """On MySQL `=` and LIKE return a superset, which Polars narrows; `<>`, `<` and any NOT
    over a string would return a subset, so none reaches the WHERE."""
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    lf = symbols_table.scan(mariadb)

    def where(predicate: pl.Expr) -> str:
        caplog.clear()
        lf.filter(predicate).collect()
        (sql,) = pushed_sql(caplog)
        return where_of(sql)

    for predicate in [
        S < "b",
        S >= "MSFT",
        S != "AAPL",
        ~(S == "AAPL"),
        ~S.is_in(["aapl", "MSFT"]),
        ~S.str.starts_with("a"),
    ]:
        assert where(predicate) == "", predicate
    assert where((S != "AAPL") & (Q > 3)) == "WHERE `qty` > 3"
    assert where(S == "Olf") == "WHERE `symbol` = 'Olf'"
    assert where(S.is_in(["aapl", "MSFT"])) == "WHERE `symbol` IN ('aapl', 'MSFT')"
    assert where(S.str.starts_with("BRK_")) == "WHERE `symbol` LIKE 'BRK!_%' ESCAPE '!'"


# 2. Injection through a backslash -----------------------------------------------------


@pytest.mark.parametrize(
    "value", BACKSLASHES, ids=["drop-table", "a-bs-quote-b", "x-bs", "bs", "bs-percent"]
)
def test_a_backslash_value_cannot_break_out_of_its_literal(
    mariadb, mysql_url, symbols_table, value, caplog
):
    """The peer's `\\'` ends its literal (the server reported a syntax error): a value with
    a backslash is never written as a literal, so the table is intact and the answer
    right."""
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    value = value.format(table=symbols_table.name)
    lf = symbols_table.scan(mariadb)
    for predicate in [
        S == value,
        S.is_in([value, "AAPL"]),
        S.str.starts_with(value),
        (S == value) | (Q == 3),
    ]:
        got = assert_same_as_polars(lf, predicate)
        assert value in got["symbol"].to_list()
    assert all("\\" not in sql for sql in pushed_sql(caplog))
    assert row_count(mysql_url, symbols_table.name) == SYMBOL_ROWS


# 3. The server's SQL modes ------------------------------------------------------------

SQL_MODES = ["NO_BACKSLASH_ESCAPES", "ANSI_QUOTES", "HIGH_NOT_PRECEDENCE", "PIPES_AS_CONCAT"]


@pytest.fixture
def sql_mode(request: pytest.FixtureRequest, mysql_url: str, symbols_table) -> Iterator[str]:
    """The server's global sql_mode with ``request.param`` added, which every new session
    (each read opens one) picks up; restored afterwards. The table is written first, under
    the server's own mode."""
    modes = request.param
    with server_globals(mysql_url, sql_mode=f"CONCAT(@@GLOBAL.sql_mode, ',{modes}')"):
        (session_mode,) = fresh_session(mysql_url, "SELECT @@SESSION.sql_mode")
        assert set(modes.split(",")) <= set(session_mode.split(","))
        yield modes


UNDER_MODES = [
    S == "a\\'b",
    S == "x\\",
    S.is_in(["\\", "AAPL"]),
    S.str.starts_with("50\\"),
    S == "it's",
    S == 'a"b',
    S.is_in(["it's", 'a"b']),
    ~((Q > 3) & (Q < 8)),
    ~Q.is_in([1, 2]),
    ~(Q == 3),
    (Q > 7) | (Q < 2),
    Q.is_between(2, 5),
    Q.is_between(2, 5, closed="none"),
    S.is_in(["AAPL", "MSFT"]),
    S.str.starts_with("50%_"),
    S.str.starts_with("BRK_"),
    S.str.starts_with("x!"),
    (S == "MSFT") & ~(Q == 1),
]


@pytest.mark.parametrize(
    "sql_mode", [",".join(SQL_MODES), *SQL_MODES], indirect=True, ids=["all", *SQL_MODES]
)
def test_filters_equal_polars_whatever_the_server_sql_mode(mariadb, symbols_table, sql_mode):
    """NO_BACKSLASH_ESCAPES changes what a backslash means, ANSI_QUOTES what `"` means,
    HIGH_NOT_PRECEDENCE how `NOT a = 1` groups, PIPES_AS_CONCAT what `||` is: none of
    them changes what is read."""
    lf = symbols_table.scan(mariadb)
    for predicate in UNDER_MODES:
        assert_same_as_polars(lf, predicate)


TRAP_TEXT = st.text(alphabet="aA \\'\"%_!Ö.B", max_size=5)


@settings(
    deadline=None,
    max_examples=examples(25),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@pytest.mark.parametrize("sql_mode", ["NO_BACKSLASH_ESCAPES,ANSI_QUOTES"], indirect=True)
def test_trap_strings_in_equality_membership_and_prefixes_equal_polars(
    mariadb, symbols_table, sql_mode, data
):
    """Any mix of quotes, backslashes, wildcards and LIKE's escape character, as a value or
    prefix, under the modes that change how literals are read."""
    stored = [s for s in symbols_table.frame["symbol"].unique().to_list() if s is not None]
    known = st.sampled_from([s for s in stored if "\n" not in s])
    value = data.draw(st.one_of(known, TRAP_TEXT))
    prefix = data.draw(st.one_of(known.map(lambda s: s[: max(1, len(s) // 2)]), TRAP_TEXT))
    predicate = data.draw(
        st.sampled_from(
            [
                S == value,
                S.is_in([value, data.draw(known)]),
                S.str.starts_with(prefix),
                ~(Q == 2) & S.str.starts_with(prefix),
            ]
        )
    )
    assert_same_as_polars(symbols_table.scan(mariadb), predicate)


@pytest.mark.parametrize("sql_mode", ["NO_BACKSLASH_ESCAPES"], indirect=True)
def test_a_newline_value_is_found_under_no_backslash_escapes(mariadb, symbols_table, sql_mode):
    lf = symbols_table.scan(mariadb)
    for predicate in [S == NEWLINE, S.is_in([NEWLINE]), S.str.starts_with("a\n")]:
        assert assert_same_as_polars(lf, predicate).height > 0


# 4. Time ------------------------------------------------------------------------------

T0 = dt.datetime(2024, 1, 1, 10)
TIME_ROWS = 80


@pytest.fixture(scope="module")
def times_table(mysql_url: str) -> Iterator[tuple[str, pl.DataFrame]]:
    """UTC instants in a TIMESTAMP(6), whole seconds (two rows each) in a DATETIME(0),
    microseconds in a DATETIME(6); written in a UTC session."""
    ids = list(range(TIME_ROWS))
    frame = pl.DataFrame(
        {
            "id": ids,
            "tstz": [T0 + dt.timedelta(microseconds=250_001 * i) for i in ids],
            "t0": [T0 + dt.timedelta(seconds=i // 2) for i in ids],
            "t6": [T0 + dt.timedelta(seconds=i, microseconds=123_456 + i) for i in ids],
        },
        schema={
            "id": pl.Int64,
            "tstz": pl.Datetime("us", "UTC"),
            "t0": pl.Datetime("us"),
            "t6": pl.Datetime("us"),
        },
    )
    types = {"tstz": "TIMESTAMP(6) NULL", "t0": "DATETIME(0)", "t6": "DATETIME(6)"}
    table = write_mysql(mysql_url, frame, prefix="piot_times", index="t0", types=types)
    yield table, frame
    drop_mysql(mysql_url, table)


@pytest.fixture
def tokyo_server(mysql_url: str) -> Iterator[None]:
    """The server's global time_zone at +09:00 for new sessions; restored afterwards."""
    with server_globals(mysql_url, time_zone="'+09:00'"):
        yield


def test_a_timestamp_reads_as_the_utc_instants_written_in_any_server_zone(
    mariadb, mysql_url, times_table, tokyo_server
):
    """TIMESTAMP converts to the session's zone: a session that keeps the server's +09:00
    sees 19:00 for 10:00 UTC. Every read sets its session to UTC first."""
    table, frame = times_table
    (shown,) = fresh_session(mysql_url, f"SELECT tstz FROM test.{table} WHERE id = 0")
    assert shown == dt.datetime(2024, 1, 1, 19)  # the trap is set
    lf = piot_dagster.scan_db(f"SELECT id, tstz FROM {table}", connection=mariadb)
    expected = frame.select("id", "tstz")
    late = dt.datetime(2024, 1, 1, 10, 0, 7, 500_010, tzinfo=dt.UTC)
    if mariadb.startswith("Driver="):
        # ODBC's MariaDB driver knows no zones: the same instants as UTC wall clock.
        expected = expected.with_columns(pl.col("tstz").dt.replace_time_zone(None))
        late = late.replace(tzinfo=None)
    assert lf.collect_schema() == expected.schema
    assert_frame_equal(lf.collect().sort("id"), expected)
    for predicate in [pl.col("tstz") < late, pl.col("tstz") >= late, pl.col("tstz") == late]:
        assert_frame_equal(lf.filter(predicate).collect().sort("id"), expected.filter(predicate))


FRACTION = T0 + dt.timedelta(seconds=3, microseconds=500_000)
WHOLE = T0 + dt.timedelta(seconds=3)
ON_WHOLE_SECONDS = [
    pytest.param(pl.col("t0") < FRACTION, id="lt"),
    pytest.param(pl.col("t0") <= FRACTION, id="le"),
    pytest.param(pl.col("t0") > FRACTION, id="gt"),
    pytest.param(pl.col("t0") >= FRACTION, id="ge"),
    pytest.param(pl.col("t0") == FRACTION, id="eq-fraction"),
    pytest.param(pl.col("t0") == WHOLE, id="eq-whole"),
    pytest.param(pl.col("t0").is_between(FRACTION, FRACTION + dt.timedelta(seconds=2)), id="in"),
    pytest.param(
        pl.col("t0").is_between(WHOLE, FRACTION + dt.timedelta(seconds=1), closed="none"),
        id="in-open",
    ),
    pytest.param(~(pl.col("t0") < FRACTION), id="not-lt"),
]


@pytest.mark.parametrize("predicate", ON_WHOLE_SECONDS)
def test_fractional_literals_on_a_datetime0_column_equal_polars(
    mariadb, times_table, predicate, caplog
):
    """DATETIME(0) compares with a literal's whole seconds (MariaDB truncates, MySQL 8
    rounds): 10:00:03 < '10:00:03.5' may be false there. Bounds go out widened to whole
    seconds, and Polars keeps exactly the right rows."""
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    table, frame = times_table
    lf = piot_dagster.scan_db(f"SELECT id, t0 FROM {table}", connection=mariadb)
    expected = frame.select("id", "t0").filter(predicate)
    assert_frame_equal(lf.filter(predicate).collect().sort("id"), expected, check_dtypes=False)
    where = where_of(pushed_sql(caplog)[-1])
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", where), where


def test_a_datetime6_column_keeps_its_microseconds(mariadb, times_table):
    table, frame = times_table
    lf = piot_dagster.scan_db(f"SELECT id, t6 FROM {table}", connection=mariadb)
    assert lf.collect_schema()["t6"] == pl.Datetime("us")
    assert_frame_equal(lf.collect().sort("id"), frame.select("id", "t6"))
    one = frame["t6"][7]
    assert one.microsecond == 123_463
    assert lf.filter(pl.col("t6") == one).collect()["id"].to_list() == [7]


# 5. Declared types --------------------------------------------------------------------

DECLARED = {
    "d": ("DATE", pl.Date(), dt.date(2024, 1, 2)),
    "dt3": ("DATETIME(3)", pl.Datetime("ms"), dt.datetime(2024, 1, 2, 10, 0, 0, 123_000)),
    "dt6": ("DATETIME(6)", pl.Datetime("us"), dt.datetime(2024, 1, 2, 10, 0, 0, 123_456)),
    "ts6": (
        "TIMESTAMP(6) NULL",
        pl.Datetime("us", "UTC"),
        dt.datetime(2024, 1, 2, 10, 0, 0, 654_321, tzinfo=dt.UTC),
    ),
    "flag": ("TINYINT(1)", pl.Int8(), 7),
    "u32": ("INT UNSIGNED", pl.UInt32(), 2**32 - 1),
    "u64": ("BIGINT UNSIGNED", pl.UInt64(), 2**64 - 1),
    "i64": ("BIGINT", pl.Int64(), -(2**63)),
    "f64": ("DOUBLE", pl.Float64(), 0.1 + 0.2),
    "f32": ("FLOAT", pl.Float32(), 0.5),
    "dec": ("DECIMAL(10,2)", pl.Decimal(10, 2), decimal.Decimal("12345678.91")),
    "vc": ("VARCHAR(20)", pl.String(), "Ölf "),
    "tx": ("TEXT", pl.String(), "long text"),
    "bl": ("BLOB", pl.Binary(), b"\x00\xff\x10"),
    "vb": ("VARBINARY(16)", pl.Binary(), b"\x01\x02"),
}


@pytest.fixture
def typed_table(mysql_url: str) -> Iterator[str]:
    """A table of each type, empty."""
    table = f"piot_types_{uuid.uuid4().hex[:8]}"
    columns = ", ".join(f"`{name}` {declared}" for name, (declared, _, _) in DECLARED.items())
    conn = mysql_connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE `{table}` ({columns})")
        yield table
    finally:
        conn.close()
        drop_mysql(mysql_url, table)


def insert_one_typed_row(url: str, table: str) -> None:
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            marks = ", ".join(["%s"] * len(DECLARED))
            values = [
                v.replace(tzinfo=None) if k == "ts6" else v for k, (_, _, v) in DECLARED.items()
            ]
            cursor.execute(f"INSERT INTO `{table}` VALUES ({marks})", values)
    finally:
        conn.close()


def test_mysql_schema_comes_from_declared_types_without_a_row(mysql_url, typed_table):
    """connectorx knows no types before a row arrives; the server's result metadata gives
    DATETIME's precision, UNSIGNED, TIMESTAMP's zone, and binary against text."""
    lf = piot_dagster.scan_db(f"SELECT * FROM {typed_table}", connection=mysql_url)
    assert lf.collect_schema() == pl.Schema({k: dtype for k, (_, dtype, _) in DECLARED.items()})
    empty = lf.collect()
    assert empty.height == 0
    assert empty.schema == lf.collect_schema()


def test_mysql_values_of_each_declared_type_round_trip(mysql_url, typed_table):
    """TINYINT(1) holding 7 is why it stays an integer; 2**64 - 1 is why BIGINT UNSIGNED is
    UInt64."""
    insert_one_typed_row(mysql_url, typed_table)
    got = piot_dagster.scan_db(f"SELECT * FROM {typed_table}", connection=mysql_url).collect()
    assert got.schema == pl.Schema({k: dtype for k, (_, dtype, _) in DECLARED.items()})
    assert got.row(0, named=True) == {k: value for k, (_, _, value) in DECLARED.items()}


@pytest.mark.xfail(
    strict=True,
    reason="odbc.described_dtype maps every integer the driver describes to Int64; the "
    "MariaDB driver describes BIGINT UNSIGNED as an integer of 19 digits (BIGINT: 20), "
    "so 2**64 - 1 reads as -1",
)
def test_odbc_bigint_unsigned_keeps_its_largest_value(mysql_url, odbc_drivers, typed_table):
    insert_one_typed_row(mysql_url, typed_table)
    lf = piot_dagster.scan_db(
        f"SELECT u64 FROM {typed_table}", connection=odbc_string("mariadb", mysql_url=mysql_url)
    )
    assert lf.collect().item() == 2**64 - 1


# 6. What the other ODBC drivers declare -----------------------------------------------


def test_postgres_odbc_reads_double_precision_and_timestamptz_as_declared(
    postgres_url, odbc_drivers
):
    """The PostgreSQL driver describes DOUBLE PRECISION as float32 (the peer's every price
    came back Float32) and TIMESTAMPTZ as a timestamp without zone."""
    import adbc_driver_postgresql.dbapi

    table = f"piot_odbc_types_{uuid.uuid4().hex[:8]}"
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id integer, x double precision, tz timestamptz)")
        cur.execute(
            f"INSERT INTO {table} VALUES (1, 0.1::float8 + 0.2::float8, "
            "'2024-01-01 10:00:00.123456+02'), (2, 1e300, NULL)"
        )
        conn.commit()
    try:
        lf = piot_dagster.scan_db(
            f"SELECT id, x, tz FROM {table}",
            connection=odbc_string("postgres", postgres_url=postgres_url),
        )
        assert lf.collect_schema() == pl.Schema(
            {"id": pl.Int32, "x": pl.Float64, "tz": pl.Datetime("us", "UTC")}
        )
        got = lf.collect().sort("id")
        assert got["x"].to_list() == [0.1 + 0.2, 1e300]
        assert got["tz"][0] == dt.datetime(2024, 1, 1, 8, 0, 0, 123_456, tzinfo=dt.UTC)
        assert got["tz"][1] is None
    finally:
        drop_postgres(postgres_url, table)


def test_sqlite_odbc_keeps_fractions_of_a_second(tmp_path, odbc_drivers):
    """The SQLite driver reads TIMESTAMP as whole seconds unless told the declared type."""
    import sqlite3

    path = tmp_path / "ticks.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ticks (id INTEGER, ts TIMESTAMP)")
    conn.executemany(
        "INSERT INTO ticks VALUES (?, ?)",
        [(1, "2024-01-01 10:00:00.25"), (2, "2024-01-01 10:00:00"), (3, "2024-01-01 10:00:00.75")],
    )
    conn.commit()
    conn.close()
    lf = piot_dagster.scan_db(
        "SELECT id, ts FROM ticks", connection=odbc_string("sqlite", path=str(path))
    )
    assert lf.collect_schema()["ts"] == pl.Datetime("us")
    quarter = dt.datetime(2024, 1, 1, 10, 0, 0, 250_000)
    assert lf.collect().sort("id")["ts"].to_list() == [
        quarter,
        dt.datetime(2024, 1, 1, 10),
        dt.datetime(2024, 1, 1, 10, 0, 0, 750_000),
    ]
    assert lf.filter(pl.col("ts") == quarter).collect()["id"].to_list() == [1]


# 7. Password hygiene ------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user: str
    password: str

    @property
    def spellings(self) -> list[str]:
        """The password as given and as written in a URI or an ODBC braced value."""
        return [self.password, quote(self.password, safe=""), self.password.replace("}", "}}")]


@pytest.fixture(scope="module")
def accounts(mysql_url: str) -> Iterator[dict[str, Account]]:
    """Two users that may read `test`: one whose password holds `;` and `}`, one plain."""
    suffix = uuid.uuid4().hex[:6]
    made = {
        "tricky": Account(f"piot_u_{suffix}", "p;w}d-Q7x{2"),
        "plain": Account(f"piot_v_{suffix}", "Plain-9fQ2x7"),
    }
    conn = mysql_connect(mysql_url)
    created: list[str] = []
    try:
        with conn.cursor() as cursor:
            for account in made.values():
                for host in ("%", "localhost"):
                    who = f"'{account.user}'@'{host}'"
                    cursor.execute(f"CREATE USER {who} IDENTIFIED BY '{account.password}'")
                    created.append(who)
                    cursor.execute(f"GRANT SELECT ON test.* TO {who}")
        yield made
    finally:
        with conn.cursor() as cursor:
            for who in created:
                cursor.execute(f"DROP USER IF EXISTS {who}")
        conn.close()


def braced(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def connection_for(form: str, account: Account, port: int = 3306) -> str:
    """``account``'s connection string in ``form``: a URI, or ODBC with each password key."""
    password = account.password
    if form in ("mysql", "mariadb"):
        return f"{form}://{account.user}:{quote(password, safe='')}@127.0.0.1:{port}/test"
    key = form.removeprefix("odbc-").removesuffix("-braced")
    value = braced(password) if form.endswith("-braced") else password
    return (
        f"Driver={{MariaDB Unicode}};Server=127.0.0.1;Port={port};Database=test;"
        f"Uid={account.user};{key}={value};"
    )


PASSWORD_FORMS = [
    ("mysql", "tricky"),
    ("mariadb", "tricky"),
    ("odbc-Pwd", "plain"),
    ("odbc-PWD", "plain"),
    ("odbc-password", "plain"),
    ("odbc-Pwd-braced", "tricky"),
]


@pytest.fixture(params=PASSWORD_FORMS, ids=[form for form, _ in PASSWORD_FORMS])
def login(request: pytest.FixtureRequest, accounts) -> tuple[str, Account]:
    form, kind = request.param
    if form.startswith("odbc"):
        request.getfixturevalue("odbc_drivers")
    return form, accounts[kind]


def assert_hidden(account: Account, texts: list[str]) -> None:
    for text in texts:
        for spelling in account.spellings:
            assert spelling not in text, f"{spelling!r} shown in {text!r}"


def test_a_password_is_parsed_from_each_form(login):
    form, account = login
    assert Connection.parse(connection_for(form, account)).password == account.password


def test_the_password_never_shows_in_errors_logs_repr_or_explain(
    login, mysql_url, symbols_table, caplog
):
    caplog.set_level(logging.DEBUG)  # every logger: the drivers' own too
    form, account = login
    cs = connection_for(form, account)
    lf = piot_dagster.scan_db(symbols_table.query, connection=cs)
    assert lf.filter(Q > 3).collect().height == SYMBOL_ROWS * 6 // 10
    with pytest.raises(piot_dagster.DatabaseError) as missing:
        piot_dagster.scan_db("SELECT * FROM no_such_table", connection=cs)
    # A table that goes away between planning and reading: the reader's own error.
    gone = write_mysql(mysql_url, pl.DataFrame({"id": [1, 2]}), prefix="piot_gone", index="id")
    try:
        stale = piot_dagster.scan_db(f"SELECT id FROM {gone}", connection=cs)
    finally:
        drop_mysql(mysql_url, gone)
    with pytest.raises(piot_dagster.DatabaseError) as at_read:
        stale.collect()
    assert "no_such_table" in str(missing.value)
    assert gone in str(at_read.value)
    for error in (missing.value, at_read.value):
        assert error.__cause__ is None
        assert error.__context__ is None
    assert "***" in lf.explain()
    assert_hidden(
        account,
        [
            repr(lf),
            str(lf),
            lf.explain(),
            lf.explain(optimized=False),
            repr(Connection.parse(cs)),
            Connection.parse(cs).redacted,
            str(missing.value),
            repr(missing.value),
            str(at_read.value),
            caplog.text,
        ],
    )


def test_a_wrong_password_is_refused_naming_host_and_port_but_no_password(login):
    form, account = login
    wrong = Account(account.user, "Wrong-Pw-4471")
    with pytest.raises(piot_dagster.DatabaseError) as info:
        piot_dagster.scan_db("SELECT 1", connection=connection_for(form, wrong))
    assert "127.0.0.1:3306" in str(info.value)
    assert "Access denied" in str(info.value)
    assert_hidden(wrong, [str(info.value)])
    assert_hidden(account, [str(info.value)])
    assert info.value.__context__ is None


def test_an_unreachable_port_is_named_but_not_the_password(login):
    form, account = login
    with pytest.raises(piot_dagster.DatabaseError) as info:
        piot_dagster.scan_db("SELECT 1", connection=connection_for(form, account, port=1))
    assert "127.0.0.1:1" in str(info.value)
    assert_hidden(account, [str(info.value), repr(info.value)])


@pytest.mark.parametrize("pair", ["password=word", "Pwd=P", "PASSWORD=PASSWORD", "Pwd=wd"])
def test_a_password_that_is_part_of_its_key_is_still_redacted(pair):
    key, _, _ = pair.partition("=")
    cs = f"Driver={{MariaDB Unicode}};Server=127.0.0.1;Uid=u;{pair};"
    assert Connection.parse(cs).redacted == cs.replace(pair, f"{key}=***")


# 8. Bad input -------------------------------------------------------------------------


def test_a_driver_that_is_not_installed_is_named_with_the_installed_ones(odbc_drivers):
    cs = "Driver={No Such Driver};Server=127.0.0.1;Port=3306;Database=test;Uid=root;Pwd=secret;"
    with pytest.raises(piot_dagster.DatabaseError) as info:
        piot_dagster.scan_db("SELECT 1", connection=cs)
    message = str(info.value)
    assert "'No Such Driver' is not installed" in message
    assert all(driver in message for driver in odbc_drivers)
    assert "secret" not in message


# 9. The seed example on Ray over MariaDB ----------------------------------------------


@pytest.fixture(scope="module")
def three_years(mysql_url: str) -> Iterator[tuple[str, pl.DataFrame]]:
    """40 rows a day from 2022 to 2024, indexed on `date`."""
    days = pl.date_range(dt.date(2022, 1, 1), dt.date(2024, 12, 31), eager=True)
    frame = pl.DataFrame({"date": days.repeat_by(40).explode()}).with_columns(
        symbol=pl.lit("AAPL"), price=pl.int_range(pl.len()).cast(pl.Float64)
    )
    table = write_mysql(mysql_url, frame, prefix="piot_three_years", index="date")
    yield table, frame
    drop_mysql(mysql_url, table)


@pytest.fixture
def general_log(mysql_url: str) -> Iterator[None]:
    """The server's general query log, to the mysql.general_log table; restored after."""
    with server_globals(mysql_url, log_output="'TABLE'", general_log="1"):
        yield


def logged(conn, table: str, since: dt.datetime) -> list[str]:
    """The statements run (as text or prepared) since ``since`` that mention ``table``,
    except the ones reading the log."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT argument FROM mysql.general_log WHERE event_time >= %s "
            "AND command_type IN ('Query', 'Execute') AND argument LIKE %s ORDER BY event_time",
            (since, f"%{table}%"),
        )
        arguments = [a.decode() if isinstance(a, bytes) else a for (a,) in cursor.fetchall()]
    return [a for a in arguments if "general_log" not in a]


DATE_BOUND = re.compile(r"`date` (>=|<=|<|>) CAST\('(\d{4}-\d\d-\d\d)' AS DATE\)")


def month_bounds(sql: str) -> tuple[dt.date, dt.date]:
    """The [from, until) days a statement's WHERE asks for."""
    low = high = None
    for op, text in DATE_BOUND.findall(where_of(sql)):
        day = dt.date.fromisoformat(text)
        if op == ">=":
            low = day if low is None else max(low, day)
        elif op in ("<", "<="):
            until = day + dt.timedelta(days=1) if op == "<=" else day
            high = until if high is None else min(high, until)
        else:
            raise AssertionError(f"unexpected bound in {sql}")
    assert low is not None, sql
    assert high is not None, sql
    return low, high


@pytest.mark.usefixtures("ray_cluster")
def test_the_seed_example_reads_only_the_first_quarter_from_mariadb(
    mariadb, mysql_url, three_years, general_log
):
    """Three statements, one per month, each with its own month's bounds, each served by
    the index on `date` (EXPLAIN: a range scan of it), and nothing else reads a row."""
    table, frame = three_years
    conn = mysql_connect(mysql_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT NOW(6)")
            (since,) = cursor.fetchone()
        lf = piot_dagster.scan_db(f"SELECT date, symbol, price FROM {table}", connection=mariadb)
        quarter = D.is_between(pl.date(2024, 1, 1), pl.date(2024, 3, 31))
        result = lf.filter(quarter).piot.execute_on_ray(date_column="date", time_unit="monthly")
        got = result.collect()
        assert got.height == 91 * 40
        assert_frame_equal(got.sort("price"), frame.filter(quarter))

        statements = logged(conn, table, since)
        reads = [s for s in statements if not s.endswith("WHERE FALSE")]
        assert len(statements) - len(reads) == 1  # the schema, asked with no row
        assert sorted(month_bounds(s) for s in reads) == [
            (dt.date(2024, 1, 1), dt.date(2024, 2, 1)),
            (dt.date(2024, 2, 1), dt.date(2024, 3, 1)),
            (dt.date(2024, 3, 1), dt.date(2024, 4, 1)),
        ]
        for sql in reads:
            with conn.cursor() as cursor:
                cursor.execute(f"EXPLAIN {sql}")
                names = [c[0] for c in cursor.description]
                (plan,) = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            assert (plan["type"], plan["key"]) == ("range", "date"), plan
    finally:
        conn.close()


def test_a_contradiction_asks_mariadb_for_no_row(mariadb, three_years, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    table, _ = three_years
    lf = piot_dagster.scan_db(f"SELECT date, symbol, price FROM {table}", connection=mariadb)
    day = dt.date(2024, 1, 5)
    got = lf.filter(D.is_between(day, day, closed="left")).collect()
    assert got.height == 0
    assert got.schema == pl.Schema({"date": pl.Date, "symbol": pl.String, "price": pl.Float64})
    (sql,) = pushed_sql(caplog)
    assert sql.endswith("WHERE FALSE")


# 10. SQL for databases that cannot run here -------------------------------------------

SCHEMA = pl.Schema(
    {
        "date": pl.Date,
        "ts": pl.Datetime("us"),
        "tstz": pl.Datetime("us", "UTC"),
        "symbol": pl.String,
        "qty": pl.Int64,
        "price": pl.Float64,
        "ok": pl.Boolean,
    }
)
TSQL, ORACLE, SNOWFLAKE = DIALECTS["tsql"], DIALECTS["oracle"], DIALECTS["snowflake"]


def where(predicate: pl.Expr, dialect: Dialect) -> tuple[str, bool] | None:
    """The WHERE condition ``predicate`` becomes in ``dialect``, and whether it is exact."""
    pushed = to_sql_filter(predicate_expr(predicate, SCHEMA), SCHEMA, dialect)
    return None if pushed is None else (pushed[0].sql(dialect=dialect.sqlglot), pushed[1])


QUERY = "SELECT * FROM trades"


def test_tsql_quotes_with_brackets_and_limits_with_top():
    assert wrap_query(QUERY, ["date", "qty"], None, 10, TSQL) == (
        "SELECT TOP 10 [date], [qty] FROM (\nSELECT * FROM trades\n) AS q"
    )
    assert where(pl.col("qty") > 3, TSQL) == ("[qty] > 3", True)


def test_oracle_limits_with_fetch_first_and_aliases_without_as():
    sql = wrap_query(QUERY, ["date"], None, 10, ORACLE)
    assert sql == 'SELECT "date" FROM (\nSELECT * FROM trades\n) q FETCH FIRST 10 ROWS ONLY'


@pytest.mark.parametrize(
    ("dialect", "tail"),
    [(DIALECTS["mysql"], ") AS q LIMIT 5"), (SNOWFLAKE, ") AS q LIMIT 5"), (GENERIC, ") AS q")],
    ids=["mysql", "snowflake", "generic"],
)
def test_a_limit_is_written_only_where_the_dialect_has_one(dialect, tail):
    assert wrap_query(QUERY, ["qty"], None, 5, dialect).endswith(tail)


@pytest.mark.parametrize("dialect", [TSQL, ORACLE], ids=["tsql", "oracle"])
def test_without_boolean_literals_a_contradiction_is_one_equals_zero(dialect):
    day = dt.date(2024, 1, 5)
    assert where(D.is_between(day, day, closed="left"), dialect) == ("1 = 0", True)
    assert where(pl.col("ok"), dialect) is None
    assert where(pl.col("ok") == True, dialect) is None  # noqa: E712
    assert where(~pl.col("ok"), dialect) is None
    sql, exact = where(pl.col("ok") & (pl.col("qty") > 3), dialect)
    assert not exact
    assert sql.endswith("qty] > 3" if dialect is TSQL else '"qty" > 3')
    assert "TRUE" not in sql
    assert "FALSE" not in sql


def test_oracle_dates_spell_out_their_format():
    """Oracle's CAST('…' AS DATE) follows the session's NLS_DATE_FORMAT."""
    cases = [
        (D >= dt.date(2024, 1, 5), "\"date\" >= TO_DATE('2024-01-05', 'YYYY-MM-DD')"),
        (
            pl.col("ts") < dt.datetime(2024, 1, 5, 10, 30),
            "\"ts\" < TO_TIMESTAMP('2024-01-05 10:30:00.000000', 'YYYY-MM-DD HH24:MI:SS.FF6')",
        ),
        (
            pl.col("tstz") >= dt.datetime(2024, 1, 5, 12, tzinfo=dt.UTC),
            "\"tstz\" >= TO_TIMESTAMP_TZ('2024-01-05 12:00:00.000000 +00:00', "
            "'YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM')",
        ),
        (D.is_in([dt.date(2024, 1, 1)]), "\"date\" IN (TO_DATE('2024-01-01', 'YYYY-MM-DD'))"),
    ]
    for predicate, sql in cases:
        assert where(predicate, ORACLE) == (sql, True)
    # A fraction of a second on a DATE-like column: widened to whole seconds.
    widened, exact = where(pl.col("ts") < dt.datetime(2024, 1, 5, 10, 30, 0, 500_000), ORACLE)
    assert "10:30:01.000000" in widened
    assert not exact
    for predicate in [
        *(predicate for predicate, _ in cases),
        pl.col("ts").is_between(dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1)),
    ]:
        assert "CAST" not in where(predicate, ORACLE)[0]


def test_oracle_never_pushes_an_empty_string():
    """In Oracle '' is NULL: `symbol = ''` is never true there."""
    assert where(S == "", ORACLE) is None
    assert where(S.is_in(["", "AAPL"]), ORACLE) is None
    assert where(S == "AAPL", ORACLE) == ("\"symbol\" = 'AAPL'", False)


def test_a_generic_database_gets_numbers_and_null_tests_only():
    pushed = [
        (pl.col("qty") > 3, ('"qty" > 3', True)),
        (pl.col("price") <= 2.5, ('"price" <= 2.5', True)),
        (pl.col("qty").is_in([1, 2]), ('"qty" IN (1, 2)', True)),
        (pl.col("symbol").is_null(), ('"symbol" IS NULL', True)),
        (D.is_not_null(), ('NOT "date" IS NULL', True)),
    ]
    for predicate, sql in pushed:
        assert where(predicate, GENERIC) == sql
    for predicate in [
        S == "AAPL",
        S.is_in(["AAPL"]),
        S.str.starts_with("A"),
        D >= dt.date(2024, 1, 1),
        pl.col("ts") < dt.datetime(2024, 1, 1),
        pl.col("tstz") == dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        D.is_in([dt.date(2024, 1, 1)]),
        pl.col("ok"),
        pl.col("ok") == False,  # noqa: E712
    ]:
        assert where(predicate, GENERIC) is None, predicate
    assert where((S == "AAPL") & (pl.col("qty") > 3), GENERIC) == ('"qty" > 3', False)


def test_snowflake_keeps_backslash_values_out():
    """Snowflake reads backslash escapes in string literals."""
    for predicate in [S == "a\\b", S.is_in(["x\\", "AAPL"]), S.str.starts_with("\\")]:
        assert where(predicate, SNOWFLAKE) is None
    assert where(S == "it's", SNOWFLAKE) == ("\"symbol\" = 'it\\'s'", False)


@pytest.mark.parametrize(
    "predicate", [S == "Ω", S.is_in(["日本"]), S.str.starts_with("Ω")], ids=["eq", "in", "like"]
)
def test_tsql_writes_non_ascii_strings_as_unicode_literals(predicate):
    pushed = where(predicate, TSQL)
    assert pushed is None or "N'" in pushed[0]


@pytest.mark.parametrize(
    ("dbms", "dialect"),
    [
        ("Microsoft SQL Server", "tsql"),
        ("Oracle", "oracle"),
        ("Snowflake", "snowflake"),
        ("MariaDB", "mysql"),
        ("MySQL", "mysql"),
        ("PostgreSQL", "postgres"),
        ("SQLite", "sqlite"),
        ("DuckDB", "duckdb"),
        ("Teradata", "generic"),
        ("", "generic"),
    ],
)
def test_the_odbc_dbms_name_chooses_the_dialect(dbms, dialect):
    assert from_dbms_name(dbms).name == dialect


def test_an_odbc_connection_asks_the_driver_which_database_it_reaches(mariadb):
    assert Connection.parse(mariadb).resolved().dialect is DIALECTS["mysql"]
