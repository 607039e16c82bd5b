"""A partition key as the IO manager stores it: its time window, the key of its other
dimension if any, and where its file goes.

A time partition ``2024-01-05`` of asset ``trades`` is ``trades/2024-01-05.parquet``. A
cell of a ``MultiPartitionsDefinition`` (a time dimension times a static or dynamic one,
say ``symbol``) is ``trades/symbol=SYM01/2024-01-05.parquet``: Hive's layout, so
``pl.scan_parquet("trades/", hive_partitioning=True)`` and DuckDB's
``read_parquet('trades/*/*.parquet', hive_partitioning = true)`` read the asset as one
table with a ``symbol`` column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

__all__ = ["Cell", "cell_filter", "cell_of", "check_partitions"]


@dataclass(frozen=True)
class Cell:
    """One partition key, placed: ``key`` as Dagster spells it (``2024-01-05|SYM01``), its
    time window, the folders under the asset's own (``symbol=SYM01``), the file's name
    (the time key) and the other dimension's key by dimension name."""

    key: str
    window: tuple[dt.datetime, dt.datetime]
    folders: tuple[str, ...] = ()
    name: str = ""
    values: Mapping[str, str] = field(default_factory=dict)


def check_partitions(partitions_def: object) -> None:
    """Refuse partitions the IO manager cannot place: not time windows, or a
    MultiPartitionsDefinition without a time dimension."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        if partitions_def.has_time_window_dimension:
            return
        raise TypeError(
            "multi-partitions need a time dimension (a TimeWindowPartitionsDefinition, such "
            "as piot_dagster.time_partitions(...)) beside the static or dynamic one"
        )
    raise TypeError(
        f"partitions must be time windows (any TimeWindowPartitionsDefinition, such as "
        f"piot_dagster.time_partitions(...)), or a time dimension times another in a "
        f"MultiPartitionsDefinition, not {type(partitions_def).__name__}"
    )


def cell_of(partitions_def: dg.PartitionsDefinition, key: str) -> Cell:
    """Where ``key`` of ``partitions_def`` (checked by :func:`check_partitions`) lives."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        parts = (
            key.keys_by_dimension
            if isinstance(key, dg.MultiPartitionKey)
            else partitions_def.get_partition_key_from_str(key).keys_by_dimension
        )
        time = partitions_def.time_window_dimension
        window = time.partitions_def.time_window_for_partition_key(parts[time.name])  # type: ignore[attr-defined]
        values = {name: value for name, value in parts.items() if name != time.name}
        folders = tuple(f"{name}={value}" for name, value in values.items())
        return Cell(str(key), (window.start, window.end), folders, parts[time.name], values)
    window = partitions_def.time_window_for_partition_key(key)  # type: ignore[attr-defined]
    return Cell(str(key), (window.start, window.end), (), str(key))


def cell_filter(
    cells: Sequence[Cell], columns: Mapping[str, str] | None, schema: pl.Schema, asset: str
) -> dict[str, pl.Expr | None]:
    """For each cell, the filter on its other dimension's column (None where the asset
    maps none: its frame then is the data of the run's one key on that dimension)."""
    columns = columns or {}
    filters: dict[str, pl.Expr | None] = {}
    for dimension in {name for cell in cells for name in cell.values}:
        keys = sorted({cell.values[dimension] for cell in cells})
        column = columns.get(dimension)
        if column is None and len(keys) > 1:
            raise ValueError(
                f"asset {asset}: the run covers {len(keys)} keys of dimension {dimension!r} "
                f"({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}) but the asset "
                f"maps no column to it, so every cell would store the same rows: add "
                f"metadata={{'partition_columns': {{{dimension!r}: '<column>'}}}}, or run one "
                f"key of {dimension!r} at a time"
            )
        if column is not None and column not in schema:
            raise ValueError(
                f"asset {asset}: partition_columns maps dimension {dimension!r} to column "
                f"{column!r}, which its frame lacks; its columns are {schema.names()}"
            )
    for cell in cells:
        condition: pl.Expr | None = None
        for dimension, key in cell.values.items():
            column = columns.get(dimension)
            if column is None:
                continue
            dtype = schema[column]
            try:
                value = pl.Series([key]).cast(dtype, strict=True)[0]
            except (pl.exceptions.PolarsError, ValueError):
                raise ValueError(
                    f"asset {asset}: partition {cell.key}: the key {key!r} of dimension "
                    f"{dimension!r} is not a value of column {column!r} ({dtype}); map the "
                    f"dimension to a column that holds its keys"
                ) from None
            equal = pl.col(column) == pl.lit(value, dtype=dtype)
            condition = equal if condition is None else condition & equal
        filters[cell.key] = condition
    return filters
