"""The one check of a date column, shared by ``execute_on_ray``, the IO managers and
``partitioned_query``: a missing or wrongly typed column is the same error, in the same
words, whichever of them finds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from piot_dagster.errors import DateColumnError, DateColumnTypeError

__all__ = ["check_date_column"]


def check_date_column(
    columns: Mapping[str, pl.DataType] | Sequence[str],
    date_column: object,
    *,
    time_unit: str | None = None,
) -> pl.DataType | None:
    """The dtype of ``date_column`` among ``columns`` (a schema), checked to be a Date or
    a Datetime, one holding hours when ``time_unit`` is ``"hourly"``. Given only the names
    (a query's text, read without the database), only its presence is checked, and None
    is returned.

    Raises :class:`DateColumnError` (a ``ValueError``) when it is not among them, and
    :class:`DateColumnTypeError` (a ``TypeError`` too) when it has another dtype.
    """
    names = list(columns)
    if not isinstance(date_column, str) or date_column not in names:
        raise DateColumnError(
            f"date_column {date_column!r} is not a column of the query, whose columns are "
            f"{names}; name one of them, or select it in the query"
        )
    if not isinstance(columns, Mapping):
        return None
    dtype = columns[date_column]
    if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        raise DateColumnTypeError(
            f"date_column {date_column!r} is {dtype}; it must be a Date or Datetime column: "
            f"cast it first, in the query or e.g. with pl.col({date_column!r}).str.to_date()"
        )
    if time_unit == "hourly" and dtype == pl.Date:
        raise DateColumnTypeError(
            f"time_unit 'hourly' needs a Datetime date_column; {date_column!r} is a Date "
            f"column, which holds whole days: use 'daily' or a coarser unit"
        )
    return dtype
