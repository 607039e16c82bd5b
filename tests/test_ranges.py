"""The plan reader recognises the documented filter shapes on this Polars version, and
claims nothing (an unbounded range) for every other shape."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from piot_dagster.engine.intervals import IntervalSet
from piot_dagster.engine.plan_reader import Call, predicate_expr
from piot_dagster.engine.ranges import NS_PER_DAY, plan_range, predicate_range

D = pl.col("date")
JAN1 = dt.date(2024, 1, 1)
MAR31 = dt.date(2024, 3, 31)
DAY = NS_PER_DAY
JAN1_NS = (JAN1 - dt.date(1970, 1, 1)).days * DAY
MAR31_NS = (MAR31 - dt.date(1970, 1, 1)).days * DAY
EVERYTHING = IntervalSet.everything()


def date_schema() -> pl.Schema:
    return pl.Schema({"date": pl.Date, "v": pl.Int64, "s": pl.String})


def read(predicate: pl.Expr, schema: pl.Schema | None = None) -> IntervalSet:
    return predicate_range(predicate, schema or date_schema(), "date")


def test_polars_version_is_the_one_the_reader_is_pinned_to():
    traverser = pl.LazyFrame(schema=date_schema())._ldf.visit()
    assert traverser.version()[0] == 16, "re-check every test below on this Polars version"


@pytest.mark.parametrize(
    ("closed", "expected"),
    [
        ("both", (JAN1_NS, MAR31_NS + 1)),
        ("left", (JAN1_NS, MAR31_NS)),
        ("right", (JAN1_NS + 1, MAR31_NS + 1)),
        ("none", (JAN1_NS + 1, MAR31_NS)),
    ],
)
def test_is_between_gives_its_bounds_for_every_closed(closed, expected):
    assert read(D.is_between(JAN1, MAR31, closed=closed)) == IntervalSet.of([expected])


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        (D >= JAN1, (JAN1_NS, math.inf)),
        (D > JAN1, (JAN1_NS + 1, math.inf)),
        (D <= JAN1, (-math.inf, JAN1_NS + 1)),
        (D < JAN1, (-math.inf, JAN1_NS)),
        (D == JAN1, (JAN1_NS, JAN1_NS + 1)),
        (pl.lit(JAN1) <= D, (JAN1_NS, math.inf)),
        (pl.lit(JAN1) > D, (-math.inf, JAN1_NS)),
        (pl.lit(JAN1) == D, (JAN1_NS, JAN1_NS + 1)),
    ],
)
def test_comparisons_with_the_literal_on_either_side(predicate, expected):
    assert read(predicate) == IntervalSet.of([expected])


def test_and_intersects_and_or_unites():
    both = (D >= JAN1) & (D <= MAR31)
    assert read(both) == IntervalSet.of([(JAN1_NS, MAR31_NS + 1)])
    either = (D == JAN1) | (D == MAR31)
    assert read(either) == IntervalSet.of([(JAN1_NS, JAN1_NS + 1), (MAR31_NS, MAR31_NS + 1)])


def test_is_in_of_dates_gives_one_piece_per_date():
    got = read(D.is_in(pl.Series([JAN1, MAR31]).implode()))
    assert got == IntervalSet.of([(JAN1_NS, JAN1_NS + 1), (MAR31_NS, MAR31_NS + 1)])


def test_is_in_matching_nulls_claims_nothing():
    predicate = D.is_in(pl.Series([JAN1, None]).implode(), nulls_equal=True)
    assert read(predicate) == EVERYTHING


@pytest.mark.parametrize(
    "predicate",
    [
        D.dt.offset_by("1d") >= JAN1,
        # Polars 2.2 rewrites a comparison of dt.year() into a range of the column, but
        # not these (see the calendar tests below).
        D.dt.month() == 3,
        D.dt.year().is_in([2024]),
        D.dt.year().is_between(2023, 2024),
        D != JAN1,
        D.is_null(),
        pl.when(pl.col("v") > 0).then(D >= JAN1).otherwise(D <= JAN1),
        D.cast(pl.String) >= "2024",
        pl.col("v") > 3,
        D >= pl.col("date").min(),
        D.is_between(pl.col("date").min(), pl.col("date").max()),
    ],
)
def test_unrecognised_shapes_claim_nothing(predicate):
    assert read(predicate) == EVERYTHING


# Polars 2.2 rewrites `col.dt.year() <op> year` on a Date or naive Datetime column into
# comparisons of the column itself: `== 2024` into `is_between(2024-01-01, 2025-01-01,
# closed="left")`, `>= 2024` into `is_between(2024-01-01, <the dtype's last date>)`, whose
# far end (year 262142) no Python date can hold. These tests pin what the reader sees.
NAIVE = [pl.Date, pl.Datetime("ms"), pl.Datetime("us"), pl.Datetime("ns")]
JAN1_2025_NS = (dt.date(2025, 1, 1) - dt.date(1970, 1, 1)).days * DAY
INF = math.inf


@pytest.mark.parametrize("dtype", NAIVE, ids=str)
def test_a_year_equality_is_read_as_the_years_half_open_window(dtype):
    schema = pl.Schema({"date": dtype, "v": pl.Int64})
    seen = predicate_expr(D.dt.year() == 2024, schema)
    assert isinstance(seen, Call)
    assert (seen.function, seen.options) == ("IsBetween", ("left",)), "the end is excluded"
    # A nanosecond literal is shown truncated to microseconds: its bound widens by 999 ns.
    slack = 999 if dtype == pl.Datetime("ns") else 0
    assert read(D.dt.year() == 2024, schema) == IntervalSet.of(
        [(JAN1_NS - slack, JAN1_2025_NS + slack)]
    )


@pytest.mark.parametrize("dtype", NAIVE, ids=str)
@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        (D.dt.year() >= 2024, [(JAN1_NS, INF)]),
        (D.dt.year() > 2024, [(JAN1_2025_NS, INF)]),
        (D.dt.year() < 2024, [(-INF, JAN1_NS)]),
        (D.dt.year() <= 2024, [(-INF, JAN1_2025_NS)]),
        (D.dt.year() != 2024, [(-INF, JAN1_NS), (JAN1_2025_NS, INF)]),
        (~(D.dt.year() == 2024), [(-INF, JAN1_NS), (JAN1_2025_NS, INF)]),
    ],
    ids=[">=", ">", "<", "<=", "!=", "not =="],
)
def test_a_year_inequality_keeps_its_calendar_bound_and_claims_nothing_past_the_dtype(
    dtype, predicate, expected
):
    got = read(predicate, pl.Schema({"date": dtype, "v": pl.Int64}))
    slack = 999 if dtype == pl.Datetime("ns") else 0
    # Within the slack of a truncated nanosecond literal, never narrower than expected.
    widened = IntervalSet.of([(a - slack, b + slack) for a, b in expected])
    assert all(any(a <= lo and hi <= b for a, b in widened) for lo, hi in got), (
        f"{got} is not within {widened}"
    )
    assert all(any(a <= lo and hi <= b for a, b in got) for lo, hi in expected), (
        f"{got} is narrower than {expected}"
    )


@pytest.mark.parametrize("dtype", NAIVE, ids=str)
@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_a_year_comparison_bounds_every_row_polars_keeps_at_the_years_edges(dtype, op):
    def at(ns: int) -> int:
        return ns if dtype != pl.Date else ns - ns % DAY

    edges = [JAN1_NS, JAN1_2025_NS]
    instants = sorted({at(e + o) for e in edges for o in (-DAY, -1, 0, 1, DAY)})
    frame = pl.DataFrame({"date": pl.Series(instants).cast(pl.Datetime("ns"))})
    frame = frame.with_columns(D.dt.date() if dtype == pl.Date else D.cast(dtype))
    compare = {
        "==": D.dt.year() == 2024,
        "!=": D.dt.year() != 2024,
        "<": D.dt.year() < 2024,
        "<=": D.dt.year() <= 2024,
        ">": D.dt.year() > 2024,
        ">=": D.dt.year() >= 2024,
    }[op]
    derived = read(compare, frame.schema)
    kept = (
        [d * DAY for d in frame.filter(compare)["date"].to_physical().to_list()]
        if dtype == pl.Date
        else kept_instants(frame, compare)
    )
    assert kept, "the edges hold rows that Polars keeps"
    for instant in kept:
        assert any(a <= instant < b for a, b in derived), (op, instant)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_a_year_comparison_on_a_tz_aware_column_stays_unread(zone):
    # Polars 2.2 leaves these as dt.year() calls: the reader claims nothing of them.
    schema = pl.Schema({"date": pl.Datetime("us", zone)})
    for predicate in (D.dt.year() == 2024, D.dt.year() >= 2024, D.dt.year() != 2024):
        assert read(predicate, schema) == EVERYTHING


def test_not_of_a_comparison_is_read_as_polars_rewrites_it():
    assert read(~(D < JAN1)) == IntervalSet.of([(JAN1_NS, math.inf)])


def test_negations_follow_de_morgan():
    assert read(~((D < JAN1) | (D > MAR31))) == IntervalSet.of([(JAN1_NS, MAR31_NS + 1)])
    assert read(~~D.is_between(JAN1, MAR31)) == IntervalSet.of([(JAN1_NS, MAR31_NS + 1)])
    outside = IntervalSet.of([(-math.inf, JAN1_NS), (MAR31_NS + 1, math.inf)])
    assert read(~D.is_between(JAN1, MAR31)) == outside
    assert read(~D.is_in(pl.Series([JAN1]).implode())) == EVERYTHING


def test_is_between_with_one_column_bound_keeps_the_literal_side():
    assert read(D.is_between(JAN1, pl.col("date").max())) == IntervalSet.of([(JAN1_NS, math.inf)])


def test_or_with_an_unrecognised_branch_claims_nothing():
    assert read((D >= JAN1) & (D <= MAR31) | (pl.col("v") > 3)) == EVERYTHING


def test_and_with_an_unrecognised_term_keeps_the_recognised_bound():
    got = read(D.is_between(JAN1, MAR31) & (pl.col("v") > 3) & D.dt.month().is_in([1, 2]))
    assert got == IntervalSet.of([(JAN1_NS, MAR31_NS + 1)])


def test_date_column_against_a_datetime_literal_is_read_through_the_cast():
    noon = dt.datetime(2024, 1, 1, 12)
    got = read(D >= noon)
    # date >= noon holds from 2024-01-02 on; the instant bound is noon itself.
    assert got == IntervalSet.of([(JAN1_NS + DAY // 2, math.inf)])
    assert got.rescale(DAY) == IntervalSet.of([(JAN1_NS // DAY + 1, math.inf)])


def kept_instants(frame: pl.DataFrame, predicate: pl.Expr) -> list[int]:
    """The instants (ns) of the rows plain Polars keeps."""
    kept = frame.filter(predicate)["date"]
    unit = {"ns": 1, "us": 1_000, "ms": 1_000_000}[kept.dtype.time_unit]
    return [v * unit for v in kept.to_physical().to_list()]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_naive_datetime_bounds_contain_every_row_polars_keeps(unit):
    base = dt.datetime(2024, 1, 1)
    offsets = [-2, -1, 0, 1, 999, 1_000, 1_001, 10**6 - 1, 10**6, 10**6 + 1]
    frame = pl.DataFrame(
        {"date": pl.Series([JAN1_NS + o for o in offsets]).cast(pl.Datetime("ns"))}
    ).with_columns(D.dt.cast_time_unit(unit))
    for lo, hi in [(base, base + dt.timedelta(microseconds=1)), (base, base)]:
        for closed in ("both", "left", "right", "none"):
            predicate = D.is_between(lo, hi, closed=closed)
            derived = read(predicate, frame.schema)
            for instant in kept_instants(frame, predicate):
                assert any(a <= instant < b for a, b in derived), (unit, closed, instant)


def test_tz_aware_column_reads_utc_instants():
    zone = "America/New_York"
    schema = pl.Schema({"date": pl.Datetime("us", zone)})
    start = dt.datetime(2024, 1, 1, 9, 30, tzinfo=ZoneInfo(zone))
    end = dt.datetime(2024, 1, 1, 16, tzinfo=ZoneInfo(zone))
    got = read(D.is_between(start, end, closed="left"), schema)
    as_ns = [int(t.timestamp()) * 10**9 for t in (start, end)]
    assert got == IntervalSet.of([tuple(as_ns)])


def test_date_literal_on_a_tz_aware_column_means_midnight_utc():
    schema = pl.Schema({"date": pl.Datetime("ns", "Europe/Berlin")})
    lower = read(D >= JAN1, schema).pieces[0][0]
    # Widened by the IR's truncation of a nanosecond literal, never narrowed.
    assert JAN1_NS - 999 <= lower <= JAN1_NS


def test_literal_in_another_time_zone_claims_nothing():
    schema = pl.Schema({"date": pl.Datetime("us", "Europe/Berlin")})
    other = dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC"))
    assert read(D >= other, schema) == EVERYTHING


def test_filters_inside_a_plan_are_found_below_row_preserving_nodes():
    frame = pl.LazyFrame({"date": [JAN1], "v": [1]})
    lf = (
        frame.filter(D.is_between(JAN1, MAR31))
        .with_columns(w=pl.col("v") * 2)
        .sort("v")
        .unique()
        .select("date", "w")
        .head(5)
    )
    assert plan_range(lf, "date") == IntervalSet.of([(JAN1_NS, MAR31_NS + 1)])


def test_filters_found_on_both_sides_of_a_pushdown_are_intersected():
    frame = pl.LazyFrame({"date": [JAN1], "v": [1]})
    lf = frame.filter(D >= JAN1).with_columns(w=1).filter(D < MAR31)
    assert plan_range(lf, "date") == IntervalSet.of([(JAN1_NS, MAR31_NS)])


def test_a_recomputed_date_column_hides_the_filters_below_it():
    frame = pl.LazyFrame({"date": [JAN1], "v": [1]})
    shifted = frame.filter(D.is_between(JAN1, MAR31)).with_columns(date=D.dt.offset_by("1y"))
    assert plan_range(shifted, "date") == EVERYTHING
    renamed = frame.filter(D.is_between(JAN1, MAR31)).select(date=pl.col("date").max())
    assert plan_range(renamed, "date") == EVERYTHING


def test_a_union_is_bounded_only_when_every_input_is():
    a = pl.LazyFrame({"date": [JAN1]}).filter(D.is_between(JAN1, JAN1))
    b = pl.LazyFrame({"date": [MAR31]}).filter(D.is_between(MAR31, MAR31))
    both = plan_range(pl.concat([a, b]), "date")
    assert both == IntervalSet.of([(JAN1_NS, JAN1_NS + 1), (MAR31_NS, MAR31_NS + 1)])
    assert plan_range(pl.concat([a, pl.LazyFrame({"date": [MAR31]})]), "date") == EVERYTHING


def test_a_join_claims_nothing():
    left = pl.LazyFrame({"date": [JAN1], "k": [1]}).filter(D.is_between(JAN1, MAR31))
    right = pl.LazyFrame({"k": [1]})
    assert plan_range(left.join(right, on="k", how="full"), "date") == EVERYTHING
