"""``execute_on_ray``: run a LazyFrame on Ray, one task per calendar period."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl
from polars.io.plugins import register_io_source
from tqdm.auto import tqdm

from piot_dagster.engine.date_column import check_date_column
from piot_dagster.engine.frames import slices
from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.periods import TIME_UNITS, Period, TimeUnit, split_periods, window_filter
from piot_dagster.engine.plan_reader import reads_python_dataset
from piot_dagster.engine.ranges import column_unit_ns, plan_range, predicate_range
from piot_dagster.engine.ray_tasks import (
    PeriodTask,
    ShippedPlan,
    check_remote_options,
    require_ray,
    run,
)
from piot_dagster.engine.transport import RETURN_AS, ReturnAs
from piot_dagster.errors import UnboundedRangeError

__all__ = ["execute_on_ray"]


def execute_on_ray(
    lf: pl.LazyFrame,
    *,
    date_column: str,
    time_unit: TimeUnit,
    return_as: ReturnAs = "arrow",
    remote_options: Mapping[str, Any] | None = None,
    max_concurrency: int = 100,
) -> pl.LazyFrame:
    """Run ``lf`` on Ray, split into one task per calendar period of ``date_column``.

    Nothing runs until the result is collected. Each period's task filters the plan to
    its own half-open window ``[start, end)`` (and to the predicate of any filter applied
    to the result), so a source below, such as :func:`piot_dagster.scan_db`, reads only
    that slice. The results come back in chronological order.

    The range comes from filters on ``date_column``, inside ``lf`` or applied to the
    result; it must be bounded on both sides.

    Parameters
    ----------
    lf
        The query to run.
    date_column
        A ``Date`` or ``Datetime`` column (any time unit, naive or tz-aware). Periods are
        counted in its time zone; naive columns count as UTC.
    time_unit
        ``"hourly"``, ``"daily"``, ``"weekly"`` (from Monday, ISO 8601), ``"monthly"`` or
        ``"yearly"``: one task per period of the column's zone. ``"hourly"`` needs a
        Datetime column; a day that falls back has 25 hours.
    return_as
        How workers ship results: ``"arrow"`` (zero-copy on one node), ``"ipc"`` or
        ``"parquet"``.
    remote_options
        Passed to each Ray task's ``.options(...)``, e.g. ``{"num_cpus": 2}``.
    max_concurrency
        The most tasks in flight at once. Each sends its rows back as they come, in
        chunks of about 8 MiB, and pauses while two of them wait unread: finished but
        unread results never take more than ``max_concurrency * 2`` chunks of Ray's
        object store, and the driver reads one chunk at a time, in period order. So
        ``.sink_parquet(...)`` (or ``collect_batches()``) of the result holds a few
        chunks, however large the periods; ``collect()`` holds the result.

    Raises
    ------
    RuntimeError
        Ray is not initialised (also checked again at collect).
    UnboundedRangeError
        At collect: the filters do not bound ``date_column`` on both sides.

    Examples
    --------
    >>> import datetime as dt
    >>> import polars as pl
    >>> import ray
    >>> import piot_dagster  # registers the .piot namespace
    >>> ray.init(address="local", num_cpus=2, include_dashboard=False)  # doctest: +SKIP
    >>> lf = pl.LazyFrame({"date": [dt.date(2024, 1, 31), dt.date(2024, 2, 1)], "v": [1, 2]})
    >>> (
    ...     lf.filter(pl.col("date").is_between(dt.date(2024, 1, 1), dt.date(2024, 3, 31)))
    ...     .piot.execute_on_ray(date_column="date", time_unit="monthly")
    ...     .collect()
    ... )  # doctest: +SKIP
    shape: (2, 2)
    """
    if not isinstance(lf, pl.LazyFrame):
        raise TypeError(f"execute_on_ray expects a polars LazyFrame, not {type(lf).__name__}")
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, not {time_unit!r}")
    if return_as not in RETURN_AS:
        raise ValueError(f"return_as must be one of {RETURN_AS}, not {return_as!r}")
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise TypeError(f"max_concurrency must be an int, not {type(max_concurrency).__name__}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
    options = check_remote_options(remote_options)
    require_ray()
    schema = lf.collect_schema()
    check_date_column(schema, date_column, time_unit=time_unit)
    source = _PeriodSource(
        plan=lf,
        column=date_column,
        schema=schema,
        time_unit=time_unit,
        return_as=return_as,
        options=options,
        max_concurrency=max_concurrency,
        plan_values=plan_range(lf, date_column),
    )
    return register_io_source(
        source,
        schema=schema,
        explain_name="piot.execute_on_ray",
        explain_detail=(
            f"date_column={date_column!r}, time_unit={time_unit!r}, return_as={return_as!r}, "
            f"max_concurrency={max_concurrency}"
        ),
    )


class _PeriodSource:
    """The Polars IO source behind ``execute_on_ray``; picklable, so the plan is too."""

    def __init__(
        self,
        *,
        plan: pl.LazyFrame,
        column: str,
        schema: pl.Schema,
        time_unit: TimeUnit,
        return_as: ReturnAs,
        options: dict[str, Any],
        max_concurrency: int,
        plan_values: IntervalSet,
    ) -> None:
        self.plan = ShippedPlan(plan)
        self.column = column
        self.schema = schema
        self.time_unit = time_unit
        self.return_as = return_as
        self.options = options
        self.max_concurrency = max_concurrency
        self.plan_values = plan_values
        # Its own filters are unread in such a plan (plan_reader.reads_python_dataset).
        self.opaque = reads_python_dataset(plan)

    def __call__(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        require_ray()
        # Polars asks for the first n_rows *before* the predicate: the predicate's range
        # must not choose which periods run then, or head(10).filter(late) would read late
        # rows instead of the first ten.
        values = self.plan_values
        if predicate is not None and n_rows is None:
            values = values.intersect(predicate_range(predicate, self.schema, self.column))
        periods = self.periods(values)
        if n_rows == 0 or not periods:
            return
        dtype = self.schema[self.column]
        in_task = predicate if n_rows is None else None
        work = [
            (
                period,
                PeriodTask(
                    where=_with(window_filter(self.column, dtype, period), in_task),
                    head=n_rows,
                    columns=with_columns,
                    return_as=self.return_as,
                ),
            )
            for period in periods
        ]
        remaining = n_rows
        # The run's block is outermost, so it sees whatever ends this frame: its own head
        # met or Polars closing the source (GeneratorExit), or an interrupt that Polars
        # raises in any line here or in the progress bar.
        with (
            run(
                self.plan,
                work,
                column=self.column,
                schema=self.schema,
                options=self.options,
                max_concurrency=self.max_concurrency,
            ) as results,
            tqdm(
                total=len(periods), unit="period", desc="piot", disable=None, delay=2, leave=False
            ) as progress,
        ):
            for result in results:
                if result.last:
                    progress.update()
                frame = result.frame
                assert frame is not None
                if remaining is not None:
                    frame = frame.head(remaining)
                    remaining -= frame.height
                    if predicate is not None:
                        frame = frame.filter(predicate)
                yield from slices(frame, batch_size)
                if remaining == 0:
                    return

    def periods(self, values: IntervalSet) -> list[Period]:
        if not values.is_bounded:
            side = "lower" if not values.lower_bounded else "upper"
            hint = "before or after execute_on_ray"
            if self.opaque:
                # Filters inside the query are unread: only those after it can bound it.
                hint = (
                    "after execute_on_ray (the query scans a Python dataset, such as "
                    "pl.scan_delta, whose plan Polars cannot show without hanging, so the "
                    "filters inside it are not read)"
                )
            raise UnboundedRangeError(
                f"execute_on_ray needs a two-sided bound on date_column {self.column!r}, but "
                f"the filters leave its {side} side open. Filter it on both sides, {hint}, "
                f"e.g. .filter(pl.col({self.column!r}).is_between(start, end))"
            )
        unit = column_unit_ns(self.schema[self.column])
        return split_periods(values.rescale(unit), self.schema[self.column], self.time_unit)


def _with(window: pl.Expr, predicate: pl.Expr | None) -> pl.Expr:
    return window if predicate is None else window & predicate
