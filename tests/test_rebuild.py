"""A plan's in-memory frames travel as Arrow and the plan is rebuilt over them, exactly;
plans the IR view cannot fully show travel whole."""

from __future__ import annotations

import datetime as dt
import pickle

import polars as pl
import pytest
import ray
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from polars.io.plugins import register_io_source
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster.engine.ray_tasks import ShippedPlan
from piot_dagster.engine.rebuild import Detached, detach
from tests.strategies import D, bounds, date_dtypes, examples, frames, predicates

SETTINGS = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Column expressions a plan may add; the last two are shapes rebuilding does not take.
NEW_COLUMNS = [
    pl.col("v") * 2 + 1,
    (pl.col("v") // 3).cast(pl.Float32),
    pl.col("v").cast(pl.Int8, strict=False),
    pl.col("v").cast(pl.UInt8, wrap_numerical=True),
    D.dt.month(),
    D.dt.date(),
    pl.when(pl.col("v") > 0).then(pl.col("s")).otherwise(pl.lit("neg")),
    pl.col("s").str.ends_with("b") | pl.col("v").is_null(),
    pl.col("v").abs().is_between(1, 3, closed="left"),
    pl.col("v").cum_sum(),
    pl.col("v").rank(),
]


@st.composite
def plans(draw: st.DrawFn) -> pl.LazyFrame:
    """A random plan over one to three in-memory frames of one schema."""
    dtype = draw(date_dtypes)
    inputs = [draw(frames(dtype, max_rows=30)) for _ in range(draw(st.integers(1, 3)))]
    lf = pl.concat([f.lazy() for f in inputs]) if len(inputs) > 1 else inputs[0].lazy()
    for _ in range(draw(st.integers(0, 4))):
        step = draw(st.sampled_from(["filter", "bound", "with", "select", "slice", "sort"]))
        if step == "filter":
            lf = lf.filter(draw(predicates(dtype)))
        elif step == "bound":
            lf = lf.filter(draw(bounds(dtype)))
        elif step == "with":
            lf = lf.with_columns(x=draw(st.sampled_from(NEW_COLUMNS)))
        elif step == "select":
            lf = lf.select(draw(st.sampled_from([["date", "v", "s"], ["s", "date", "v"]])))
        elif step == "slice":
            offset = draw(st.integers(-5, 5))
            lf = draw(st.sampled_from([lf.head(abs(offset)), lf.tail(abs(offset))]))
            lf = lf.slice(offset, draw(st.one_of(st.none(), st.integers(0, 10))))
        else:  # a stable sort: ties in an unstable one come back in any order
            lf = lf.sort(
                "s",
                "date",
                descending=draw(st.booleans()),
                nulls_last=draw(st.booleans()),
                maintain_order=True,
            )
    return lf


@SETTINGS
@given(lf=plans())
def test_a_rebuilt_plan_returns_exactly_what_the_original_returns(lf):
    note(lf.explain(optimized=False))
    try:
        expected = lf.collect()
    except pl.exceptions.PolarsError:
        return
    detached = detach(lf)
    event("rebuilt" if detached is not None else "shipped whole")
    if detached is not None:
        assert_frame_equal(pickle.loads(pickle.dumps(detached)).plan().collect(), expected)


def _frame(days: int, start: dt.date = dt.date(2024, 1, 1)) -> pl.DataFrame:
    dates = pl.date_range(start, start + dt.timedelta(days=days - 1), eager=True)
    return pl.DataFrame(
        {
            "date": dates,
            "v": pl.int_range(dates.len(), eager=True),
            "s": pl.Series(["a", "b", "c"]).gather(pl.int_range(dates.len(), eager=True) % 3),
        }
    )


YEAR = _frame(366)
NEXT = _frame(31, dt.date(2025, 1, 1))
DIM = pl.DataFrame({"s": ["a", "b"], "w": [10, 20]})

SHAPES = {
    "filter": YEAR.lazy().filter(pl.col("v") % 2 == 0),
    "several frames": pl.concat([YEAR.lazy(), NEXT.lazy()]).filter(pl.col("s") != "c"),
    "head": YEAR.lazy().filter(pl.col("s") == "b").head(40),
    "columns and sort": YEAR.lazy()
    .with_columns(m=D.dt.month(), x=pl.col("v") * 2)
    .sort("m", "date", descending=[True, False]),
    "a join": YEAR.lazy().join(DIM.lazy(), on="s", how="left", maintain_order="left"),
}


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("unit", ["daily", "monthly"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_execute_on_ray_over_in_memory_frames_equals_plain_polars(shape, unit):
    lf = SHAPES[shape]
    bound = D.is_between(dt.date(2024, 3, 1), dt.date(2025, 1, 20))
    got = lf.piot.execute_on_ray(date_column="date", time_unit=unit).filter(bound)
    expected = lf.filter(bound).collect()
    if shape == "columns and sort":  # rows come back in period order
        expected = expected.sort("date", maintain_order=True)
    assert_frame_equal(got.collect(), expected)


@pytest.mark.parametrize("shape", ["filter", "several frames", "head", "columns and sort"])
def test_a_plan_over_in_memory_frames_is_rebuilt_without_them(shape):
    lf = SHAPES[shape]
    detached = detach(lf)
    assert detached is not None
    assert len(pickle.dumps(detached.recipe)) < 4_000 < len(pickle.dumps(lf))
    assert_frame_equal(detached.plan().collect(), lf.collect())


@pytest.mark.usefixtures("ray_cluster")
def test_workers_receive_in_memory_frames_as_arrow_beside_the_recipe():
    shipped = ray.get(ShippedPlan(SHAPES["several frames"]).ref())
    assert isinstance(shipped, Detached)
    assert [t.num_rows for t in shipped.tables] == [366, 31]
    assert_frame_equal(shipped.plan().collect(), SHAPES["several frames"].collect())


def _no_rows(with_columns, predicate, n_rows, batch_size):
    yield YEAR.head(0)


WHOLE = {
    # The IR view does not show a join's validate, which can turn a result into an error.
    "a validated join": YEAR.lazy().join(DIM.lazy(), on="s", how="left", validate="m:1"),
    # The view shows nanosecond literals truncated to microseconds.
    "a nanosecond literal": YEAR.lazy()
    .with_columns(t=D.cast(pl.Datetime("ns")))
    .filter(pl.col("t") > pl.lit(1_704_067_200_000_000_001, dtype=pl.Datetime("ns"))),
    "an aggregation": YEAR.lazy().group_by("s").agg(pl.col("v").sum()),
    "a Python function": YEAR.lazy().with_columns(
        pl.col("v").map_batches(lambda s: s * 2, return_dtype=pl.Int64)
    ),
    "a window function": YEAR.lazy().with_columns(pl.col("v").sum().over("s")),
    "no in-memory frame": register_io_source(_no_rows, schema=YEAR.schema),
    "an IO source beside a frame": pl.concat(
        [YEAR.lazy(), register_io_source(_no_rows, schema=YEAR.schema)]
    ),
}


@pytest.mark.parametrize("shape", list(WHOLE))
def test_plans_the_ir_view_cannot_fully_show_travel_whole(shape):
    assert detach(WHOLE[shape]) is None


def test_a_validated_join_still_fails_through_execute_on_ray(ray_cluster):
    doubled = pl.concat([DIM, DIM]).lazy()
    lf = YEAR.lazy().join(doubled, on="s", how="left", validate="m:1")
    query = lf.piot.execute_on_ray(date_column="date", time_unit="monthly").filter(
        D.is_between(dt.date(2024, 1, 1), dt.date(2024, 2, 28))
    )
    with pytest.raises(piot_dagster.PeriodExecutionError, match="m:1"):
        query.collect()


def test_a_rebuilt_plan_keeps_what_polars_knew_of_sorted_columns():
    frame = YEAR.with_columns(pl.col("v").set_sorted(), pl.col("s").set_sorted(descending=True))
    detached = detach(frame.lazy().filter(pl.col("v") > 3))
    assert detached is not None
    rebuilt = detached.frames()[0]
    assert [rebuilt[c].flags for c in frame.columns] == [frame[c].flags for c in frame.columns]


@pytest.mark.parametrize(
    "column",
    [
        pl.Series("e", ["x", "y"] * 183, dtype=pl.Enum(["y", "x"])),
        pl.Series("c", ["x", "y"] * 183, dtype=pl.Categorical),
        pl.Series("o", [object()] * 366, dtype=pl.Object),
        pl.Series("d", [1.5] * 366, dtype=pl.Decimal(10, 2)),
    ],
    ids=["enum", "categorical", "object", "decimal"],
)
def test_frames_of_any_dtype_are_rebuilt_exactly_or_travel_whole(column):
    lf = YEAR.with_columns(column).lazy().filter(pl.col("v") > 3)
    detached = detach(lf)
    if detached is not None:
        assert_frame_equal(detached.plan().collect(), lf.collect())
    else:
        assert column.dtype == pl.Object
