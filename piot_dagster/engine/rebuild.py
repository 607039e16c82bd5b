"""A plan's in-memory frames taken out, so a worker can rebuild the plan over them.

Polars pickles a plan with its in-memory frames inside, one msgpack integer per byte
(pola-rs/polars#25707): a 2M-row frame costs the driver 0.6 s to pickle and every worker
0.5 s to load, where the same frame as Arrow costs 0.04 s to make and nothing to map
from Ray's object store. Polars has no API to swap a plan's leaves, so :func:`detach`
reads the plan's unoptimised IR (which mirrors what the user wrote) into a
:data:`Recipe`, a data-free description over numbered frames, and
:meth:`Detached.plan` builds the plan again over the frames, in whichever process
holds them.

Soundness comes first, so a recipe is made only when it is provably the same plan:

- only node and expression kinds whose IR view shows every field that can change a
  result are read. Anything else gives None and the plan travels whole, as before:
  joins (the view does not show ``validate``), nanosecond and time literals (the view
  truncates them), window functions, aggregations, Python functions, other sources;
- the recipe is checked: the plan rebuilt over the very frames a worker will get must
  read back as the same recipe, over frames of the same schema, height and sortedness.

Examples
--------
>>> import polars as pl
>>> lf = pl.LazyFrame({"a": [1, 2, 3]}).filter(pl.col("a") > 1).head(1)
>>> detached = detach(lf)
>>> detached.recipe  # doctest: +ELLIPSIS
Slice(input=Filter(input=Frame(index=0), predicate=Binary(op='Gt', ...)), offset=0, length=1)
>>> detached.plan().collect().to_dict(as_series=False)
{'a': [2]}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from piot_dagster.engine.plan_reader import (
    Binary,
    Call,
    Cast,
    Column,
    Expr,
    ExprReader,
    Literal,
    When,
    view,
)
from piot_dagster.errors import UnsupportedPlan

__all__ = ["Detached", "Recipe", "detach"]

logger = logging.getLogger("piot_dagster")

# The IR as written: no optimisation moves or merges what the user put in the plan.
_AS_WRITTEN = pl.QueryOptFlags.none()


@dataclass(frozen=True)
class Frame:
    """The ``index``-th in-memory frame."""

    index: int


@dataclass(frozen=True)
class Filter:
    input: Recipe
    predicate: Expr


@dataclass(frozen=True)
class Select:
    """``select`` of named expressions, or ``with_columns`` when ``keep_input``."""

    input: Recipe
    exprs: tuple[tuple[str, Expr], ...]
    keep_input: bool


@dataclass(frozen=True)
class Slice:
    input: Recipe
    offset: int
    length: int | None


@dataclass(frozen=True)
class Sort:
    input: Recipe
    by: tuple[Expr, ...]
    descending: tuple[bool, ...]
    nulls_last: tuple[bool, ...]
    maintain_order: bool


@dataclass(frozen=True)
class Concat:
    """A vertical ``pl.concat`` of inputs of one schema."""

    inputs: tuple[Recipe, ...]


Recipe = Frame | Filter | Select | Slice | Sort | Concat


@dataclass(frozen=True)
class _FrameShape:
    """What the verification compares of a frame: all but its values, which Arrow keeps."""

    schema: pl.Schema
    height: int
    sorted: tuple[tuple[str, bool], ...]  # (column, descending) of each column known sorted


class Detached:
    """A plan's recipe and its in-memory frames as Arrow tables, which Ray's object store
    holds and maps zero-copy; pickles without any Polars frame."""

    def __init__(self, recipe: Recipe, tables: list[pa.Table], shapes: list[_FrameShape]) -> None:
        self.recipe = recipe
        self.tables = tables
        self.shapes = shapes

    def frames(self) -> list[pl.DataFrame]:
        """The frames again, with the sortedness Polars knew of their columns."""
        frames = []
        for table, shape in zip(self.tables, self.shapes, strict=True):
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            if shape.sorted:
                frame = frame.with_columns(
                    pl.col(name).set_sorted(descending=descending)
                    for name, descending in shape.sorted
                )
            frames.append(frame)
        return frames

    def plan(self) -> pl.LazyFrame:
        """The plan, rebuilt over the frames."""
        return _build(self.recipe, self.frames())


def detach(lf: pl.LazyFrame) -> Detached | None:
    """``lf``'s recipe and in-memory frames, or None when it holds no in-memory frame or
    is not one this module can rebuild exactly."""
    read = _read(lf)
    if read is None:
        return None
    recipe, frames = read
    if not frames:
        return None
    shapes = [_shape(frame) for frame in frames]
    try:
        detached = Detached(recipe, [frame.to_arrow() for frame in frames], shapes)
        again = _read(detached.plan())
    except Exception:  # a frame Arrow cannot hold, or a call the recipe got wrong
        logger.debug("piot_dagster: a plan could not be rebuilt; shipped whole", exc_info=True)
        return None
    if again is None or again[0] != recipe or [_shape(f) for f in again[1]] != shapes:
        logger.debug("piot_dagster: a rebuilt plan did not read back the same; shipped whole")
        return None
    return detached


def _build(recipe: Recipe, frames: Sequence[pl.DataFrame]) -> pl.LazyFrame:
    """The plan ``recipe`` describes, over ``frames``."""
    if isinstance(recipe, Frame):
        return frames[recipe.index].lazy()
    if isinstance(recipe, Concat):
        return pl.concat([_build(i, frames) for i in recipe.inputs], how="vertical")
    lf = _build(recipe.input, frames)
    if isinstance(recipe, Filter):
        return lf.filter(_polars_expr(recipe.predicate))
    if isinstance(recipe, Select):
        exprs = [_polars_expr(e).alias(name) for name, e in recipe.exprs]
        return lf.with_columns(exprs) if recipe.keep_input else lf.select(exprs)
    if isinstance(recipe, Slice):
        return lf.slice(recipe.offset, recipe.length)
    return lf.sort(
        [_polars_expr(e) for e in recipe.by],
        descending=list(recipe.descending),
        nulls_last=list(recipe.nulls_last),
        maintain_order=recipe.maintain_order,
    )


def _read(lf: pl.LazyFrame) -> tuple[Recipe, list[pl.DataFrame]] | None:
    traverser = view(lf, _AS_WRITTEN)
    if traverser is None:
        return None
    reader = _RecipeReader(traverser)
    try:
        return reader.node(), reader.frames
    except UnsupportedPlan as exc:
        logger.debug("piot_dagster: plan shipped whole: %s", exc)
        return None


def _shape(frame: pl.DataFrame) -> _FrameShape:
    sorted_columns = tuple(
        (series.name, series.flags["SORTED_DESC"])
        for series in frame.iter_columns()
        if series.flags["SORTED_ASC"] or series.flags["SORTED_DESC"]
    )
    return _FrameShape(frame.schema, frame.height, sorted_columns)


class _RecipeReader(ExprReader):
    def __init__(self, traverser: Any) -> None:
        super().__init__(traverser)
        self.frames: list[pl.DataFrame] = []

    def node(self) -> Recipe:
        node = self.nt.view_current_node()
        kind = type(node).__name__
        if kind == "DataFrameScan":
            if node.projection is not None or node.selection is not None:
                raise UnsupportedPlan("a projected in-memory scan")
            self.frames.append(pl.DataFrame._from_pydf(node.df))  # type: ignore[attr-defined]
            return Frame(len(self.frames) - 1)
        if kind == "Filter":
            return Filter(self.child(node.input), self.checked(node.predicate.node))
        if kind in ("Select", "HStack"):
            if not node.should_broadcast:
                raise UnsupportedPlan(f"a {kind} that does not broadcast")
            exprs = node.expr if kind == "Select" else node.exprs
            named = tuple((e.output_name, self.checked(e.node)) for e in exprs)
            return Select(self.child(node.input), named, keep_input=kind == "HStack")
        if kind == "Slice":
            return Slice(self.child(node.input), node.offset, node.len)
        if kind == "Sort":
            maintain_order, nulls_last, descending = node.sort_options
            if node.slice is not None:
                raise UnsupportedPlan("a sort with a slice")
            by = tuple(self.checked(e.node) for e in node.by_column)
            return Sort(
                self.child(node.input), by, tuple(descending), tuple(nulls_last), maintain_order
            )
        if kind == "Union":
            if node.slice is not None or not node.maintain_order:
                raise UnsupportedPlan("a union with a slice or without order")
            return Concat(tuple(self.child(i) for i in node.inputs))
        raise UnsupportedPlan(f"a {kind} node")

    def child(self, index: int) -> Recipe:
        here = self.nt.get_node()
        self.nt.set_node(index)
        try:
            return self.node()
        finally:
            self.nt.set_node(here)

    def checked(self, index: int) -> Expr:
        expr = self.expr(index)
        _check(expr)
        return expr


# Binary operators by their IR name, as methods of pl.Expr.
_BINARY: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "Eq": pl.Expr.eq,
    "EqValidity": pl.Expr.eq_missing,
    "NotEq": pl.Expr.ne,
    "NotEqValidity": pl.Expr.ne_missing,
    "Lt": pl.Expr.lt,
    "LtEq": pl.Expr.le,
    "Gt": pl.Expr.gt,
    "GtEq": pl.Expr.ge,
    "Plus": pl.Expr.add,
    "Minus": pl.Expr.sub,
    "Multiply": pl.Expr.mul,
    "TrueDivide": pl.Expr.truediv,
    "FloorDivide": pl.Expr.floordiv,
    "Modulus": pl.Expr.mod,
    "And": pl.Expr.and_,
    "Or": pl.Expr.or_,
    "Xor": pl.Expr.xor,
}

# Functions by their qualified IR name, as pl.Expr calls on their arguments and options.
_CALLS: dict[str, Callable[..., pl.Expr]] = {
    "BooleanFunction.IsBetween": lambda a, low, high, closed: a.is_between(low, high, closed),
    "BooleanFunction.IsIn": lambda a, values, nulls_equal: a.is_in(values, nulls_equal=nulls_equal),
    "BooleanFunction.IsNull": lambda a: a.is_null(),
    "BooleanFunction.IsNotNull": lambda a: a.is_not_null(),
    "BooleanFunction.Not": lambda a: a.not_(),
    "abs": lambda a: a.abs(),
    "TemporalFunction.Year": lambda a: a.dt.year(),
    "TemporalFunction.Month": lambda a: a.dt.month(),
    "TemporalFunction.Day": lambda a: a.dt.day(),
    "TemporalFunction.Hour": lambda a: a.dt.hour(),
    "TemporalFunction.Minute": lambda a: a.dt.minute(),
    "TemporalFunction.Weekday": lambda a: a.dt.weekday(),
    "TemporalFunction.Date": lambda a: a.dt.date(),
    "StringFunction.StartsWith": lambda a, prefix: a.str.starts_with(prefix),
    "StringFunction.EndsWith": lambda a, suffix: a.str.ends_with(suffix),
}

_INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _exact_literal_dtype(dtype: pl.DataType) -> bool:
    """Whether the view shows a literal of ``dtype`` whole (not nanosecond datetimes,
    which it truncates, nor types it shows no value of)."""
    if isinstance(dtype, pl.List):
        return _exact_literal_dtype(dtype.inner)
    if isinstance(dtype, pl.Datetime):
        return dtype.time_unit != "ns"
    return dtype in (pl.Null, pl.Boolean, pl.Float32, pl.Float64, pl.String, pl.Date, *_INTEGERS)


def _check(expr: Expr) -> None:
    """Raise :class:`UnsupportedPlan` unless :func:`_polars_expr` rebuilds ``expr`` exactly."""
    if isinstance(expr, Column):
        return
    if isinstance(expr, Literal):
        if expr.series or not _exact_literal_dtype(expr.dtype):
            raise UnsupportedPlan(f"a literal of {expr.dtype}")
        return
    if isinstance(expr, Cast):
        if expr.options not in (0, 1, 2):
            raise UnsupportedPlan(f"a cast with options {expr.options!r}")
        _check(expr.expr)
        return
    if isinstance(expr, Binary):
        if expr.op not in _BINARY:
            raise UnsupportedPlan(f"the operator {expr.op}")
        _check(expr.left)
        _check(expr.right)
        return
    if isinstance(expr, Call):
        if expr.qualified not in _CALLS or expr.flags is not None:
            raise UnsupportedPlan(f"the function {expr.function}")
        for arg in expr.args:
            _check(arg)
        return
    if isinstance(expr, When):
        for part in (expr.predicate, expr.then, expr.otherwise):
            _check(part)
        return
    raise UnsupportedPlan(f"an expression {expr}")


def _polars_expr(expr: Expr) -> pl.Expr:
    """The Polars expression of a checked :data:`Expr`."""
    if isinstance(expr, Column):
        return pl.col(expr.name)
    if isinstance(expr, Literal):
        return pl.lit(expr.value, dtype=expr.dtype)
    if isinstance(expr, Cast):
        return _polars_expr(expr.expr).cast(
            expr.dtype, strict=expr.options == 0, wrap_numerical=expr.options == 2
        )
    if isinstance(expr, Binary):
        return _BINARY[expr.op](_polars_expr(expr.left), _polars_expr(expr.right))
    if isinstance(expr, Call):
        return _CALLS[expr.qualified](*(_polars_expr(a) for a in expr.args), *expr.options)
    assert isinstance(expr, When)
    return (
        pl.when(_polars_expr(expr.predicate))
        .then(_polars_expr(expr.then))
        .otherwise(_polars_expr(expr.otherwise))
    )
