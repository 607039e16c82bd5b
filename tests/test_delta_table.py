"""The Delta table underneath RayDeltaIOManager, without Dagster or Ray: how Polars dtypes
are stored and read back, the statistics readers skip files by, and commits that replace
exactly their partitions, also when writers race (real delta-rs, real files)."""

import datetime as dt
import json
import multiprocessing
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction, CommitProperties
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from piot_dagster.errors import StorageError
from piot_dagster.storage import open_storage
from piot_dagster.storage.delta import (
    PARTITION_COLUMN,
    DeltaFileWriter,
    DeltaTarget,
    partition_folder,
    restore,
    stored,
)
from piot_dagster.storage.delta.stats import file_stats


def commit(base: Path, frames: dict[str, pl.DataFrame], *, mode=None, properties=None) -> int:
    """Write ``frames`` (one per partition key) as a task would, and commit them."""
    storage = open_storage(str(base))
    schema = next(iter(frames.values())).schema
    columns = stored(schema)
    files = [
        file
        for key, frame in frames.items()
        for file in DeltaFileWriter(storage, "t", key, tuple(columns), {}, None)
        .write(frame.lazy())
        .files
    ]
    target = DeltaTarget(storage, "t", partitioned=True)
    return target.commit(
        files, columns, schema_mode=mode, partitions=list(frames), properties=properties or {}
    )


def read(base: Path) -> pl.DataFrame:
    """The table as RayDeltaIOManager reads it: the written dtypes restored."""
    table = DeltaTable(str(base / "t"))
    return pl.scan_delta(table).with_columns(restore(pa.schema(table.schema().to_arrow())))


# Types ----------------------------------------------------------------------------------

EXACT = pl.DataFrame(
    {
        "naive": [dt.datetime(2024, 1, 5, 10, 0, 0, 123456), None],
        "berlin": pl.Series(
            [dt.datetime(2024, 3, 31, 1, 30), dt.datetime(2024, 10, 27, 2, 30)]
        ).dt.replace_time_zone("Europe/Berlin", ambiguous="earliest"),
        "utc": pl.Series([dt.datetime(2024, 1, 1), None]).dt.replace_time_zone("UTC"),
        "ms": pl.Series([dt.datetime(2024, 1, 1, 0, 0, 0, 5000), None], dtype=pl.Datetime("ms")),
        "ns": pl.Series([dt.datetime(2024, 1, 1, 0, 0, 0, 7), None], dtype=pl.Datetime("ns")),
        "day": [dt.date(1970, 1, 1), dt.date(2099, 12, 31)],
        "u8": pl.Series([0, 255], dtype=pl.UInt8),
        "u16": pl.Series([0, 65535], dtype=pl.UInt16),
        "u32": pl.Series([0, 2**32 - 1], dtype=pl.UInt32),
        "u64": pl.Series([0, 2**63 - 1], dtype=pl.UInt64),
        "i8": pl.Series([-128, 127], dtype=pl.Int8),
        "f32": pl.Series([1.5, float("nan")], dtype=pl.Float32),
        "dec": pl.Series([Decimal("1.25"), None], dtype=pl.Decimal(10, 2)),
        "cat": pl.Series(["a", None], dtype=pl.Categorical),
        "text": ["ünïcödé", ""],
        "blob": [b"\x00\xff", None],
        "flag": [True, None],
        "tags": [["a"], None],
        "point": [{"x": 1}, None],
    }
)


def test_every_dtype_delta_can_hold_reads_back_exactly_as_written(tmp_path):
    commit(tmp_path, {"2024-01-05": EXACT})

    assert_frame_equal(read(tmp_path).drop(PARTITION_COLUMN).collect(), EXACT)


@pytest.mark.parametrize(
    ("dtype", "names"),
    [
        (pl.Time, ["'t'", "time-of-day"]),
        (pl.Duration("us"), ["'t'", "interval"]),
        (pl.Null, ["'t'", "cast it"]),
        (pl.Enum(["a"]), ["'t'", "String or Categorical"]),
        (pl.Array(pl.Int64, 2), ["'t'", "List"]),
        (pl.List(pl.UInt8), ["'t'", "nests UInt8"]),
    ],
)
def test_a_dtype_delta_cannot_hold_exactly_is_refused_naming_the_column(dtype, names):
    with pytest.raises(TypeError) as error:
        stored(pl.Schema({"t": dtype}))
    for name in names:
        assert name in str(error.value)


