"""Benchmark RayDeltaIOManager against RayParquetIOManager and dagster-deltalake-polars.

Source: as in bench_dagster and bench_instances, an indexed SQLite table read through
``piot_dagster.scan_db`` (``ts TIMESTAMP, symbol TEXT, price REAL``; ``--rows-per-day``
rows a day, evenly spaced, over 2015-2024), built once under benchmarks/.data. Ray is
started before timing (2 CPUs); every run records its events on one SQLite-backed
Dagster instance, as ``dagster dev`` keeps them, and Dagster's console shows only
warnings (a 365-partition run otherwise prints thousands of lines), in both venvs.

- (a) a 365-partition daily single-run backfill (one run over 2023-01-01..2023-12-31,
  ``BackfillPolicy.single_run()``) into RayDeltaIOManager against the same into
  RayParquetIOManager, a fresh base_dir each repetition, the two alternating. Target:
  Delta <= 1.3x Parquet.
- (b) the same backfill into dagster-deltalake-polars' ``DeltaLakePolarsIOManager``, a
  fresh table each repetition (a range run over an existing table fails there), in the
  separate virtualenv of ``--baseline-python``: its asset reads the run's time window
  from the same SQLite table with plain Polars (``pl.read_database`` over ``sqlite3``,
  no Ray) and adds the Date column ``day`` its ``partition_expr`` needs; the IO manager
  collects the whole range in the Dagster process and writes it from there. Skipped
  without ``--baseline-python``.
- (c) reading one month (February 2020) from a daily table of 2015-2024 (3,653
  partitions), each store built once by one backfill: ``pl.scan_delta(table)`` and the
  lazy input RayDeltaIOManager gives a downstream asset (``load_input`` over all the
  partitions, as ``dg.build_input_context`` asks for them), each ``.filter(month)``,
  against RayParquetIOManager's lazy input and ``pl.scan_parquet(folder/*.parquet)``,
  filtered the same way. With strace on PATH, each read runs once more under strace in
  a process of its own to count the data files it opens.
- (d) the driver's peak RSS during the Delta backfill of (a) at ``--rows-per-day`` and
  at ``--big-rows-per-day`` (2023 only, a table of its own): flat when the data never
  reaches the driver. Measured after (a) and (b), before (c)'s large runs.

Times are medians of ``--runs`` repetitions (``--reads`` for the reads of (c)); ratios
are against figures of the same run. The machine is shared: expect noise. The baseline
venv, kept out of this project's dependencies:

    python3 -m venv /tmp/ddl-venv
    /tmp/ddl-venv/bin/pip install dagster-deltalake-polars polars
    cd benchmarks && ../.venv/bin/python bench_delta.py [--baseline-python /tmp/ddl-venv/bin/python]

``--skip abcd`` leaves out any of the parts.
"""

import argparse
import dataclasses
import datetime as dt
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import ray
from bench_engine import arguments, memory_mb, peak_growth, start_ray
from deltalake import DeltaTable

import piot_dagster
from piot_dagster import RayDeltaIOManager, RayParquetIOManager, RayResource, time_partitions
from piot_dagster.storage.delta import PARTITION_COLUMN

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy's

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
YEAR = ("2023-01-01", "2024-01-01")  # (a), (b), (d): 365 daily partitions
DECADE = ("2015-01-01", "2025-01-01")  # (c): 3,653 daily partitions
MONTH = (dt.datetime(2020, 2, 1), dt.datetime(2020, 3, 1))  # (c): the month read
IN_MONTH = pl.col("ts").is_between(*MONTH, closed="left")
QUERY = "SELECT ts, symbol, price FROM ticks"
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

Manager = type[RayDeltaIOManager] | type[RayParquetIOManager]


# The source and the backfill ---------------------------------------------------------


