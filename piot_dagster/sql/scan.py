"""``scan_db``: a lazy Polars source over a SQL query, with sound pushdown."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

from piot_dagster.engine.frames import slices
from piot_dagster.engine.plan_reader import predicate_expr
from piot_dagster.engine.statements import STATEMENT_LOGGER
from piot_dagster.sql.connection import Connection
from piot_dagster.sql.dialects import Dialect
from piot_dagster.sql.pushdown import parse_query, to_sql_filter, wrap_query
from piot_dagster.sql.schema import discover_schema

__all__ = ["scan_db"]


def scan_db(
    query: str,
    *,
    connection: str,
    schema: Mapping[str, pl.DataType] | None = None,
) -> pl.LazyFrame:
    """A LazyFrame over the result of a SQL ``query``.

    Nothing is read until collect. Polars' projection and predicate pushdown reach the
    database: the query runs wrapped as ``SELECT <columns> FROM (<query>) AS q WHERE
    <filter>``, where the filter is a sound SQL translation of what Polars pushed (the
    database may return more rows, never fewer; the full Polars predicate is re-applied).
    Rows stream back as Arrow batches (ADBC for SQLite and PostgreSQL, DuckDB's own
    reader, connectorx for MySQL, arrow-odbc for ODBC), opened in whichever process
    collects, so the plan runs in Ray workers too. The query is sent as written.

    Parameters
    ----------
    query
        One SELECT statement in the database's dialect.
    connection
        ``sqlite:///path``, ``duckdb:///path`` (opened read-only) or
        ``postgresql://user:password@host:port/db`` (also ``postgres://``),
        ``mysql://user:password@host:port/db`` (also ``mariadb://``), or an ODBC
        connection string, ``Driver={PostgreSQL Unicode};Server=host;Uid=u;Pwd=p;``,
        whose database (PostgreSQL, MySQL/MariaDB, SQLite, SQL Server, Oracle,
        Snowflake, or a generic one that gets no pushdown it cannot prove) the driver
        names.
    schema
        Dtypes that override the database's declared types, by column name.

    Examples
    --------
    >>> import piot_dagster
    >>> lf = piot_dagster.scan_db(
    ...     "SELECT date, symbol, price FROM trades", connection="sqlite:///trades.db"
    ... )  # doctest: +SKIP
    >>> lf.filter(pl.col("symbol") == "AAPL").collect()  # doctest: +SKIP
    """
    conn = Connection.parse(connection).resolved()
    parsed = parse_query(query, conn.dialect)
    declared = conn.call(f"query {query!r} failed", lambda: discover_schema(conn, parsed))
    if schema is not None:
        if not isinstance(schema, Mapping):
            raise TypeError(f"schema must be a mapping of column name to dtype, not {schema!r}")
        unknown = [name for name in schema if name not in declared]
        if unknown:
            raise ValueError(
                f"schema names columns {unknown} that the query does not return; "
                f"its columns are {declared.names()}"
            )
    overridden = pl.Schema(
        {name: (schema or {}).get(name, dtype) for name, dtype in declared.items()}
    )
    source = _SqlSource(conn, parsed, overridden, declared)
    return register_io_source(
        source,
        schema=overridden,
        explain_name="piot.scan_db",
        explain_detail=f"{conn.redacted} ({conn.dialect.name}): {query}",
    )


class _SqlSource:
    """The Polars IO source behind ``scan_db``: plain values only, so it pickles."""

    def __init__(
        self, connection: Connection, query: str, schema: pl.Schema, declared: pl.Schema
    ) -> None:
        self.connection = connection
        self.query = query
        # What the frames are cast to (``schema=`` overrides applied), and what readers
        # that must be told types (arrow-odbc) read: the database's own.
        self.schema = schema
        self.declared = declared

    def sql(
        self, with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None
    ) -> str:
        """The SQL that reads what Polars asked for.

        Polars asks for the first ``n_rows`` *before* the predicate, so with ``n_rows``
        nothing is pushed but the LIMIT: ``head(10).filter(p)`` must not become
        ``WHERE p LIMIT 10``.
        """
        where = None
        if predicate is not None and n_rows is None:
            typed = predicate_expr(predicate, self.schema)
            pushed = to_sql_filter(typed, self.pushable, self.dialect)
            where = None if pushed is None else pushed[0]
        return wrap_query(self.query, self.columns(with_columns), where, n_rows, self.dialect)

    @property
    def pushable(self) -> pl.Schema:
        """The columns a filter may be pushed on: those whose dtype was not overridden (the
        database compares its own values, which a cast in Polars could order otherwise)."""
        return pl.Schema({c: t for c, t in self.declared.items() if self.schema[c] == t})

    def columns(self, with_columns: list[str] | None) -> list[str]:
        if with_columns is None:
            return self.schema.names()
        # A query that needs no column (a bare row count) still needs rows: read one.
        return with_columns or self.schema.names()[:1]

    @property
    def dialect(self) -> Dialect:
        return self.connection.dialect

    def __call__(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        sql = self.sql(with_columns, predicate, n_rows)
        # Recorded in a partition's metadata by the engine's writing tasks.
        STATEMENT_LOGGER.debug("%s", sql)
        columns = self.columns(with_columns)
        wanted = pl.Schema({c: self.schema[c] for c in columns})
        remaining = n_rows
        for batch in self.connection.read(sql, pl.Schema({c: self.declared[c] for c in columns})):
            frame = _conform(pl.from_arrow(_without_extensions(batch)), wanted)  # type: ignore[arg-type]
            if remaining is not None:
                # A dialect without LIMIT sends every row: stop reading at n_rows.
                frame, remaining = frame.head(remaining), remaining - min(remaining, frame.height)
            if predicate is not None:
                frame = frame.filter(predicate)
            if with_columns == []:
                frame = frame.select([])
            yield from slices(frame, batch_size)
            if remaining == 0:
                return


def _without_extensions(batch: pa.RecordBatch) -> pa.RecordBatch:
    """ADBC ships types Arrow lacks (PostgreSQL's NUMERIC) as extension types over their
    text: keep the text, which ``_conform`` casts."""
    if not any(isinstance(f.type, pa.BaseExtensionType) for f in batch.schema):
        return batch
    columns = [c.storage if isinstance(c.type, pa.BaseExtensionType) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """``frame`` cast to ``schema``: drivers that infer types from values (ADBC's SQLite
    returns dates as text, integers for booleans) give what the database declared."""
    casts = []
    for name, dtype in schema.items():
        have = frame.schema[name]
        if have == dtype:
            continue
        column = pl.col(name)
        if (
            isinstance(have, pl.Datetime)
            and isinstance(dtype, pl.Datetime)
            and have.time_zone != dtype.time_zone
            and have.time_zone is None
        ):
            # Readers that know no zones (ODBC, connectorx) give UTC wall clock: the
            # session was set to UTC.
            casts.append(
                column.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone).cast(dtype)
            )  # type: ignore[arg-type]
        elif have == pl.String and dtype == pl.Date:
            casts.append(column.str.slice(0, 10).str.to_date("%Y-%m-%d"))
        elif have == pl.String and isinstance(dtype, pl.Datetime):
            casts.append(
                column.str.to_datetime(time_unit=dtype.time_unit, time_zone=dtype.time_zone)
            )
        else:
            casts.append(column.cast(dtype))
    return frame.with_columns(casts) if casts else frame
