"""Real database files and tables holding the same deterministic frame."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import polars as pl

SYMBOLS = ["AAPL", "MSFT", "it's", "x'; DROP TABLE trades; --", "50%_off", None]


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
