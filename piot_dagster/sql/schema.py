"""A query's Polars schema from the database's declared types, without fetching rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from sqlglot import exp

from piot_dagster.sql.connection import Connection

__all__ = ["discover_schema", "sqlite_declared_dtype"]

_PROBE = "piot_probe"


def discover_schema(connection: Connection, query: exp.Query) -> pl.Schema:
    """The schema of ``query``'s result as the database declares it."""
    if connection.dialect == "sqlite":
        return _sqlite_schema(connection, query)
    sql = query.sql(dialect=connection.dialect)
    with connection.open() as conn:
        if connection.dialect == "duckdb":
            arrow_schema = conn.sql(sql).limit(0).to_arrow_table().schema
        else:
            with conn.cursor() as cursor:
                arrow_schema = cursor.adbc_execute_schema(sql)
    return _from_arrow(arrow_schema)


def _from_arrow(schema: pa.Schema) -> pl.Schema:
    fields = []
    for f in schema:
        arrow_type = f.type
        # PostgreSQL's NUMERIC arrives as its decimal text through ADBC.
        if f.metadata and f.metadata.get(b"ADBC:postgresql:typname") == b"numeric":
            arrow_type = pa.float64()
        fields.append(pa.field(f.name, arrow_type))
    return pl.from_arrow(pa.schema(fields).empty_table()).schema  # type: ignore[union-attr]


def _sqlite_schema(connection: Connection, query: exp.Query) -> pl.Schema:
    # SQLite reports declared types only for views and tables: describe a temporary view
    # of the query, which lives in the connection's own temp database, not the file.
    uri = Path(connection.path).resolve().as_uri() + "?mode=ro"  # type: ignore[arg-type]
    conn = connection.call("could not open", lambda: sqlite3.connect(uri, uri=True))
    probe = exp.Create(
        this=exp.to_table(_PROBE),
        kind="VIEW",
        expression=query.copy(),
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    try:
        conn.execute(probe.sql(dialect="sqlite"))
        columns = conn.execute(f"PRAGMA temp.table_info({_PROBE})").fetchall()
        undeclared = [name for _, name, declared, *_ in columns if not declared]
        inferred = _sqlite_inferred(conn, undeclared)
    finally:
        conn.close()
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
