"""A typed view of Polars' expression and plan IR.

Polars shows a plan through ``NodeTraverser`` (private and versioned; the view cudf-polars
uses). This module opens that view (:func:`view`) and turns its expressions into a few
frozen dataclasses, so range derivation (:mod:`piot_dagster.engine.ranges`), SQL pushdown
(:mod:`piot_dagster.sql.pushdown`) and plan rebuilding (:mod:`piot_dagster.engine.rebuild`)
read one stable shape. Whatever the view cannot show (Python UDFs, window functions,
unknown nodes) becomes :class:`Opaque`, which every consumer treats as "claims nothing".

Tests in ``tests/test_ranges.py`` pin what this module sees on the installed Polars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import polars as pl

__all__ = [
    "FALSE",
    "TRUE",
    "Binary",
    "Call",
    "Cast",
    "Column",
    "Expr",
    "ExprReader",
    "Literal",
    "Opaque",
    "When",
    "plan_constraint",
    "predicate_expr",
    "reads_python_dataset",
    "view",
]

logger = logging.getLogger("piot_dagster")

# The NodeTraverser IR version this module was written against (Polars 2.1 and 2.2).
IR_MAJOR = 16
# Keep filters where the user put them; the other flags would rewrite the plan into shapes
# (caches, CSE temporaries) that only hide filters.
_FLAGS = pl.QueryOptFlags(
    predicate_pushdown=False, comm_subplan_elim=False, comm_subexpr_elim=False
)
# Nodes whose output rows are a subset (or repetition) of their single input's rows,
# with every column passed through unchanged.
_ROW_SUBSET_NODES = {"Sort", "Slice", "Distinct", "Cache", "SimpleProjection"}


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    """A literal as Python values (a list for list literals) with its Polars dtype.

    Nanosecond datetimes are shown truncated to microseconds: consumers must widen.
    ``series`` tells a literal Series (whose values are listed) from a scalar.
    """

    value: object
    dtype: pl.DataType
    series: bool = False


@dataclass(frozen=True)
class Cast:
    """``options`` as the view shows it: 0 strict, 1 non-strict, 2 wrapping numbers."""

    expr: Expr
    dtype: pl.DataType
    options: int | None = None


@dataclass(frozen=True)
class Binary:
    """A binary operator by its Polars name: ``Eq``, ``LtEq``, ``And``, ``LogicalOr``..."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Call:
    """A function by its Polars name (``IsBetween``, ``IsIn``, ``Not``, ``StartsWith``...)
    with its arguments and the rest of its options."""

    function: str
    args: tuple[Expr, ...]
    options: tuple[object, ...]
    # What the view shows as the function's own options (None for every function seen).
    flags: object = None
    # The name with its namespace (``StringFunction.StartsWith``), which ``function`` drops.
    qualified: str = ""


@dataclass(frozen=True)
class When:
    """``pl.when(predicate).then(then).otherwise(otherwise)``."""

    predicate: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True)
class Opaque:
    """Anything the view cannot show or this module does not model."""

    kind: str


Expr = Column | Literal | Cast | Binary | Call | When | Opaque
TRUE = Literal(True, pl.Boolean())
FALSE = Literal(False, pl.Boolean())


def predicate_expr(predicate: pl.Expr, schema: pl.Schema) -> Expr:
    """The typed view of ``predicate``, as Polars types it over ``schema``."""
    # Over one row, so that a predicate Polars folds to false (its scan becomes empty)
    # tells itself apart from one folded to true (the row stays).
    row = pl.DataFrame(schema=schema).clear(1).lazy()
    return plan_constraint(row.filter(predicate), None)


def plan_constraint(lf: pl.LazyFrame, column: str | None) -> Expr:
    """A predicate that every output row of ``lf`` satisfies.

    It collects the filters that sit above ``column``'s origin with the column passed
    through unchanged on the way; ``column=None`` reads only the plan's top filter.
    Anything unreadable contributes ``TRUE``.
    """
    traverser = view(lf, _FLAGS)
    if traverser is None:
        return TRUE
    reader = _PlanReader(traverser, column)
    if column is None:
        node = traverser.view_current_node()
        if type(node).__name__ == "Filter":
            return reader.expr(node.predicate.node)
        return FALSE if _empty_scan(node) else TRUE
    dtype = traverser.get_schema().get(column)
    return reader.node(dtype)


def view(lf: pl.LazyFrame, flags: pl.QueryOptFlags) -> Any | None:
    """Polars' IR view of ``lf`` as optimised under ``flags``, or None when the plan cannot
    be viewed or Polars' IR is not the version this module reads."""
    if reads_python_dataset(lf):
        return None
    try:
        traverser = lf._ldf.with_optimizations(flags._pyoptflags).visit()
    except Exception:  # the plan cannot be viewed: claim nothing about it
        logger.debug("piot_dagster: could not view a plan", exc_info=True)
        return None
    if traverser.version()[0] != IR_MAJOR:
        logger.warning(
            "piot_dagster: Polars plan IR version %s is not the supported %s; plans are not read",
            traverser.version(),
            IR_MAJOR,
        )
        return None
    return traverser


