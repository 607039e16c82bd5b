"""The range a date column can take, derived from filters.

Reads the typed IR view (:mod:`piot_dagster.engine.plan_reader`) of a plan's filters or of a pushed
predicate and recognises a small set of shapes. Everything it does not recognise
contributes *no* bound, so the derived range may be wider than the truth but never
narrower.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl

from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.plan_reader import (
    Binary,
    Call,
    Cast,
    Column,
    Expr,
    Literal,
    plan_constraint,
    predicate_expr,
)

__all__ = ["NS_PER_DAY", "column_unit_ns", "plan_range", "predicate_range"]

NS_PER_DAY = 86_400 * 10**9
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000}
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq"}
# The comparison that holds exactly when ``op`` is false, for a non-null value.
_NEGATE = {"Lt": "GtEq", "LtEq": "Gt", "Gt": "LtEq", "GtEq": "Lt"}
_AND = ("And", "LogicalAnd")
_OR = ("Or", "LogicalOr")


def plan_range(lf: pl.LazyFrame, column: str) -> IntervalSet:
    """Nanosecond instants that ``column`` can take in the output of ``lf``.

    Dates count as midnight; tz-aware datetimes as UTC instants; naive ones as wall time.
    """
    dtype = lf.collect_schema()[column]
    return _Ranges(column, dtype).of(plan_constraint(lf, column))


def predicate_range(predicate: pl.Expr, schema: pl.Schema, column: str) -> IntervalSet:
    """Nanosecond instants of ``column`` in rows for which ``predicate`` can be true."""
    return _Ranges(column, schema[column]).of(predicate_expr(predicate, schema))


def column_unit_ns(dtype: pl.DataType) -> int:
    """Nanoseconds in one step of a Date or Datetime column's physical integer."""
    if dtype == pl.Date:
        return NS_PER_DAY
    return _NS_PER_UNIT[dtype.time_unit]  # type: ignore[attr-defined]


class _Ranges:
    def __init__(self, column: str, dtype: pl.DataType) -> None:
        self.column = column
        self.dtype = dtype
        self.tz = getattr(dtype, "time_zone", None)

    def of(self, e: Expr, *, negated: bool = False) -> IntervalSet:
        """Instants for which the boolean ``e`` (or its negation) may be true.

        Negation follows De Morgan, which holds in Polars' three-valued logic; a null
        date makes every recognised leaf null either way, so null rows stay excluded.
        """
        if isinstance(e, Binary):
            if e.op in _AND + _OR:
                left, right = self.of(e.left, negated=negated), self.of(e.right, negated=negated)
                return left.intersect(right) if (e.op in _AND) != negated else left.union(right)
            if e.op in _FLIP:
                if self.is_column(e.left):
                    return _compare(e.op, self.instant(e.right), negated=negated)
                if self.is_column(e.right):
                    return _compare(_FLIP[e.op], self.instant(e.left), negated=negated)
        if isinstance(e, Call):
            return self.call(e, negated=negated)
        if isinstance(e, Literal) and e.dtype == pl.Boolean:
            # A filter keeps a row only where it is true: never where it is null.
            holds = e.value is (not negated)
            return IntervalSet.everything() if holds else IntervalSet.of([])
        return IntervalSet.everything()

    def call(self, e: Call, *, negated: bool) -> IntervalSet:
        if e.function == "Not":
            return self.of(e.args[0], negated=not negated)
        if e.function in ("AllHorizontal", "AnyHorizontal"):
            parts = [self.of(a, negated=negated) for a in e.args]
            conjunction = (e.function == "AllHorizontal") != negated
            result = IntervalSet.everything() if conjunction else IntervalSet.of([])
            for part in parts:
                result = result.intersect(part) if conjunction else result.union(part)
            return result
        if not e.args or not self.is_column(e.args[0]):
            return IntervalSet.everything()
        if e.function == "IsBetween":
            closed = e.options[0]
            low = "GtEq" if closed in ("both", "left") else "Gt"
            high = "LtEq" if closed in ("both", "right") else "Lt"
            above = _compare(low, self.instant(e.args[1]), negated=negated)
            below = _compare(high, self.instant(e.args[2]), negated=negated)
            return above.union(below) if negated else above.intersect(below)
        if e.function == "IsIn" and not negated:
            return self.membership(e.args[1], nulls_equal=bool(e.options[0]))
        return IntervalSet.everything()

    def membership(self, e: Expr, *, nulls_equal: bool) -> IntervalSet:
        if not (isinstance(e, Literal) and isinstance(e.dtype, pl.List | pl.Array)):
            return IntervalSet.everything()
        values = e.value
        if not isinstance(values, list) or (nulls_equal and None in values):
            return IntervalSet.everything()
        result = IntervalSet.of([])
        for value in values:
            if value is not None:
                element = Literal(value, e.dtype.inner)  # type: ignore[arg-type]
                result = result.union(_compare("Eq", self.instant(element)))
        return result

    def is_column(self, e: Expr) -> bool:
        if isinstance(e, Column):
            return e.name == self.column
        # A Date column compared with a naive datetime is cast to one: midnight, the same
        # instant as the date itself.
        return (
            isinstance(e, Cast)
            and self.dtype == pl.Date
            and isinstance(e.dtype, pl.Datetime)
            and e.dtype.time_zone is None
            and self.is_column(e.expr)
        )

    def instant(self, e: Expr) -> tuple[int, int] | None:
        """The literal as nanoseconds ``(least, greatest)`` it may stand for, or None."""
        if not isinstance(e, Literal):
            return None
        value, dtype = e.value, e.dtype
        if isinstance(value, dt.datetime) and isinstance(dtype, pl.Datetime):
            if dtype.time_zone != self.tz or (value.tzinfo is None) != (self.tz is None):
                return None  # Polars refuses to compare these; claim nothing
            epoch = _EPOCH if value.tzinfo is None else _EPOCH_UTC
            ns = (value - epoch) // dt.timedelta(microseconds=1) * 1_000
            # The IR shows nanosecond literals truncated to microseconds.
            slack = 999 if dtype.time_unit == "ns" else 0
            return ns - slack, ns + slack
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime) and dtype == pl.Date:
            ns = (value - _EPOCH.date()).days * NS_PER_DAY
            return ns, ns
        return None


def _compare(op: str, bounds: tuple[int, int] | None, *, negated: bool = False) -> IntervalSet:
    """Instants ``x`` for which ``x <op> literal`` (or its negation) may hold, the literal
    being somewhere in ``bounds``."""
    if bounds is None or (negated and op not in _NEGATE):
        return IntervalSet.everything()
    if negated:
        op = _NEGATE[op]
    least, greatest = bounds
    inf = math.inf
    pieces = {
        "GtEq": (least, inf),
        "Gt": (least + 1, inf),
        "LtEq": (-inf, greatest + 1),
        "Lt": (-inf, greatest),
        "Eq": (least, greatest + 1),
    }
    return IntervalSet.of([pieces[op]])
