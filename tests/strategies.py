"""Hypothesis strategies: random frames with a temporal column and random predicates that
mix shapes the engine recognises with shapes it does not."""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

import polars as pl
from hypothesis import strategies as st

D = pl.col("date")


def examples(count: int) -> int:
    """``count`` hypothesis examples, times ``PIOT_FUZZ_SCALE`` (``make fuzz`` raises it)."""
    return count * int(os.environ.get("PIOT_FUZZ_SCALE", "1"))


EPOCH = dt.datetime(1970, 1, 1)
START = dt.datetime(2023, 12, 28)
SPAN_DAYS = 70
UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000}

date_dtypes = st.sampled_from(
    [
        pl.Date,
        pl.Datetime("ns"),
        pl.Datetime("us"),
        pl.Datetime("ms"),
        pl.Datetime("ns", "Europe/Berlin"),
        pl.Datetime("us", "America/New_York"),
        pl.Datetime("ms", "UTC"),
        pl.Datetime("us", "Asia/Kolkata"),
    ]
)


def _wall_ns(draw: st.DrawFn) -> int:
    """A wall-clock instant near START, biased towards midnights and one step around them."""
    day = draw(st.integers(0, SPAN_DAYS))
    midnight = int((START - EPOCH).total_seconds()) * 10**9 + day * 86_400 * 10**9
    offset = draw(
        st.one_of(
            st.sampled_from([0, 1, -1, 1_000, -1_000, 1_000_000, -1_000_000]),
            st.integers(-86_400 * 10**9, 86_400 * 10**9),
        )
    )
    return midnight + offset


def _series(values_ns: list[int | None], dtype: pl.DataType) -> pl.Series:
    raw = pl.Series("date", values_ns, dtype=pl.Int64).cast(pl.Datetime("ns"))
    if dtype == pl.Date:
        return raw.dt.date()
    tz = dtype.time_zone  # type: ignore[attr-defined]
    raw = raw.dt.cast_time_unit(dtype.time_unit)  # type: ignore[attr-defined]
    if tz is None:
        return raw
    # Wall times become local times in the zone; those a DST gap skips become null.
    return raw.dt.replace_time_zone(tz, non_existent="null", ambiguous="earliest")


@st.composite
def frames(draw: st.DrawFn, dtype: pl.DataType, *, max_rows: int = 60) -> pl.DataFrame:
    n = draw(st.one_of(st.just(0), st.integers(1, max_rows)))
    values = [None if draw(st.integers(0, 9)) == 0 else _wall_ns(draw) for _ in range(n)]
    frame = pl.DataFrame(
        {
            "date": _series(values, dtype),
            "v": pl.Series(
                [draw(st.one_of(st.none(), st.integers(-5, 5))) for _ in range(n)], dtype=pl.Int64
            ),
            "s": pl.Series(
                [draw(st.sampled_from(["a", "b", "it's", None])) for _ in range(n)], dtype=pl.String
            ),
        }
    )
    return frame.sort("date", nulls_last=True, maintain_order=True)


