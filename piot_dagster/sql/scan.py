"""``scan_db``: a lazy Polars source over a SQL query, with sound pushdown."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source
from sqlglot import exp

from piot_dagster.engine.frames import slices
from piot_dagster.engine.plan_reader import predicate_expr
from piot_dagster.engine.statements import STATEMENT_LOGGER
from piot_dagster.sql.connection import Connection
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
    reader), opened in whichever process collects, so the plan runs in Ray workers too.

    Parameters
    ----------
    query
        One SELECT statement in the database's dialect.
    connection
        ``sqlite:///path``, ``duckdb:///path`` (opened read-only) or
        ``postgresql://user:password@host:port/db`` (also ``postgres://``).
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
    conn = Connection.parse(connection)
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
        declared = pl.Schema({name: schema.get(name, dtype) for name, dtype in declared.items()})
    source = _SqlSource(conn, parsed, declared)
    return register_io_source(
        source,
        schema=declared,
        explain_name="piot.scan_db",
        explain_detail=f"{conn.redacted}: {query}",
    )


class _SqlSource:
    """The Polars IO source behind ``scan_db``: plain values only, so it pickles."""

    def __init__(self, connection: Connection, query: exp.Query, schema: pl.Schema) -> None:
        self.connection = connection
        self.query = query
        self.schema = schema

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
            pushed = to_sql_filter(typed, self.schema, self.dialect)
            where = None if pushed is None else pushed[0]
        return wrap_query(self.query, self.columns(with_columns), where, n_rows, self.dialect)

    def columns(self, with_columns: list[str] | None) -> list[str]:
        if with_columns is None:
            return self.schema.names()
        # A query that needs no column (a bare row count) still needs rows: read one.
        return with_columns or self.schema.names()[:1]

    @property
    def dialect(self) -> str:
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
        wanted = pl.Schema({c: self.schema[c] for c in self.columns(with_columns)})
        for batch in self.batches(sql):
            frame = _conform(pl.from_arrow(_without_extensions(batch)), wanted)  # type: ignore[arg-type]
            if predicate is not None:
                frame = frame.filter(predicate)
            if with_columns == []:
                frame = frame.select([])
            yield from slices(frame, batch_size)

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        with self.connection.open() as conn:
            yield from self.connection.stream(
                f"query {sql!r} failed", _execute(conn, self.dialect, sql)
            )


# Rows per Arrow batch read from the database; Polars' smaller batch_size is served by
# zero-copy slices, since converting and filtering a batch has a fixed cost.
_READ_BATCH_ROWS = 1_000_000


def _execute(conn: Any, dialect: str, sql: str) -> Iterator[pa.RecordBatch]:
    if dialect == "duckdb":
        yield from conn.sql(sql).to_arrow_reader(_READ_BATCH_ROWS)
        return
    # The cursor owns the stream: keep it open until the last batch is read.
    with conn.cursor() as cursor:
        if dialect == "sqlite":
            # ADBC's SQLite driver reads 1,024 rows a batch by default.
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(_READ_BATCH_ROWS)}
            )
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()


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
        if have == pl.String and dtype == pl.Date:
            casts.append(column.str.slice(0, 10).str.to_date("%Y-%m-%d"))
        elif have == pl.String and isinstance(dtype, pl.Datetime):
            casts.append(
                column.str.to_datetime(time_unit=dtype.time_unit, time_zone=dtype.time_zone)
            )
        else:
            casts.append(column.cast(dtype))
    return frame.with_columns(casts) if casts else frame
