"""A query's Polars schema from the database's declared types, without fetching rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import sqlglot
from sqlglot import exp

from piot_dagster.sql import mysql, odbc
from piot_dagster.sql.connection import Connection
from piot_dagster.sql.dialects import Dialect
from piot_dagster.sql.pushdown import embed, false

__all__ = [
    "discover_schema",
    "named_columns",
    "postgres_declared_dtype",
    "sqlite_declared_dtype",
]

_PROBE = "piot_probe"


def discover_schema(connection: Connection, query: str) -> pl.Schema:
    """The schema of ``query``'s result as the database declares it (``connection``
    resolved)."""
    if connection.driver == "sqlite":
        return _sqlite_schema(connection, query)
    # The query's columns, and no row: what a driver describes without reading.
    empty = embed(exp.select("*").where(false(connection.dialect)), query, connection.dialect)
    if connection.driver == "mysql":
        return pl.Schema(mysql.result_fields(connection.uri, empty))
    with connection.open() as conn:
        if connection.driver == "odbc":
            return _odbc_schema(conn, connection, query, empty)
        if connection.driver == "duckdb":
            arrow_schema = conn.sql(query).limit(0).to_arrow_table().schema
        else:
            with conn.cursor() as cursor:
                arrow_schema = cursor.adbc_execute_schema(query)
    return _from_arrow(arrow_schema)


def named_columns(query: str, dialect: Dialect) -> list[str] | None:
    """The columns ``query`` gives, read from its text without the database: None when it
    does not name them all (a ``*``), or is not valid SQL of ``dialect`` (scan_db then
    says so)."""
    try:
        parsed = sqlglot.parse_one(query, read=dialect.sqlglot)
    except sqlglot.errors.ParseError:
        return None
    names = parsed.named_selects if isinstance(parsed, exp.Query) else []
    if not names or any(name in ("", "*") for name in names):
        return None
    return list(names)


def _from_arrow(schema: pa.Schema) -> pl.Schema:
    fields = []
    for f in schema:
        arrow_type = f.type
        # PostgreSQL's NUMERIC arrives as its decimal text through ADBC.
        if f.metadata and f.metadata.get(b"ADBC:postgresql:typname") == b"numeric":
            arrow_type = pa.float64()
        fields.append(pa.field(f.name, arrow_type))
    return pl.from_arrow(pa.schema(fields).empty_table()).schema  # type: ignore[union-attr]


def _odbc_schema(conn: Any, connection: Connection, query: str, empty: str) -> pl.Schema:
    """Over ODBC, the catalog's declared types where the database has one to ask (the
    PostgreSQL driver describes DOUBLE PRECISION as a float of 17 digits, TIMESTAMPTZ as
    a timestamp without zone), SQLite's declared types, and the driver's description of
    each column elsewhere."""
    if connection.dialect.name == "sqlite":
        return sqlite_columns(conn, query)
    if connection.dialect.name == "postgres":
        conn.execute(f"CREATE OR REPLACE TEMPORARY VIEW {_PROBE} AS\n{query}\n")
        try:
            rows = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                f"WHERE attrelid = '{_PROBE}'::regclass AND attnum > 0 ORDER BY attnum"
            ).fetchall()
        finally:
            conn.execute(f"DROP VIEW {_PROBE}")
        return pl.Schema({name: postgres_declared_dtype(declared) for name, declared in rows})
    cursor = conn.execute(empty)
    try:
        return pl.Schema(
            {
                name: odbc.described_dtype(type_code, precision, scale)
                for name, type_code, _, _, precision, scale, _ in cursor.description
            }
        )
    finally:
        cursor.close()


def postgres_declared_dtype(declared: str) -> pl.DataType:
    """The Polars dtype for PostgreSQL's ``format_type`` of a column, as ADBC maps it."""
    name = declared.lower()
    if name.startswith("timestamp"):
        return pl.Datetime("us", "UTC" if name.endswith("with time zone") else None)
    if name.startswith(("numeric", "decimal")):
        return pl.Float64()  # as ADBC's NUMERIC text, cast
    if name.startswith("time"):
        return pl.Time()
    return _POSTGRES.get(name, pl.String())


_POSTGRES: dict[str, pl.DataType] = {
    "double precision": pl.Float64(),
    "real": pl.Float32(),
    "smallint": pl.Int16(),
    "integer": pl.Int32(),
    "bigint": pl.Int64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "bytea": pl.Binary(),
}


def _sqlite_schema(connection: Connection, query: str) -> pl.Schema:
    # A read-only connection of our own: the view below lives in its temp database.
    uri = Path(connection.path).resolve().as_uri() + "?mode=ro"  # type: ignore[arg-type]
    conn = connection.call("could not open", lambda: sqlite3.connect(uri, uri=True))
    try:
        return sqlite_columns(conn, query)
    finally:
        conn.close()


def sqlite_columns(conn: Any, query: str) -> pl.Schema:
    """``query``'s schema on a SQLite connection (sqlite3's, or pyodbc's through the
    SQLite ODBC driver).

    SQLite reports declared types only for views and tables: this describes a temporary
    view of the query, which lives in the connection's own temp database, not the file.
    """
    conn.execute(f"CREATE TEMPORARY VIEW {_PROBE} AS\n{query}\n")
    try:
        columns = [
            tuple(row) for row in conn.execute(f"PRAGMA temp.table_info({_PROBE})").fetchall()
        ]
        undeclared = [name for _, name, declared, *_ in columns if not declared]
        inferred = _sqlite_inferred(conn, undeclared)
    finally:
        conn.execute(f"DROP VIEW temp.{_PROBE}")
    return pl.Schema(
        {
            name: sqlite_declared_dtype(declared) or inferred[name]
            for _, name, declared, *_ in columns
        }
    )


def sqlite_declared_dtype(declared: str) -> pl.DataType | None:
    """The Polars dtype for a SQLite declared type, by SQLite's affinity rules, with the
    conventional DATE / DATETIME / TIMESTAMP / BOOLEAN names recognised first."""
    name = declared.upper()
    if not name:
        return None
    if "TIMESTAMP" in name or "DATETIME" in name:
        return pl.Datetime("us")
    if name.startswith("DATE"):
        return pl.Date()
    if "BOOL" in name:
        return pl.Boolean()
    if "INT" in name:
        return pl.Int64()
    if any(t in name for t in ("CHAR", "CLOB", "TEXT")):
        return pl.String()
    if any(t in name for t in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return pl.Float64()
    if "BLOB" in name:
        return pl.Binary()
    return pl.Float64()  # NUMERIC affinity


def _sqlite_inferred(conn: Any, names: list[str]) -> dict[str, pl.DataType]:
    """Dtypes of computed columns (no declared type) from the storage class of the first
    non-null value; a column that is all null reads as String."""
    storage = {
        "integer": pl.Int64(),
        "real": pl.Float64(),
        "text": pl.String(),
        "blob": pl.Binary(),
    }
    inferred: dict[str, pl.DataType] = {}
    for name in names:
        column = exp.column(name, quoted=True)
        first = (
            exp.select(exp.func("typeof", column))
            .from_(_PROBE)
            .where(exp.not_(exp.Is(this=column, expression=exp.Null())))
            .limit(1)
        )
        row = conn.execute(first.sql(dialect="sqlite")).fetchone()
        inferred[name] = storage.get(row[0], pl.String()) if row else pl.String()
    return inferred