def test_values_delta_cannot_hold_exactly_are_refused_never_rounded(tmp_path):
    storage = open_storage(str(tmp_path))
    nanoseconds = pl.DataFrame({"ts": [dt.datetime(2024, 1, 1)]}).cast(pl.Datetime("ns"))
    nanoseconds = nanoseconds.with_columns(pl.col("ts") + pl.duration(nanoseconds=1))
    too_big = pl.DataFrame({"big": pl.Series([2**64 - 1], dtype=pl.UInt64)})
    for frame, hint in [
        (nanoseconds, "'ts' holds timestamps with nanoseconds"),
        (too_big, r"'big' holds UInt64 .* Decimal\(20, 0\)"),
    ]:
        writer = DeltaFileWriter(storage, "t", "k", tuple(stored(frame.schema)), {}, None)
        with pytest.raises(ValueError, match=hint):
            writer.write(frame.lazy())
    assert not list(tmp_path.rglob("*.parquet"))


# Files rolled at a target size ----------------------------------------------------------


def rolled(tmp_path: Path) -> tuple[DeltaFileWriter, pl.LazyFrame]:
    """A writer rolling files at 512 KiB, and 3.2 MB of rows that do not compress."""
    frame = pl.DataFrame({"v": pl.int_range(400_000, eager=True).hash(1) // 2}).cast(pl.Int64)
    storage = open_storage(str(tmp_path))
    columns = tuple(stored(frame.schema))
    return DeltaFileWriter(storage, "t", "k", columns, {}, None, file_bytes=2**19), frame.lazy()


def test_a_rolled_write_refused_after_some_files_were_put_leaves_no_file(tmp_path):
    writer, lf = rolled(tmp_path)
    asked = []

    def proceed() -> bool:
        asked.append(True)
        return len(asked) < 3

    assert writer.write(lf, proceed=proceed) is None
    assert len(asked) == 3, "two files were put before the third was refused"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_discarding_a_rolled_write_removes_every_file(tmp_path):
    writer, lf = rolled(tmp_path)
    written = writer.write(lf)
    assert written is not None
    assert len(written.files) > 2
    assert sum(f.rows for f in written.files) == written.rows == 400_000

    writer.discard()

    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# Statistics -----------------------------------------------------------------------------

values = st.one_of(
    st.tuples(st.just(pl.Int64), st.lists(st.none() | st.integers(-(2**63), 2**63 - 1))),
    st.tuples(st.just(pl.Float64), st.lists(st.none() | st.floats(allow_nan=True))),
    st.tuples(st.just(pl.Date), st.lists(st.none() | st.dates())),
    st.tuples(
        st.just(pl.Datetime("us")),
        st.lists(st.none() | st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31))),
    ),
    st.tuples(
        st.just(pl.Datetime("us", "UTC")),
        st.lists(st.none() | st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2200, 1, 1))),
    ),
    st.tuples(st.just(pl.String), st.lists(st.none() | st.text(max_size=80))),
    st.tuples(st.just(pl.Boolean), st.lists(st.none() | st.booleans())),
)


@settings(max_examples=60, deadline=None)
@given(column=values)
def test_statistics_delta_rs_reads_back_bound_every_value_of_the_file(tmp_path_factory, column):
    """Readers skip a file whose bounds exclude a filter's values: a bound narrower than
    the data would lose rows. delta-rs parses what we write, and its bounds must hold."""
    dtype, items = column
    series = pl.Series("v", items, dtype=dtype if dtype != pl.Datetime("us", "UTC") else None)
    if dtype == pl.Datetime("us", "UTC"):
        series = series.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    frame = series.to_frame()
    base = tmp_path_factory.mktemp("stats")
    commit(base, {"p": frame})

    actions = pl.DataFrame(DeltaTable(str(base / "t")).get_add_actions(flatten=True))
    assert actions["num_records"].item() == frame.height
    assert actions["null_count.v"].item() == series.null_count()
    present = series.drop_nulls()
    if "min.v" not in actions.columns or actions["min.v"].item() is None:
        return  # no bound written: the file is always read
    low, high = actions["min.v"].item(), actions["max.v"].item()
    assert low <= present.min()
    assert present.max() <= high


