"""Real database files and tables holding the same deterministic frame."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import polars as pl

# Each a trap for some database: quotes and injections, LIKE's wildcards, and what MySQL's
# default collation (case- and accent-insensitive, PAD SPACE) and backslash escapes do.
SYMBOLS = [
    "AAPL",
    "MSFT",
    "it's",
    "x'; DROP TABLE trades; --",
    "50%_off",
    None,
    "aapl",
    "AAPL ",
    "Ölf",
    "Olf",
    "BRK.B",
    "BRK_B",
    "a\\'b",
    "x\\",
    "\\'; DROP TABLE trades; --",
]


def trades_frame(rows: int = 400) -> pl.DataFrame:
    """Trades every 7 hours from 2023-12-20, with NULLs, quotes and a NaN or two."""
    start = dt.datetime(2023, 12, 20, 1, 30)
    ts = [start + dt.timedelta(hours=7 * i) for i in range(rows)]
    return pl.DataFrame(
        {
            "id": pl.int_range(rows, eager=True),
            "date": [t.date() if i % 17 else None for i, t in enumerate(ts)],
            "ts": [t if i % 19 else None for i, t in enumerate(ts)],
            "tstz": pl.Series(ts).dt.replace_time_zone("UTC"),
            "symbol": [SYMBOLS[i % len(SYMBOLS)] for i in range(rows)],
            "price": [float("nan") if i % 53 == 5 else (i % 41) * 2.5 for i in range(rows)],
            "qty": [None if i % 13 == 0 else i % 29 for i in range(rows)],
            "ok": [None if i % 11 == 0 else i % 3 == 0 for i in range(rows)],
        },
        schema_overrides={"ts": pl.Datetime("us"), "tstz": pl.Datetime("us", "UTC")},
    )


def write_sqlite(path: Path, frame: pl.DataFrame, table: str = "trades") -> None:
    """SQLite has no time zones: ``tstz`` is left out. Dates and times are ISO text."""
    frame = frame.drop("tstz", strict=False)
    conn = sqlite3.connect(path)
    conn.execute(
        f'CREATE TABLE "{table}" (id INTEGER, date DATE, ts TIMESTAMP, symbol TEXT, '
        "price REAL, qty INTEGER, ok BOOLEAN)"
    )
    conn.execute(f'CREATE INDEX "{table}_date" ON "{table}" (date)')
    rows = frame.with_columns(
        pl.col("date").cast(pl.String), pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S")
    ).rows()
    conn.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
    conn.commit()
    conn.close()


def write_duckdb(path: Path, frame: pl.DataFrame, table: str = "trades") -> None:
    conn = duckdb.connect(str(path))
    conn.register("frame", frame.to_arrow())
    conn.execute(f'CREATE TABLE "{table}" AS SELECT * FROM frame')
    conn.close()


def write_postgres(
    url: str, frame: pl.DataFrame, prefix: str = "piot_test", index: str = "date"
) -> str:
    """A fresh table named uniquely for this run, with an index on ``index``."""
    import adbc_driver_postgresql.dbapi

    table = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with adbc_driver_postgresql.dbapi.connect(url) as conn, conn.cursor() as cursor:
        cursor.adbc_ingest(table, frame.to_arrow(), mode="create")
        cursor.execute(f'CREATE INDEX "{table}_{index}" ON "{table}" ("{index}")')
        cursor.execute(f'ANALYZE "{table}"')
        conn.commit()
    return table


def drop_postgres(url: str, table: str) -> None:
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.commit()


def instance_yaml(url: str, database: str) -> str:
    """The dagster.yaml the README shows, for ``database`` on the server of ``url``."""
    parts = urlsplit(url)
    return f"""\
storage:
  postgres:
    postgres_db:
      hostname: {parts.hostname}
      port: {parts.port or 5432}
      username: {parts.username or "postgres"}
      password: "{parts.password or ""}"
      db_name: {database}
      scheme: postgresql+psycopg2
telemetry:
  enabled: false
"""


def admin(url: str, statement: str) -> None:
    import psycopg2

    parts = urlsplit(url)
    conn = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        dbname="postgres",
    )
    conn.autocommit = True  # CREATE and DROP DATABASE run outside a transaction
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


MYSQL_TYPES = {
    "id": "BIGINT",
    "date": "DATE",
    "ts": "DATETIME(6)",
    "tstz": "TIMESTAMP(6) NULL",
    "symbol": "VARCHAR(64)",
    "price": "DOUBLE",
    "qty": "BIGINT",
    "ok": "BOOLEAN",
}


def mysql_connect(url: str, **options: object):
    """A PyMySQL connection to the server of a ``mysql://`` URL, in UTC."""
    import pymysql

    parts = urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
        autocommit=True,
        **options,
    )
    with conn.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
    return conn


def write_mysql(
    url: str,
    frame: pl.DataFrame,
    prefix: str = "piot_test",
    index: str = "date",
    types: dict[str, str] | None = None,
) -> str:
    """A fresh table named uniquely for this run, with an index on ``index``. Column types
    come from ``types`` (default :data:`MYSQL_TYPES`); NaN, which MySQL cannot store, is
    written as NULL."""
    types = {**MYSQL_TYPES, **(types or {})}
    table = f"{prefix}_{uuid.uuid4().hex[:8]}"
    columns = ", ".join(f"`{c}` {types[c]}" for c in frame.columns)
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    rows = frame.with_columns(pl.col(floats).fill_nan(None)).rows()
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE `{table}` ({columns}, INDEX (`{index}`))")
            marks = ", ".join(["%s"] * len(frame.columns))
            for start in range(0, len(rows), 10_000):
                cursor.executemany(
                    f"INSERT INTO `{table}` VALUES ({marks})", rows[start : start + 10_000]
                )
            cursor.execute(f"ANALYZE TABLE `{table}`")
    finally:
        conn.close()
    return table


def drop_mysql(url: str, table: str) -> None:
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        conn.close()


def odbc_string(kind: str, *, mysql_url: str = "", postgres_url: str = "", path: str = "") -> str:
    """The peer's ODBC connection string for the same server or file: ``kind`` is
    ``postgres``, ``mariadb`` or ``sqlite``."""
    if kind == "sqlite":
        return f"Driver={{SQLite3}};Database={path};"
    url, driver = (
        (postgres_url, "PostgreSQL Unicode")
        if kind == "postgres"
        else (mysql_url, "MariaDB Unicode")
    )
    parts = urlsplit(url)
    text = (
        f"Driver={{{driver}}};Server={parts.hostname};Port={parts.port};"
        f"Database={parts.path.lstrip('/')};Uid={parts.username};"
    )
    return text + (f"Pwd={parts.password};" if parts.password else "")
