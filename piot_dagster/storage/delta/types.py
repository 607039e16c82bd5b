"""Delta Lake's types for a Polars frame: what each column is stored as, and back.

Delta has no unsigned integers, one timestamp unit (microseconds) and one zone for zoned
timestamps (UTC instants). A column is stored as the nearest Delta type that holds every
value exactly, and its own Polars dtype is recorded in the table's field metadata, so a
read gives back the dtype written. A value Delta cannot hold exactly (a nanosecond, a
``UInt64`` above ``Int64``'s range) is an error, never rounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

__all__ = [
    "PARTITION_COLUMN",
    "Column",
    "arrow_schema",
    "logical_schema",
    "restore",
    "stored",
    "to_stored",
]

# The Delta partition column holding each row's Dagster partition key.
PARTITION_COLUMN = "dagster_partition"
# Field metadata keys recording what a stored column was in Polars.
_UNIT = "piot.time_unit"
_ZONE = "piot.time_zone"
_DTYPE = "piot.dtype"
_WIDER: dict[pl.DataType, pl.DataType] = {
    pl.UInt8(): pl.Int16(),
    pl.UInt16(): pl.Int32(),
    pl.UInt32(): pl.Int64(),
    pl.UInt64(): pl.Int64(),
}
_RECORDED = {"UInt8": pl.UInt8, "UInt16": pl.UInt16, "UInt32": pl.UInt32, "UInt64": pl.UInt64}
_RECORDED["Categorical"] = pl.Categorical
# What Delta has no type for, and what to do instead.
_NO_DELTA_TYPE = {
    pl.Time: "Delta Lake has no time-of-day type; store it as a String, or as an Int64 of "
    "microseconds since midnight",
    pl.Duration: "Delta Lake has no interval type; store it as an Int64 of the unit you need",
    pl.Null: "a column of only nulls has no Delta type; cast it to the type it will hold",
    pl.Object: "Python objects cannot be stored in Delta Lake",
    pl.Enum: "Delta Lake has no enum type; cast it to String or Categorical",
    pl.Array: "Delta Lake has no fixed-size arrays; cast it to a List",
}


@dataclass(frozen=True)
class Column:
    """How one column is stored: its Delta-ready dtype and the metadata restoring its own."""

    name: str
    dtype: pl.DataType
    stored: pl.DataType
    metadata: Mapping[str, str]


def stored(schema: pl.Schema) -> list[Column]:
    """How each column of ``schema`` is stored; a dtype Delta cannot hold is a
    ``TypeError`` naming the column and what to cast it to."""
    return [_column(name, dtype) for name, dtype in schema.items()]


def _column(name: str, dtype: pl.DataType) -> Column:
    if isinstance(dtype, pl.Datetime):
        metadata = {}
        if dtype.time_unit != "us":
            metadata[_UNIT] = dtype.time_unit
        if dtype.time_zone not in (None, "UTC"):
            metadata[_ZONE] = dtype.time_zone
        return Column(name, dtype, pl.Datetime("us", "UTC" if dtype.time_zone else None), metadata)
    if dtype in _WIDER:
        return Column(name, dtype, _WIDER[dtype], {_DTYPE: str(dtype)})
    if isinstance(dtype, pl.Categorical):
        return Column(name, dtype, pl.String(), {_DTYPE: "Categorical"})
    _check_plain(name, dtype)
    return Column(name, dtype, dtype, {})


def _check_plain(name: str, dtype: pl.DataType) -> None:
    """Refuse a dtype with no exact Delta equivalent, nested ones included."""
    for kind, why in _NO_DELTA_TYPE.items():
        if isinstance(dtype, kind):
            raise TypeError(f"column {name!r} is {dtype}: {why}")
    inner = [f.dtype for f in dtype.fields] if isinstance(dtype, pl.Struct) else []
    if isinstance(dtype, pl.List):
        inner = [dtype.inner]  # type: ignore[list-item]
    for child in inner:
        if _column(name, child).stored != child:  # type: ignore[arg-type]
            raise TypeError(
                f"column {name!r} is {dtype}, which nests {child}: Delta Lake cannot hold it "
                f"exactly there; cast the nested values (to Int64, or Datetime('us'))"
            )
        _check_plain(name, child)  # type: ignore[arg-type]


def to_stored(query: pl.LazyFrame, columns: list[Column]) -> pl.LazyFrame:
    """``query`` with each column converted as ``columns`` say; a value that would change
    is a ``ValueError`` naming the column. Only columns that can hold such a value (UInt64,
    nanosecond timestamps) cost a pass over ``query`` to look for one, streamed."""
    checks = {}
    for column in columns:
        values = pl.col(column.name)
        if isinstance(column.dtype, pl.Datetime) and column.dtype.time_unit == "ns":
            checks[column.name] = (
                (values.dt.timestamp("ns") % 1000 != 0).any(),
                f"column {column.name!r} holds timestamps with nanoseconds, which Delta "
                f"Lake (microseconds) cannot keep; round it with .dt.truncate('1us') or "
                f"cast it to Datetime('us') first",
            )
        elif column.dtype == pl.UInt64:
            checks[column.name] = (
                (values > 2**63 - 1).any(),
                f"column {column.name!r} holds UInt64 values above {2**63 - 1}, which Delta "
                f"Lake (signed integers only) cannot store; cast it to Decimal(20, 0)",
            )
    if checks:
        found = query.select(**{name: test for name, (test, _) in checks.items()}).collect(
            engine="streaming"
        )
        for name, (_, message) in checks.items():
            if found[name].item():
                raise ValueError(message)
    return query.select(_converted(c) for c in columns)


def _converted(column: Column) -> pl.Expr:
    expr = pl.col(column.name)
    if column.stored == column.dtype:
        return expr
    if isinstance(column.dtype, pl.Datetime) and column.dtype.time_zone is not None:
        expr = expr.dt.convert_time_zone("UTC")
    return expr.cast(column.stored, strict=True)


def arrow_schema(columns: list[Column]) -> pa.Schema:
    """The stored columns as an Arrow schema, each field carrying its metadata."""
    plain = pl.DataFrame(schema={c.name: c.stored for c in columns}).to_arrow().schema
    return pa.schema(
        field.with_metadata(dict(column.metadata)) if column.metadata else field
        for field, column in zip(plain, columns, strict=True)
    )


def logical_schema(table_schema: pa.Schema) -> pl.Schema:
    """The Polars dtypes a table's columns were written as (its field metadata read)."""
    plain = pl.DataFrame(table_schema.empty_table()).schema
    fields = {name: _metadata(table_schema.field(name)) for name in plain}
    return pl.Schema({name: _logical(dtype, fields[name]) for name, dtype in plain.items()})


def restore(table_schema: pa.Schema) -> list[pl.Expr]:
    """Expressions turning the columns of a scan of the table that were stored as another
    dtype back into the dtype written (the others need none, and keep every pushdown)."""
    logical = logical_schema(table_schema)
    exprs = []
    for name, dtype in logical.items():
        if not _metadata(table_schema.field(name)):
            continue
        expr = pl.col(name)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC"):
            expr = expr.dt.convert_time_zone(dtype.time_zone)
        exprs.append(expr.cast(dtype))
    return exprs


def _metadata(field: pa.Field) -> dict[str, str]:
    return {
        key.decode(): value.decode()
        for key, value in (field.metadata or {}).items()
        if key.decode() in (_UNIT, _ZONE, _DTYPE)
    }


def _logical(dtype: pl.DataType, metadata: Mapping[str, str]) -> pl.DataType:
    if isinstance(dtype, pl.Datetime):
        zone = metadata.get(_ZONE, dtype.time_zone)
        return pl.Datetime(metadata.get(_UNIT, "us"), zone)  # type: ignore[arg-type]
    if _DTYPE in metadata:
        return _RECORDED[metadata[_DTYPE]]()
    return dtype