def test_timestamp_bounds_are_milliseconds_rounded_outwards():
    frame = pl.DataFrame({"ts": [dt.datetime(2024, 1, 5, 10, 0, 0, 123456)]})

    stats = json.loads(file_stats(frame.lazy()))

    assert stats["minValues"] == {"ts": "2024-01-05 10:00:00.123"}
    assert stats["maxValues"] == {"ts": "2024-01-05 10:00:00.124"}


# Commits --------------------------------------------------------------------------------


def day(key: str, rows: int, writer: str = "a") -> pl.DataFrame:
    stamp = dt.datetime.fromisoformat(key)
    return pl.DataFrame({"ts": [stamp] * rows, "writer": [writer] * rows})


def test_a_commit_replaces_exactly_its_partitions_and_records_its_run(tmp_path):
    assert commit(tmp_path, {k: day(k, 2) for k in ("2024-01-01", "2024-01-02", "2024-01-03")}) == 0

    version = commit(
        tmp_path, {"2024-01-02": day("2024-01-02", 5, "b")}, properties={"dagster_run_id": "r2"}
    )

    table = DeltaTable(str(tmp_path / "t"))
    assert version == table.version() == 1
    assert table.history(1)[0]["dagster_run_id"] == "r2"
    counts = read(tmp_path).group_by(PARTITION_COLUMN, "writer").len().sort(PARTITION_COLUMN)
    assert counts.collect().rows() == [
        ("2024-01-01", "a", 2), ("2024-01-02", "b", 5), ("2024-01-03", "a", 2)
    ]  # fmt: skip


def test_other_engines_read_exactly_the_rows_stored(tmp_path):
    frames = {k: day(k, 3) for k in ("2024-01-01", "2024-01-02")}
    commit(tmp_path, frames)
    commit(tmp_path, {"2024-01-02": day("2024-01-02", 1, "b")})
    expected = pl.concat([frames["2024-01-01"], day("2024-01-02", 1, "b")])

    table = DeltaTable(str(tmp_path / "t"))
    by_delta_rs = pl.DataFrame(table.to_pyarrow_table()).drop(PARTITION_COLUMN)
    by_pyarrow = pl.DataFrame(pyarrow.dataset.dataset(table.file_uris()).to_table())
    by_polars = pl.scan_delta(str(tmp_path / "t")).drop(PARTITION_COLUMN).collect()
    for got in (by_delta_rs, by_pyarrow, by_polars):
        assert_frame_equal(got, expected, check_row_order=False)


def test_partition_keys_of_any_characters_round_trip_through_their_folders(tmp_path):
    keys = ["2024-01-05-13:00", "2024-01-05|SYM 01", "a/b=c%d", "é#?&+,"]
    commit(tmp_path, {k: day("2024-01-05", 1, k) for k in keys})

    got = read(tmp_path).select(PARTITION_COLUMN, "writer").collect()
    assert sorted(got.rows()) == sorted((k, k) for k in keys)
    assert partition_folder("a/b") == "dagster_partition=a%2Fb"


def test_a_new_column_needs_schema_mode_merge_and_a_changed_dtype_always_fails(tmp_path):
    commit(tmp_path, {"2024-01-01": day("2024-01-01", 1)})
    wider = day("2024-01-02", 1).with_columns(note=pl.lit("n"))

    with pytest.raises(ValueError, match=r"\['note'\].*schema_mode': 'merge'"):
        commit(tmp_path, {"2024-01-02": wider})
    commit(tmp_path, {"2024-01-02": wider}, mode="merge")
    got = read(tmp_path).sort("ts").collect()
    assert got["note"].to_list() == [None, "n"]

    retyped = day("2024-01-03", 1).with_columns(pl.col("writer").cast(pl.Categorical))
    with pytest.raises(ValueError, match="'writer' is Categorical in the frame but String"):
        commit(tmp_path, {"2024-01-03": retyped.with_columns(note=pl.lit("n"))}, mode="merge")