def source(per_day: int, first: str, end: str) -> str:
    """``per_day`` rows a day from ``first`` to ``end`` (exclusive), indexed on ts: its
    URI. Stamps are text, as SQLite keeps TIMESTAMP columns."""
    path = DATA / f"delta_{per_day}_{first[:4]}_{end[:4]}.db"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        start, stop = dt.datetime.fromisoformat(first), dt.datetime.fromisoformat(end)
        every = dt.timedelta(days=1) / per_day
        stamps = pl.datetime_range(start, stop, every, closed="left", eager=True)
        n = stamps.len()
        frame = pl.DataFrame(
            {
                "ts": stamps.dt.to_string("%Y-%m-%d %H:%M:%S"),
                "symbol": pl.Series(SYMBOLS).gather(pl.int_range(n, eager=True) % len(SYMBOLS)),
                "price": pl.int_range(n, eager=True).cast(pl.Float64) * 0.01,
            }
        )
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        conn = sqlite3.connect(partial)
        conn.execute("CREATE TABLE ticks (ts TIMESTAMP, symbol TEXT, price REAL)")
        conn.executemany("INSERT INTO ticks VALUES (?, ?, ?)", frame.iter_rows())
        conn.execute("CREATE INDEX ticks_ts ON ticks (ts)")
        conn.commit()
        conn.close()
        partial.rename(path)
    return f"sqlite:///{path}"


def ticks(uri: str, first: str, end: str) -> dg.AssetsDefinition:
    """The daily asset over ``first``..``end``, reading the table at ``uri``."""

    @dg.asset(
        name="ticks",
        partitions_def=time_partitions("daily", first, end=end),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def asset() -> pl.LazyFrame:
        return piot_dagster.scan_db(QUERY, connection=uri)

    return asset


def keys_of(asset: dg.AssetsDefinition) -> list[str]:
    partitions = asset.partitions_def
    assert partitions is not None
    return partitions.get_partition_keys()


def backfill(
    asset: dg.AssetsDefinition, kind: Manager, base_dir: Path, instance: dg.DagsterInstance
) -> None:
    """One single-run backfill of all of ``asset``'s partitions into ``base_dir``."""
    keys = keys_of(asset)
    result = dg.materialize(
        [asset],
        tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        resources={"io_manager": kind(ray=RayResource(), base_dir=str(base_dir))},
        instance=instance,
        run_config=QUIET,
    )
    assert result.success


class Scratch:
    """Fresh folders under one folder, each removed after its use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def timed_in_fresh(self, fn: Callable[[Path], object]) -> float:
        """Seconds ``fn`` takes on a new empty folder (made and removed untimed)."""
        self.count += 1
        folder = self.root / f"run{self.count}"
        folder.mkdir()
        try:
            started = time.perf_counter()
            fn(folder)
            return time.perf_counter() - started
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# (a) ---------------------------------------------------------------------------------


def part_a(
    asset: dg.AssetsDefinition, scratch: Scratch, runs: int, instance: dg.DagsterInstance
) -> float:
    """(a): the year's backfill into each IO manager, alternating; Delta's median."""
    kinds: dict[str, Manager] = {"delta": RayDeltaIOManager, "parquet": RayParquetIOManager}
    times: dict[str, list[float]] = {name: [] for name in kinds}

    def one(kind: Manager) -> float:
        return scratch.timed_in_fresh(lambda base: backfill(asset, kind, base, instance))

    for kind in kinds.values():  # warm-up: Ray workers, imports
        one(kind)
    for _ in range(runs):
        for name, kind in kinds.items():
            times[name].append(one(kind))
    delta, parquet = (statistics.median(times[name]) for name in ("delta", "parquet"))
    print(f"(a) 365-partition single-run backfill, median of {runs}:")
    print(f"    RayParquetIOManager {parquet:6.2f} s   {_spread(times['parquet'])}")
    print(f"    RayDeltaIOManager   {delta:6.2f} s   {_spread(times['delta'])}")
    print(f"    Delta / Parquet {delta / parquet:.2f}x (target <= 1.3)")
    return delta


def _spread(times: list[float]) -> str:
    return "(" + ", ".join(f"{t:.2f}" for t in times) + ")"


# (b) ---------------------------------------------------------------------------------

BASELINE = """
import contextlib, json, logging, shutil, sqlite3, statistics, sys, tempfile, time
from pathlib import Path
import dagster as dg, deltalake, polars as pl
import dagster_deltalake_polars
from dagster_deltalake import LocalConfig
from dagster_deltalake_polars import DeltaLakePolarsIOManager

args = json.loads(sys.argv[1])
days = dg.DailyPartitionsDefinition(start_date=args["first"], end_date=args["end"])
keys = days.get_partition_keys()
query = args["query"] + " WHERE ts >= '{:%Y-%m-%d %H:%M:%S}' AND ts < '{:%Y-%m-%d %H:%M:%S}'"

@dg.asset(
    name="ticks",
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"partition_expr": "day"},
)
def ticks(context: dg.AssetExecutionContext) -> pl.DataFrame:
    start, end = context.partition_time_window
    with contextlib.closing(sqlite3.connect(args["db"])) as conn:
        frame = pl.read_database(query.format(start, end), conn)
    return frame.with_columns(pl.col("ts").str.to_datetime("%Y-%m-%d %H:%M:%S")).with_columns(
        day=pl.col("ts").dt.date()
    )

