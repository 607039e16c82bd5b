"""A period's rows in chunks, and a streaming task's retry checked against the rows its
failed attempt handed on (engine/chunks.py), without Ray."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from piot_dagster.engine.chunks import CHUNK_BYTES, Handed, ReplayMismatch, chunks, plain_rows

ROWS = pl.DataFrame({"v": range(10), "s": [f"row {i}" for i in range(10)]})


def test_a_query_larger_than_a_chunk_comes_in_chunks_with_only_the_last_marked():
    rows = 3 * CHUNK_BYTES // 8  # three chunks of Int64
    got = list(chunks(pl.LazyFrame({"v": pl.int_range(rows, eager=True)})))
    assert [last for _, last in got] == [False] * (len(got) - 1) + [True]
    assert len(got) >= 3
    assert_frame_equal(pl.concat(f for f, _ in got), pl.DataFrame({"v": range(rows)}))
    assert all(f.estimated_size() < 2 * CHUNK_BYTES for f, _ in got)


def test_a_query_without_rows_gives_one_empty_last_chunk_of_its_schema():
    ((frame, last),) = list(chunks(ROWS.lazy().filter(pl.col("v") < 0)))
    assert last
    assert frame.is_empty()
    assert frame.schema == ROWS.schema


def handed_on(*frames: pl.DataFrame) -> Handed:
    handed = Handed()
    for frame in frames:
        assert_frame_equal(handed.onward(frame, last=False), frame)
    return handed


def test_a_retry_giving_the_same_first_rows_in_another_order_goes_on_after_them():
    handed = handed_on(ROWS[:3], ROWS[3:6])
    handed.retry()
    replay = pl.concat([ROWS[:6].reverse(), ROWS[6:]])
    assert handed.onward(replay[:4], last=False).is_empty()
    assert_frame_equal(handed.onward(replay[4:], last=True), ROWS[6:])
    assert handed.rows == 10


def test_a_retry_whose_first_rows_differ_is_refused():
    handed = handed_on(ROWS[:5])
    handed.retry()
    with pytest.raises(ReplayMismatch, match="handed on 5 rows"):
        handed.onward(ROWS[5:], last=False)


def test_a_retry_that_ends_before_the_rows_handed_on_is_refused():
    handed = handed_on(ROWS[:5])
    handed.retry()
    with pytest.raises(ReplayMismatch):
        handed.onward(ROWS[:3], last=True)


def test_a_plain_task_sends_about_a_chunk_of_rows_of_its_schema():
    narrow = pl.Schema({"v": pl.Int64})
    wide = pl.Schema({f"s{i}": pl.String for i in range(20)})
    assert plain_rows(narrow) == 1_000_000  # 2M rows of Int64 fit: capped
    assert plain_rows(wide) == CHUNK_BYTES // (20 * 32)  # 32 bytes a string
    assert plain_rows(pl.Schema({f"s{i}": pl.String for i in range(4000)})) == 10_000