def test_a_zone_other_than_the_tables_is_refused_saying_how_to_convert(tmp_path):
    berlin = day("2024-01-01", 1).with_columns(pl.col("ts").dt.replace_time_zone("Europe/Berlin"))
    commit(tmp_path, {"2024-01-01": berlin})
    york = berlin.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))

    with pytest.raises(ValueError, match=r"convert_time_zone\('Europe/Berlin'\)"):
        commit(tmp_path, {"2024-01-02": york})


def test_a_folder_of_other_files_is_not_taken_for_a_table(tmp_path):
    (tmp_path / "t").mkdir()
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "t" / "2024-01-01.parquet")
    target = DeltaTarget(open_storage(str(tmp_path)), "t", partitioned=True)

    with pytest.raises(StorageError, match=r"no Delta table \(no _delta_log\).*another base_dir"):
        target.open_for_writing()


def test_a_table_partitioned_otherwise_is_refused(tmp_path):
    frame = pl.DataFrame({"p": ["x"], "v": [1]})
    write_deltalake(str(tmp_path / "t"), frame.to_arrow(), partition_by="p")
    target = DeltaTarget(open_storage(str(tmp_path)), "t", partitioned=True)

    with pytest.raises(StorageError, match=r"partitioned by \['p'\].*\['dagster_partition'\]"):
        target.open()


# Concurrent writers ---------------------------------------------------------------------


def test_delta_rs_own_retries_would_duplicate_a_new_partition_written_twice_at_once(tmp_path):
    """Why commits are made one version at a time: two overwrites of a partition that has
    no file yet, each from the version before the other, both pass delta-rs's conflict
    checker, and the partition then holds both writers' rows."""
    commit(tmp_path, {"2024-01-01": day("2024-01-01", 1)})
    first, second = DeltaTable(str(tmp_path / "t")), DeltaTable(str(tmp_path / "t"))
    storage = open_storage(str(tmp_path))
    schema = first.schema()
    for table, rows in ((first, 2), (second, 3)):
        frame = day("2024-01-02", rows)
        file = DeltaFileWriter(storage, "t", "2024-01-02", tuple(stored(frame.schema)), {}, None)
        [written] = file.write(frame.lazy()).files
        add = AddAction(written.path, written.bytes, dict(written.partition_values),
                        written.modified_ms, True, written.stats)  # fmt: skip
        table.create_write_transaction(
            [add], mode="overwrite", schema=schema, partition_by=[PARTITION_COLUMN],
            partition_filters=[(PARTITION_COLUMN, "in", ["2024-01-02"])],
            commit_properties=CommitProperties(),
        )  # fmt: skip

    assert read(tmp_path).filter(pl.col(PARTITION_COLUMN) == "2024-01-02").collect().height == 5


def _race(base: str, key: str, writer: str, rows: int, start) -> int:
    start.wait()
    return commit(Path(base), {key: day("2024-01-02", rows, writer)}, properties={"by": writer})


@pytest.mark.parametrize("same", [True, False], ids=["same-new-partition", "disjoint"])
def test_racing_writers_each_commit_once_and_never_duplicate_or_drop_rows(tmp_path, same):
    commit(tmp_path, {"2024-01-01": day("2024-01-01", 1)})
    writers = 4
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(writers) as pool:
        start = manager.Barrier(writers)
        jobs = [
            pool.apply_async(
                _race,
                (
                    str(tmp_path),
                    "2024-01-02" if same else f"2024-01-0{2 + i}",
                    f"w{i}",
                    i + 1,
                    start,
                ),
            )
            for i in range(writers)
        ]
        versions = sorted(job.get(timeout=120) for job in jobs)

    assert versions == [1, 2, 3, 4]
    got = read(tmp_path).group_by(PARTITION_COLUMN, "writer").len().collect()
    if same:
        # The partition holds exactly the rows of the writer that committed last.
        last = DeltaTable(str(tmp_path / "t")).history(1)[0]
        (only,) = got.filter(pl.col(PARTITION_COLUMN) == "2024-01-02").rows()
        assert (only[1], only[2]) == (last["by"], int(last["by"][1:]) + 1)
    else:
        assert sorted(got.rows()) == [("2024-01-01", "a", 1)] + [
            (f"2024-01-0{2 + i}", f"w{i}", i + 1) for i in range(writers)
        ]