# How Polars describes a scan of a Python dataset (pl.scan_delta, pl.scan_iceberg).
_PYTHON_DATASET = "PythonDataset SCAN"


def reads_python_dataset(lf: pl.LazyFrame) -> bool:
    """Whether ``lf`` scans a Python dataset. Polars expands one while it builds the IR,
    calling back into Python on a thread of its own, and ``visit()`` holds the GIL that
    thread waits for: viewing such a plan hangs the process. The unoptimised plan's
    description shows the scan without expanding it."""
    return _PYTHON_DATASET in lf._ldf.describe_plan()


def _empty_scan(node: object) -> bool:
    """Whether ``node`` scans an in-memory frame of no rows. Polars' optimiser puts one in
    place of a subplan whose filter it proves false, such as ``is_between(a, a, "left")``."""
    if type(node).__name__ != "DataFrameScan":
        return False
    return pl.DataFrame._from_pydf(node.df).height == 0  # type: ignore[attr-defined]


def _name(enum_value: object) -> str:
    return str(enum_value).rsplit(".", 1)[-1]


def _all(parts: list[Expr], op: str) -> Expr:
    result = parts[0]
    for part in parts[1:]:
        result = Binary(op, result, part)
    return result


class ExprReader:
    """Reads the expressions of a ``NodeTraverser`` as :data:`Expr`."""

    def __init__(self, traverser: Any) -> None:
        self.nt = traverser

    def expr(self, index: int) -> Expr:
        try:
            e = self.nt.view_expression(index)
        except NotImplementedError as exc:  # e.g. Python UDFs
            return Opaque(str(exc))
        except (ValueError, OverflowError) as exc:
            # A literal Python cannot hold. Since Polars 2.2 the optimiser rewrites
            # ``col.dt.year() >= 2024`` into ``is_between(2024-01-01, <the dtype's last
            # date>)``, a date in year 262142; read as opaque, that end claims nothing.
            return Opaque(str(exc))
        kind = type(e).__name__
        if kind == "Column":
            return Column(e.name)
        if kind == "Literal":
            series = type(e.value).__name__ == "PySeries"
            return Literal(_python_value(e.value), e.dtype, series)
        if kind == "Alias":
            return self.expr(e.expr)
        if kind == "Cast":
            return Cast(self.expr(e.expr), e.dtype, e.options)
        if kind == "BinaryExpr":
            return Binary(_name(e.op), self.expr(e.left), self.expr(e.right))
        if kind == "Function":
            name, *options = (
                e.function_data if isinstance(e.function_data, tuple) else (e.function_data,)
            )
            args = tuple(self.expr(i) for i in e.input)
            return Call(_name(name), args, tuple(options), e.options, str(name))
        if kind == "Ternary":
            return When(self.expr(e.predicate), self.expr(e.truthy), self.expr(e.falsy))
        return Opaque(kind)


class _PlanReader(ExprReader):
    def __init__(self, traverser: Any, column: str | None) -> None:
        super().__init__(traverser)
        self.column = column

    def node(self, dtype: pl.DataType | None) -> Expr:
        node = self.nt.view_current_node()
        kind = type(node).__name__
        if kind == "Filter":
            return Binary(
                "LogicalAnd", self.expr(node.predicate.node), self.child(node.input, dtype)
            )
        if kind in _ROW_SUBSET_NODES:
            return self.child(node.input, dtype)
        if kind in ("Select", "HStack"):
            exprs = node.expr if kind == "Select" else node.exprs
            produced = [e for e in exprs if e.output_name == self.column]
            if not produced:
                # HStack keeps the input's column; a Select without it cannot be our output.
                return self.child(node.input, dtype) if kind == "HStack" else TRUE
            passes_through = self.expr(produced[-1].node) == Column(self.column)  # type: ignore[arg-type]
            return self.child(node.input, dtype) if passes_through else TRUE
        if kind == "Union":
            return _all([self.child(i, dtype) for i in node.inputs], "LogicalOr")
        return FALSE if _empty_scan(node) else TRUE

    def child(self, index: int, dtype: pl.DataType | None) -> Expr:
        here = self.nt.get_node()
        self.nt.set_node(index)
        try:
            # A child that does not carry the column under the same dtype says nothing of it.
            if self.nt.get_schema().get(self.column) != dtype:
                return TRUE
            return self.node(dtype)
        except Exception:  # a node the IR view cannot show: this subtree claims nothing
            logger.debug("piot_dagster: unreadable plan node", exc_info=True)
            return TRUE
        finally:
            self.nt.set_node(here)


def _python_value(value: object) -> object:
    if type(value).__name__ == "PySeries":
        # A list literal built from a Series arrives as a one-row list Series.
        return pl.Series._from_pyseries(value).explode().to_list()  # type: ignore[arg-type]
    return value
