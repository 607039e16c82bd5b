"""MySQL and MariaDB by URI: ``mysql://user:password@host:port/db`` (or ``mariadb://``).

connectorx reads the rows as Arrow batches (the reader Polars' own ``read_database_uri``
uses, and the fastest here: docs/scan_db.md). It knows no declared types before rows
arrive, so the schema comes from the server's own result metadata, which PyMySQL shows
for a query that returns no row: precision of DATETIME and TIMESTAMP, UNSIGNED, binary
or text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import polars as pl
import pyarrow as pa

from piot_dagster.extras import import_extra

__all__ = ["declared_dtype", "read_batches", "result_fields"]

# The server's field types (include/mysql_com.h) and flags.
_UNSIGNED = 32
_BINARY_CHARSET = 63
_INTEGERS = {1: 8, 2: 16, 9: 32, 3: 32, 8: 64}  # TINY, SHORT, INT24, LONG, LONGLONG
_TEXT = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}  # VARCHAR… JSON, ENUM, BLOBs
_BATCH_ROWS = 100_000


def declared_dtype(
    type_code: int, length: int, scale: int, flags: int, charset: int
) -> pl.DataType:
    """The Polars dtype of a result column as the server declares it.

    TINYINT(1) stays an integer: MySQL has no boolean type, and nothing in the metadata
    proves a TINYINT(1) holds only 0 and 1.
    """
    if type_code in _INTEGERS:
        bits = _INTEGERS[type_code]
        signed = {8: pl.Int8, 16: pl.Int16, 32: pl.Int32, 64: pl.Int64}
        unsigned = {8: pl.UInt8, 16: pl.UInt16, 32: pl.UInt32, 64: pl.UInt64}
        return (unsigned if flags & _UNSIGNED else signed)[bits]()
    if type_code in (0, 246):  # DECIMAL: the length counts the point and the sign
        digits = length - (1 if scale else 0) - (0 if flags & _UNSIGNED else 1)
        return pl.Decimal(max(digits, 1), scale)
    if type_code == 4:
        return pl.Float32()
    if type_code == 5:
        return pl.Float64()
    if type_code in (10, 14):
        return pl.Date()
    if type_code in (7, 12):  # TIMESTAMP (read in the session's zone: UTC), DATETIME
        unit = "ms" if scale <= 3 else "us"
        return pl.Datetime(unit, "UTC" if type_code == 7 else None)
    if type_code == 11:
        return pl.Duration("us")  # TIME spans -838:59:59 to 838:59:59
    if type_code == 13:
        return pl.Int16()  # YEAR
    if type_code == 16:
        return pl.UInt64()  # BIT(n)
    if type_code in _TEXT:
        return pl.Binary() if charset == _BINARY_CHARSET else pl.String()
    return pl.String()


def result_fields(uri: str, sql: str) -> list[tuple[str, pl.DataType]]:
    """Each column of ``sql`` (which returns no row) with its declared dtype."""
    pymysql = import_extra("pymysql")

    parts = urlsplit(uri)
    connection = pymysql.connect(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")) or None,
        # As connectorx reads the rows: PyMySQL's default ("TLS if offered") would load
        # the system's certificates on every scan_db() call, 35 ms of its planning.
        ssl_disabled=True,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            fields: Any = cursor._result.fields  # type: ignore[attr-defined]
            return [
                (f.name, declared_dtype(f.type_code, f.length, f.scale, f.flags, f.charsetnr))
                for f in fields
            ]
    finally:
        connection.close()


def read_batches(uri: str, session: str | None, sql: str) -> Iterator[pa.RecordBatch]:
    """``sql``'s rows as Arrow batches, read by connectorx after the ``session``
    statement."""
    connectorx = import_extra("connectorx")

    reader = connectorx.read_sql(
        "mysql://" + uri.split("://", 1)[1],  # connectorx knows MariaDB as mysql://
        sql,
        return_type="arrow_stream",
        batch_size=_BATCH_ROWS,
        pre_execution_query=[session] if session else None,
    )
    yield from reader