def once(instance):
    root = Path(tempfile.mkdtemp(dir=args["scratch"]))
    try:
        manager = DeltaLakePolarsIOManager(root_uri=str(root), storage_options=LocalConfig())
        started = time.perf_counter()
        result = dg.materialize(
            [ticks],
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1]},
            resources={"io_manager": manager},
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        seconds = time.perf_counter() - started
        assert result.success
        (log,) = root.rglob("_delta_log")
        table = deltalake.DeltaTable(str(log.parent))
        rows = pl.scan_delta(table).select(pl.len()).collect().item()
        return seconds, rows, len(table.file_uris()), table.version()
    finally:
        shutil.rmtree(root, ignore_errors=True)

with dg.instance_for_test() as instance:
    once(instance)  # warm-up: imports
    done = [once(instance) for _ in range(args["runs"])]
print(json.dumps({
    "times": [d[0] for d in done], "rows": done[-1][1], "files": done[-1][2],
    "version": done[-1][3],
    "versions": {"dagster": dg.__version__,
                 "dagster-deltalake-polars": dagster_deltalake_polars.__version__,
                 "deltalake": deltalake.__version__, "polars": pl.__version__},
}))
"""


def part_b(python: str | None, uri: str, runs: int, scratch: Path, ours: float | None) -> None:
    """(b): dagster-deltalake-polars' median, in the interpreter ``python``."""
    if python is None:
        print(
            "(b) skipped (dagster-deltalake-polars): give --baseline-python, the Python of a "
            "venv with it: python3 -m venv /tmp/ddl-venv && /tmp/ddl-venv/bin/pip install "
            "dagster-deltalake-polars polars, then --baseline-python /tmp/ddl-venv/bin/python"
        )
        return
    args = {
        "db": uri.removeprefix("sqlite:///"),
        "first": YEAR[0],
        "end": YEAR[1],
        "query": QUERY,
        "runs": runs,
        "scratch": str(scratch),
    }
    done = subprocess.run(
        [python, "-c", BASELINE, json.dumps(args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the baseline failed:\n{done.stderr[-3000:]}")
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    median = statistics.median(got["times"])
    versions = ", ".join(f"{name} {v}" for name, v in got["versions"].items())
    print(f"(b) dagster-deltalake-polars ({versions}), same backfill, median of {runs}:")
    print(
        f"    {median:6.2f} s   {_spread(got['times'])}; {got['rows']:,} rows in "
        f"{got['files']} files, table version {got['version']}"
    )
    if ours is not None:
        print(
            f"    RayDeltaIOManager {ours:.2f} s: dagster-deltalake-polars / ours "
            f"{median / ours:.2f}x"
        )


# (c) ---------------------------------------------------------------------------------

READS: dict[str, str] = {
    "delta-scan": "pl.scan_delta(<table>)",
    "delta-input": "RayDeltaIOManager's lazy input",
    "parquet-input": "RayParquetIOManager's lazy input",
    "parquet-scan": "pl.scan_parquet(<folder>/*.parquet)",
}


def lazy_input(kind: Manager, base_dir: Path) -> pl.LazyFrame:
    """All of the decade's partitions as ``kind`` gives them to a downstream asset."""
    partitions = time_partitions("daily", DECADE[0], end=DECADE[1])
    keys = partitions.get_partition_keys()
    key = dg.AssetKey("ticks")
    context = dg.build_input_context(
        asset_key=key,
        asset_partitions_def=partitions,
        asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
        dagster_type=dg.DagsterType(lambda _, __: True, typing_type=pl.LazyFrame, name="lf"),
        upstream_output=dg.build_output_context(
            asset_key=key, definition_metadata={"date_column": "ts"}
        ),
    )
    lazy = kind(ray=RayResource(), base_dir=str(base_dir)).load_input(context)
    assert isinstance(lazy, pl.LazyFrame)
    return lazy


def lazy_of(name: str, base: Path) -> pl.LazyFrame:
    """The whole table at ``base``, unfiltered, as ``name`` of :data:`READS` reads it."""
    if name == "delta-scan":
        return pl.scan_delta(str(base / "delta" / "ticks")).drop(PARTITION_COLUMN)
    if name == "delta-input":
        return lazy_input(RayDeltaIOManager, base / "delta")
    if name == "parquet-input":
        return lazy_input(RayParquetIOManager, base / "parquet")
    return pl.scan_parquet(base / "parquet" / "ticks" / "*.parquet")


def read(name: str, base: Path) -> tuple[pl.DataFrame, float, float]:
    """The month, read as ``name`` says; the seconds it took in all, and those of making
    the LazyFrame (``load_input`` for an input)."""
    started = time.perf_counter()
    lazy = lazy_of(name, base)
    made = time.perf_counter()
    frame = lazy.filter(IN_MONTH).collect()
    return frame, time.perf_counter() - started, made - started


OPENED = """
import sys
sys.path.insert(0, {here!r})
from pathlib import Path
import bench_delta
bench_delta.DECADE = {decade!r}
bench_delta.read({name!r}, Path({base!r}))
"""


def opened(name: str, base: Path) -> int | None:
    """How many data files one ``read(name, base)`` opens, in a process of its own under
    strace (None without strace)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".strace") as log:
        traced = [strace, "-f", "-qq", "-e", "trace=openat,open", "-o", log.name]
        code = OPENED.format(here=str(HERE), decade=DECADE, name=name, base=str(base))
        done = subprocess.run(
            [*traced, sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} under strace failed:\n{done.stderr[-3000:]}")
        text = Path(log.name).read_text(errors="replace")
    return len(set(re.findall(rf'"({re.escape(str(base))}/[^"]*\.parquet)"', text)))


@dataclasses.dataclass
class Read:
    seconds: float
    making: float
    opened: int | None


def part_c(uri: str, base: Path, reads: int, instance: dg.DagsterInstance) -> None:
    """(c): both stores of the decade built once, then the month read each way."""
    asset = ticks(uri, *DECADE)
    built = {}
    for folder, kind in (("delta", RayDeltaIOManager), ("parquet", RayParquetIOManager)):
        started = time.perf_counter()
        backfill(asset, kind, base / folder, instance)
        built[folder] = time.perf_counter() - started
    frames = {name: read(name, base)[0] for name in READS}  # warm-up
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in READS}
    for _ in range(reads):  # the ways alternate, so noise falls on all alike
        for name in READS:
            _, seconds, making = read(name, base)
            times[name].append((seconds, making))
    got = {
        name: Read(
            statistics.median(t for t, _ in times[name]),
            statistics.median(m for _, m in times[name]),
            opened(name, base),
        )
        for name in READS
    }
    expected = frames["parquet-scan"].sort("ts")
    for name, frame in frames.items():
        assert frame.sort("ts").equals(expected), f"{name} read other rows"
    table = DeltaTable(str(base / "delta" / "ticks"))
    month = time_partitions("daily", MONTH[0].date(), end=MONTH[1].date()).get_partition_keys()
    needed = len(table.file_uris(file_pruning_predicate=[(PARTITION_COLUMN, "in", month)]))
    parquet_files = len(list((base / "parquet" / "ticks").glob("*.parquet")))
    print(
        f"(c) one month (Feb 2020, {expected.height:,} rows) of {len(keys_of(asset)):,} daily "
        f"partitions; each store built by one backfill: Delta {built['delta']:.1f} s, "
        f"Parquet {built['parquet']:.1f} s"
    )
    print(
        f"    Delta table: {len(table.file_uris())} files, {needed} for the month; "
        f"Parquet folder: {parquet_files} files, {len(month)} for the month"
    )
    print(f"    .filter(month).collect(), median of {reads}:")
    for name, what in READS.items():
        r = got[name]
        making = f" (load_input {r.making:.3f} s)" if "input" in name else ""
        files = "" if r.opened is None else f"   opens {r.opened} data files"
        print(f"    {what:36} {r.seconds:6.3f} s{making:23}{files}")
    s = {name: r.seconds for name, r in got.items()}
    print(
        f"    Delta scan / Parquet scan {s['delta-scan'] / s['parquet-scan']:.2f}x, "
        f"Delta input / Parquet input {s['delta-input'] / s['parquet-input']:.2f}x, "
        f"Delta input / Delta scan {s['delta-input'] / s['delta-scan']:.2f}x"
    )


# (d) ---------------------------------------------------------------------------------


def part_d(
    sizes: dict[int, str], scratch: Scratch, runs: int, instance: dg.DagsterInstance
) -> None:
    """(d): per rows a day (and source URI), the driver's peak RSS during the Delta
    backfill of the year, the sizes alternating; medians."""
    assets = {size: ticks(uri, *YEAR) for size, uri in sizes.items()}
    peaks: dict[int, list[tuple[float, float, float, float]]] = {size: [] for size in sizes}

    def run(asset: dg.AssetsDefinition) -> float:
        return scratch.timed_in_fresh(
            lambda base: backfill(asset, RayDeltaIOManager, base, instance)
        )

    for asset in assets.values():  # warm-up: each source's first reads
        run(asset)
    for _ in range(runs):
        for size, asset in assets.items():
            before = memory_mb()[0]
            rss, private, seconds = peak_growth(lambda asset=asset: run(asset))
            assert isinstance(seconds, float)
            peaks[size].append((before + rss, rss, private, seconds))
    median = {
        size: tuple(statistics.median(p[i] for p in got) for i in range(4))
        for size, got in peaks.items()
    }
    # What the driver would hold if the data passed through it (collected only now).
    data = {size: year_of(uri) for size, uri in sizes.items()}
    print(f"(d) the driver's peak RSS during the Delta backfill of (a), median of {runs}:")
    for size, (peak, growth, private, seconds) in median.items():
        rows, mb = data[size]
        print(
            f"    {size:5} rows a day ({rows:>9,} rows, {mb:5.1f} MB as a frame): peak "
            f"{peak:.0f} MB, growth {growth:.0f} MB (private {private:.0f} MB); {seconds:.2f} s"
        )
    (small, big), (few, many) = median.values(), data.values()
    print(
        f"    {many[0] / few[0]:.0f}x the rows: peak ratio {big[0] / small[0]:.2f}, growth "
        f"{big[1] - small[1]:+.0f} MB, against {many[1] - few[1]:.0f} MB more data"
    )


def year_of(uri: str) -> tuple[int, float]:
    """Rows of 2023 in the table at ``uri``, and their size in MB as a Polars frame."""
    year = pl.col("ts").is_between(dt.datetime(2023, 1, 1), dt.datetime(2024, 1, 1), closed="left")
    frame = piot_dagster.scan_db(QUERY, connection=uri).filter(year).collect()
    return frame.height, frame.estimated_size("mb")


# Main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows-per-day", type=int, default=96)
    parser.add_argument("--big-rows-per-day", type=int, default=9600, help="(d)'s larger size")
    parser.add_argument("--reads", type=int, default=5, help="repetitions of (c)'s reads")
    parser.add_argument("--baseline-python", default=None, help="(b): a venv's Python")
    parser.add_argument("--skip", default="", help="parts to leave out, e.g. 'c' or 'bd'")
    args = arguments(parser, rows=False)  # --runs (3)
    uri = source(args.rows_per_day, *DECADE)
    big_uri = source(args.big_rows_per_day, *YEAR) if "d" not in args.skip else uri
    print(f"source: {uri.removeprefix('sqlite:///')} ({args.rows_per_day} rows a day)")
    start_ray()
    try:
        with tempfile.TemporaryDirectory() as directory, dg.instance_for_test() as instance:
            root = Path(directory)
            (root / "runs").mkdir()
            (root / "decade").mkdir()
            scratch = Scratch(root / "runs")
            ours = None
            if "a" not in args.skip:
                ours = part_a(ticks(uri, *YEAR), scratch, args.runs, instance)
            if "b" not in args.skip:
                part_b(args.baseline_python, uri, args.runs, root, ours)
            if "d" not in args.skip:
                sizes = {args.rows_per_day: uri, args.big_rows_per_day: big_uri}
                part_d(sizes, scratch, args.runs, instance)
            if "c" not in args.skip:
                part_c(uri, root / "decade", args.reads, instance)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