@st.composite
def literals(draw: st.DrawFn, dtype: pl.DataType) -> pl.Expr | object:
    """A literal the column can be compared with: a date, or a datetime of its own zone."""
    ns = _wall_ns(draw)
    if draw(st.integers(0, 3)) == 0:
        return (EPOCH + dt.timedelta(microseconds=ns // 1_000)).date()
    wall = EPOCH + dt.timedelta(microseconds=ns // 1_000)
    tz = getattr(dtype, "time_zone", None)
    if tz is not None:
        wall = wall.replace(tzinfo=ZoneInfo(tz))
    if getattr(dtype, "time_unit", None) == "ns" and draw(st.booleans()):
        # A literal finer than a microsecond, which Python datetimes cannot hold.
        return (
            pl.lit(ns, dtype=pl.Datetime("ns", tz))
            if tz is None
            else pl.lit(int(wall.timestamp()) * 10**9 + ns % 10**9, dtype=pl.Datetime("ns", tz))
        )
    return wall


@st.composite
def recognised(draw: st.DrawFn, dtype: pl.DataType) -> pl.Expr:
    kind = draw(st.sampled_from(["cmp", "cmp_left", "between", "is_in", "year"]))
    if kind == "year":
        # Polars 2.2 rewrites these into ranges of the column itself (one end of which
        # may be the dtype's last date); the frames cross 2024-01-01.
        compare = {**_COMPARE, "!=": lambda a, b: a != b}
        year = draw(st.sampled_from([2023, 2024, 2025]))
        return compare[draw(st.sampled_from(list(compare)))](D.dt.year(), year)
    if kind == "between":
        closed = draw(st.sampled_from(["both", "left", "right", "none"]))
        lo, hi = sorted([draw(literals(dtype)), draw(literals(dtype))], key=_sort_key)
        return D.is_between(lo, hi, closed=closed)
    if kind == "is_in":
        days = draw(st.lists(st.integers(0, SPAN_DAYS), min_size=1, max_size=4))
        values = [(START + dt.timedelta(days=d)).date() for d in days]
        if dtype == pl.Date:
            return D.is_in(pl.Series(values).implode())
        return D.dt.date().is_in(pl.Series(values).implode())  # unrecognised shape
    op = draw(st.sampled_from(list(_COMPARE)))
    lit = draw(literals(dtype))
    operand = pl.lit(lit) if not isinstance(lit, pl.Expr) else lit
    return _COMPARE[op](D, operand) if kind == "cmp" else _COMPARE[op](operand, D)


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
}


def _sort_key(value: object) -> object:
    if isinstance(value, pl.Expr):
        return pl.select(value.dt.replace_time_zone(None).cast(pl.Int64)).item() / 10**9
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).timestamp()
    return dt.datetime.combine(value, dt.time()).timestamp()  # type: ignore[arg-type]


def unrecognised(dtype: pl.DataType) -> st.SearchStrategy[pl.Expr]:
    return st.sampled_from(
        [
            pl.col("v") > 0,
            pl.col("v").is_null(),
            pl.col("s") == "it's",
            pl.col("s").str.starts_with("a"),
            D.dt.weekday() <= 5,
            D.dt.offset_by("1d") > D,
            pl.when(pl.col("v") > 0).then(D.dt.day() < 15).otherwise(pl.col("s") == "b"),
            D.is_not_null(),
        ]
    )


@st.composite
def bounds(draw: st.DrawFn, dtype: pl.DataType, at: pl.Series | None = None) -> pl.Expr:
    """A predicate that usually bounds the column on both sides. Some are a single point
    (equal bounds, each ``closed``) or empty (``a < col < a``), often at one of ``at``'s
    values so that the point holds rows."""
    lo, hi = sorted([draw(literals(dtype)), draw(literals(dtype))], key=_sort_key)
    shape = draw(
        st.sampled_from(["between", "between", "pair", "negated_or", "point", "crossed", "other"])
    )
    if shape == "between":
        return D.is_between(lo, hi, closed=draw(st.sampled_from(["both", "left", "right", "none"])))
    if shape == "pair":
        return (D >= lo) & (pl.lit(hi) > D if not isinstance(hi, pl.Expr) else hi > D)
    if shape == "negated_or":
        return ~((D < lo) | (D > hi))
    if shape in ("point", "crossed"):
        held = [] if at is None else at.drop_nulls().to_list()
        a = draw(st.sampled_from(held)) if held and draw(st.booleans()) else lo
        if shape == "point":
            return D.is_between(
                a, a, closed=draw(st.sampled_from(["both", "left", "right", "none"]))
            )
        return (D > a) & ((a if isinstance(a, pl.Expr) else pl.lit(a)) > D)
    return draw(predicates(dtype))


def predicates(dtype: pl.DataType) -> st.SearchStrategy[pl.Expr]:
    leaves = st.one_of(recognised(dtype), recognised(dtype), unrecognised(dtype))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.tuples(children, children).map(lambda ab: ab[0] & ab[1]),
            st.tuples(children, children).map(lambda ab: ab[0] | ab[1]),
            children.map(lambda a: ~a),
        ),
        max_leaves=5,
    )
