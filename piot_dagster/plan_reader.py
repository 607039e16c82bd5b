"""Derive the range of a date column from the filters in a Polars plan.

This is the one place that reads Polars internals. It walks the optimised plan through
``NodeTraverser`` (the private view cudf-polars uses) and recognises a small set of
filter shapes. Everything it does not recognise contributes *no* bound, so the derived
range may be wider than the truth but never narrower. The same reader serves both the
filters inside a wrapped plan and the predicate Polars pushes into our source: a pushed
predicate is read as a filter over an empty frame of the same schema.

Tests in ``tests/test_plan_reader.py`` pin what this module sees on the installed Polars.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import Any

import polars as pl

from piot_dagster.intervals import IntervalSet

__all__ = ["NS_PER_DAY", "column_unit_ns", "plan_range", "predicate_range"]

logger = logging.getLogger("piot_dagster")

NS_PER_DAY = 86_400 * 10**9
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000}
# The NodeTraverser IR version this reader was written against (Polars 2.1).
_IR_MAJOR = 16
# Keep filters where the user put them; the other flags would rewrite the plan into shapes
# (caches, CSE temporaries) that only hide filters.
_FLAGS = pl.QueryOptFlags(
    predicate_pushdown=False, comm_subplan_elim=False, comm_subexpr_elim=False
)
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq"}
# Nodes whose output rows are a subset (or repetition) of their single input's rows,
# with every column passed through unchanged.
_ROW_SUBSET_NODES = {"Sort", "Slice", "Distinct", "Cache", "SimpleProjection"}


def plan_range(lf: pl.LazyFrame, column: str) -> IntervalSet:
    """Nanosecond instants that ``column`` can take in the output of ``lf``.

    Dates count as midnight; tz-aware datetimes as UTC instants; naive ones as wall time.
    """
    dtype = lf.collect_schema()[column]
    try:
        traverser = lf._ldf.with_optimizations(_FLAGS._pyoptflags).visit()
    except Exception:  # the plan cannot be viewed: claim nothing about it
        logger.debug("piot_dagster: could not view the plan of %r", column, exc_info=True)
        return IntervalSet.everything()
    if traverser.version()[0] != _IR_MAJOR:
        logger.warning(
            "piot_dagster: Polars plan IR version %s is not the supported %s; "
            "filters inside the wrapped plan are not read",
            traverser.version(),
            _IR_MAJOR,
        )
        return IntervalSet.everything()
    try:
        return _Reader(traverser, column, dtype).node()
    except Exception:  # an unforeseen shape: unknown means unbounded, never narrower
        logger.debug("piot_dagster: unreadable plan for %r", column, exc_info=True)
        return IntervalSet.everything()


def predicate_range(predicate: pl.Expr, schema: pl.Schema, column: str) -> IntervalSet:
    """Nanosecond instants of ``column`` in rows for which ``predicate`` can be true."""
    return plan_range(pl.LazyFrame(schema=schema).filter(predicate), column)


def _name(enum_value: object) -> str:
    return str(enum_value).rsplit(".", 1)[-1]


class _Reader:
    def __init__(self, traverser: Any, column: str, dtype: pl.DataType) -> None:
        self.nt = traverser
        self.column = column
        self.dtype = dtype
        self.tz = getattr(dtype, "time_zone", None)

    # -- plan nodes -------------------------------------------------------------------

    def node(self) -> IntervalSet:
        node = self.nt.view_current_node()
        kind = type(node).__name__
        if kind == "Filter":
            return self.expr(node.predicate.node).intersect(self.child(node.input))
        if kind in _ROW_SUBSET_NODES:
            return self.child(node.input)
        if kind in ("Select", "HStack"):
            exprs = node.expr if kind == "Select" else node.exprs
            produced = [e for e in exprs if e.output_name == self.column]
            if not produced:
                # HStack keeps the input's column; a Select without it cannot be our output.
                return self.child(node.input) if kind == "HStack" else IntervalSet.everything()
            return (
                self.child(node.input)
                if self.is_column(produced[-1].node)
                else (IntervalSet.everything())
            )
        if kind == "Union":
            return _unite_all([self.child(child) for child in node.inputs])
        return IntervalSet.everything()

    def child(self, index: int) -> IntervalSet:
        here = self.nt.get_node()
        self.nt.set_node(index)
        try:
            schema = self.nt.get_schema()
            # A child that does not carry the column under the same dtype says nothing of it.
            if schema.get(self.column) != self.dtype:
                return IntervalSet.everything()
            return self.node()
        except Exception:  # a node the IR view cannot show: this subtree claims nothing
            logger.debug("piot_dagster: unreadable plan node", exc_info=True)
            return IntervalSet.everything()
        finally:
            self.nt.set_node(here)

    def view(self, index: int) -> Any:
        """The expression node, or None where the IR view cannot show it (Python UDFs)."""
        try:
            return self.nt.view_expression(index)
        except NotImplementedError:
            return None

    # -- expressions ------------------------------------------------------------------

    def expr(self, index: int, *, negated: bool = False) -> IntervalSet:
        """Instants for which the boolean expression (or its negation) may be true.

        Negation follows De Morgan, which holds in Polars' three-valued logic; a null
        date makes every recognised leaf null either way, so null rows stay excluded.
        """
        e = self.view(index)
        kind = type(e).__name__
        if kind == "Alias":
            return self.expr(e.expr, negated=negated)
        if kind == "BinaryExpr":
            return self.binary(e, negated=negated)
        if kind == "Function":
            return self.function(e, negated=negated)
        return IntervalSet.everything()

    def binary(self, e: Any, *, negated: bool) -> IntervalSet:
        op = _name(e.op)
        if op in ("And", "LogicalAnd", "Or", "LogicalOr"):
            left = self.expr(e.left, negated=negated)
            right = self.expr(e.right, negated=negated)
            conjunction = op in ("And", "LogicalAnd")
            return left.intersect(right) if conjunction != negated else left.union(right)
        if op not in _FLIP:
            return IntervalSet.everything()
        if self.is_column(e.left):
            return _compare(op, self.literal(e.right), negated=negated)
        if self.is_column(e.right):
            return _compare(_FLIP[op], self.literal(e.left), negated=negated)
        return IntervalSet.everything()

    def function(self, e: Any, *, negated: bool) -> IntervalSet:
        name = _name(e.function_data[0])
        inputs: Sequence[int] = e.input
        if name == "Not":
            return self.expr(inputs[0], negated=not negated)
        if name in ("AllHorizontal", "AnyHorizontal"):
            parts = [self.expr(i, negated=negated) for i in inputs]
            if (name == "AllHorizontal") != negated:
                return _intersect_all(parts)
            return _unite_all(parts)
        if not inputs or not self.is_column(inputs[0]):
            return IntervalSet.everything()
        if name == "IsBetween":
            closed = e.function_data[1]
            low = "GtEq" if closed in ("both", "left") else "Gt"
            high = "LtEq" if closed in ("both", "right") else "Lt"
            above = _compare(low, self.literal(inputs[1]), negated=negated)
            below = _compare(high, self.literal(inputs[2]), negated=negated)
            return above.union(below) if negated else above.intersect(below)
        if name == "IsIn" and not negated:
            nulls_equal = e.function_data[1]
            return self.membership(inputs[1], nulls_equal=nulls_equal)
        return IntervalSet.everything()

    def membership(self, index: int, *, nulls_equal: bool) -> IntervalSet:
        lit = self.view(index)
        if type(lit).__name__ != "Literal" or not isinstance(lit.dtype, pl.List | pl.Array):
            return IntervalSet.everything()
        values = lit.value
        if not isinstance(values, list):
            # An imploded Series arrives as a one-row list Series.
            values = pl.Series._from_pyseries(values).explode().to_list()
        if nulls_equal and None in values:
            return IntervalSet.everything()
        inner = lit.dtype.inner
        result = IntervalSet.of([])
        for value in values:
            if value is not None:
                result = result.union(_compare("Eq", self.instant(value, inner)))
        return result

    def is_column(self, index: int) -> bool:
        e = self.view(index)
        kind = type(e).__name__
        if kind == "Column":
            return e.name == self.column
        if kind == "Cast" and self.dtype == pl.Date:
            # A Date column compared with a naive datetime is cast to one: midnight, the
            # same instant as the date itself.
            target = e.dtype
            return (
                isinstance(target, pl.Datetime)
                and target.time_zone is None
                and self.is_column(e.expr)
            )
        return False

    def literal(self, index: int) -> tuple[int, int] | None:
        e = self.view(index)
        if type(e).__name__ != "Literal":
            return None
        return self.instant(e.value, e.dtype)

    def instant(self, value: object, dtype: pl.DataType) -> tuple[int, int] | None:
        """The literal as nanoseconds ``(least, greatest)`` it may stand for, or None."""
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


# The comparison that holds exactly when ``op`` is false, for a non-null value.
_NEGATE = {"Lt": "GtEq", "LtEq": "Gt", "Gt": "LtEq", "GtEq": "Lt"}


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


def _intersect_all(parts: Sequence[IntervalSet]) -> IntervalSet:
    result = IntervalSet.everything()
    for part in parts:
        result = result.intersect(part)
    return result


def _unite_all(parts: Sequence[IntervalSet]) -> IntervalSet:
    result = IntervalSet.of([])
    for part in parts:
        result = result.union(part)
    return result


def column_unit_ns(dtype: pl.DataType) -> int:
    """Nanoseconds in one step of a Date or Datetime column's physical integer."""
    if dtype == pl.Date:
        return NS_PER_DAY
    return _NS_PER_UNIT[dtype.time_unit]  # type: ignore[attr-defined]
