"""ODBC connection strings, as the peer (polars-io-tools) takes them:
``Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=u;Pwd=p;``.

pyodbc asks the driver which database is behind it (``SQL_DBMS_NAME``) and what the
query's columns are declared as; arrow-odbc, the peer's own reader, reads the rows as
Arrow batches into the schema we give it, never the one it would infer (the PostgreSQL
driver reports DOUBLE PRECISION as float32; the SQLite driver drops fractions of a
second).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa

from piot_dagster.errors import MissingExtraError
from piot_dagster.extras import import_extra

__all__ = [
    "arrow_schema",
    "described_dtype",
    "looks_like_odbc",
    "open_pyodbc",
    "read_batches",
    "redact",
    "settings",
]

# key=value pairs; a value in braces may hold ';' and '}}' for a literal '}'.
_PAIR = re.compile(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)")
_SECRET_KEYS = {"pwd", "password"}
# Rows per batch, and the largest text or binary value arrow-odbc makes room for where the
# driver reports a larger or no length (LONGTEXT, JSON); arrow-odbc shrinks a batch to stay
# under _BATCH_BYTES a batch (1,024 rows of one such column).
_BATCH_ROWS = 100_000
_MAX_VALUE_BYTES = 65_536
_BATCH_BYTES = 64 * 2**20
_TOO_LARGE = "too large to be written into the allocated buffer"


def looks_like_odbc(text: str) -> bool:
    """Whether ``text`` is an ODBC connection string (it names a driver or a DSN)."""
    return "://" not in text.split(";", 1)[0] and bool(
        {"driver", "dsn", "filedsn"} & settings(text).keys()
    )


def settings(text: str) -> dict[str, str]:
    """The string's key/value pairs, keys lowercased, braces around values removed.

    Examples
    --------
    >>> settings("Driver={MariaDB Unicode};Server=db;Pwd={a;b}")
    {'driver': 'MariaDB Unicode', 'server': 'db', 'pwd': 'a;b'}
    """
    found = {}
    for match in _PAIR.finditer(text):
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].replace("}}", "}")
        found[key] = value
    return found


def redact(text: str) -> str:
    """The connection string with its password values replaced by ``***``."""

    def hide(match: re.Match[str]) -> str:
        if match.group(1).lower() not in _SECRET_KEYS:
            return match.group(0)
        # The value's own span: the same text may also appear in the key (Pwd=P).
        start, end = match.start(2) - match.start(0), match.end(2) - match.start(0)
        return match.group(0)[:start] + "***" + match.group(0)[end:]

    return _PAIR.sub(hide, text)


def open_pyodbc(text: str) -> Any:
    """A pyodbc connection (autocommit, so a pooled read sits in no transaction). A
    driver that is not installed is named, with the ones that are."""
    try:
        pyodbc = import_extra("pyodbc")
    except MissingExtraError:  # pyodbc itself is missing: the [odbc] extra installs it
        raise
    except ImportError as exc:  # libodbc.so.2 missing: the wheel cannot load
        raise ImportError(
            f"ODBC connection strings need unixODBC ({exc}); install it, e.g. "
            "`apt-get install unixodbc`, and the database's ODBC driver"
        ) from None
    driver = settings(text).get("driver")
    if driver is not None and driver not in pyodbc.drivers():
        raise LookupError(
            f"the ODBC driver {driver!r} is not installed; installed drivers: "
            f"{pyodbc.drivers() or 'none'} (Debian: odbc-postgresql, odbc-mariadb, "
            "libsqliteodbc)"
        )
    return pyodbc.connect(text, autocommit=True)


def described_dtype(type_code: type, precision: int | None, scale: int | None) -> pl.DataType:
    """The Polars dtype for a column as the driver describes it (SQLDescribeCol: its SQL
    type, size and digits), where the database's catalog is not asked."""
    if type_code is bool:
        return pl.Boolean()
    if type_code is int:
        # Precision 10 is INT, signed or not: only Int64 holds both.
        return pl.Int64()
    if type_code is float:
        return pl.Float32() if (precision or 53) <= 7 else pl.Float64()
    if type_code is decimal.Decimal:
        return pl.Decimal(precision or 38, scale or 0)
    if type_code is dt.datetime:
        return pl.Datetime("us")
    if type_code is dt.date:
        return pl.Date()
    if type_code is dt.time:
        return pl.Time()
    if type_code in (bytes, bytearray):
        return pl.Binary()
    return pl.String()


def arrow_schema(schema: pl.Schema) -> pa.Schema:
    """The Arrow types arrow-odbc is asked for: what the database declared, with zoned
    times read as UTC wall clock (the session is set to UTC) and zoned afterwards."""
    fields = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Datetime):
            arrow_type: pa.DataType = pa.timestamp("us")
        elif isinstance(dtype, pl.Decimal):
            arrow_type = pa.decimal128(dtype.precision or 38, dtype.scale)
        else:
            arrow_type = _ARROW.get(type(dtype), pa.string())
        fields.append(pa.field(name, arrow_type))
    return pa.schema(fields)


_ARROW: dict[type[pl.DataType], pa.DataType] = {
    pl.Boolean: pa.bool_(),
    pl.Int8: pa.int8(),
    pl.Int16: pa.int16(),
    pl.Int32: pa.int32(),
    pl.Int64: pa.int64(),
    pl.UInt8: pa.uint8(),
    pl.Float32: pa.float32(),
    pl.Float64: pa.float64(),
    pl.Date: pa.date32(),
    pl.Time: pa.time64("us"),
    pl.Binary: pa.binary(),
}


def read_batches(
    text: str, session: str | None, sql: str, schema: pl.Schema
) -> Iterator[pa.RecordBatch]:
    """``sql``'s rows as Arrow batches of ``schema``, on a connection that first runs the
    ``session`` statement.

    A value that does not fit its buffer is an error, never a truncated value: arrow-odbc
    refuses one the driver says is longer, and MariaDB's driver, which reports a capped
    value's length as the cap, is caught by the check that no value fills its buffer.
    """
    connection = import_extra("arrow_odbc").connect(text)
    if session is not None:
        connection.execute(session)
    reader = connection.read_arrow_batches(
        sql,
        batch_size=_BATCH_ROWS,
        schema=arrow_schema(schema),
        max_text_size=_MAX_VALUE_BYTES,
        max_binary_size=_MAX_VALUE_BYTES,
        # arrow-odbc keeps two batches' buffers (it fetches ahead): 64 MiB each, not 512,
        # which a TEXT column's 64 KiB a row would fill (1.6 GB growth for 2M rows).
        max_bytes_per_batch=_BATCH_BYTES,
    )
    variadic = [n for n, t in schema.items() if t in (pl.String, pl.Binary)]
    while True:
        try:
            batch = next(reader)
        except StopIteration:
            return
        except Exception as exc:
            if _TOO_LARGE not in str(exc):
                raise
            failure = _too_long(f"the driver says: {exc}")
            break
        full = [n for n in variadic if _longest(batch.column(n)) >= _MAX_VALUE_BYTES]
        if full:
            failure = _too_long(f"columns {full} hold values of {_MAX_VALUE_BYTES:,} bytes or more")
            break
        yield batch
    raise failure


def _longest(column: pa.Array) -> int:
    import pyarrow.compute as pc

    return pc.max(pc.binary_length(column)).as_py() or 0


def _too_long(detail: str) -> ValueError:
    return ValueError(
        f"a value is longer than ODBC reads here ({detail}); read it by the database's URI "
        "(postgresql://, mysql://), raise the driver's own limit in the connection string "
        "(psqlODBC: MaxVarcharSize=, MaxLongVarcharSize=), or select a prefix of it in the "
        f"query (at most {_MAX_VALUE_BYTES - 1:,} bytes)"
    )
