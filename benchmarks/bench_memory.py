"""Benchmark the memory a partition needs (issue 29): its rows streamed from the database
to storage by the IO managers' writer, against a plain streaming pipeline and against the
collect-and-write of earlier releases, in the same Ray worker setup.

- (a) a Ray worker's peak RSS (``VmHWM``; a fresh worker process for every write) for one
  partition of 4M, 16M and 48M rows, read from PostgreSQL (whose cache is not in the
  worker) and from DuckDB (whose cache is);
- (b) the seconds the same writes take;
- (c) the driver's peak RSS above its idle RSS for
  ``execute_on_ray(time_unit="monthly").sink_parquet(...)`` over a year of a PostgreSQL
  table of 12M and 48M rows, in months' worth (a month's rows in Arrow), against
  ``collect()`` and ``write_parquet`` of the same query (target: at most 3 months).

Ours is ``PartitionWriter.write`` over ``scan_db(...).filter(window)``, as a partition's Ray
task runs it. The plain pipeline is the database's own Arrow batches (ADBC's record batch
reader, DuckDB's ``to_arrow_reader``) fed to a Polars IO source and ``sink_parquet`` with
the streaming engine. Collect-and-write collects the partition, encodes it as one Parquet
buffer and writes that, as tasks did before streaming.

    .venv/bin/python benchmarks/bench_memory.py [--runs 3] [--sizes 4,16,48]
        [--databases postgresql,duckdb] [--years 12,48]

Times and peaks are medians of ``--runs`` writes, each in a fresh worker.
"""

import argparse
import datetime as dt
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import duckdb
import polars as pl
import ray
from bench_engine import arguments, start_ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import piot_dagster
from piot_dagster.storage import PartitionWriter, open_storage
from tests.conftest import POSTGRES_URL

TOTAL = 48_000_000
JANUARY_S = 2_678_399
START = dt.datetime(2024, 1, 1)
COLUMNS = "ts, symbol, price, qty, note"
# One row every JANUARY_S / TOTAL seconds from midnight on January 1st.
ROWS_SQL = (
    f"TIMESTAMP '2024-01-01' + (i * {JANUARY_S}.0 / {TOTAL}) * INTERVAL '1 second' AS ts, "
    "'SYM' || lpad((i % 20)::text, 2, '0') AS symbol, "
    "(100 + (i % 997) / 10.0)::float8 AS price, (1 + i % 50)::int8 AS qty, "
    "substr('abcdefghijklmnopqrstuvwxyz0123456789abcdef', 1 + (i % 7), 32) AS note"
)


def build_postgres(table: str) -> None:
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE UNLOGGED TABLE {table} AS SELECT {ROWS_SQL} "
            f"FROM generate_series(0, {TOTAL - 1}) AS i"
        )
        cur.execute(f"CREATE INDEX ON {table} (ts)")
        conn.commit()


def drop_postgres(table: str) -> None:
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()


def build_duckdb(path: Path, table: str) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            f"CREATE TABLE {table} AS SELECT {ROWS_SQL.replace('::float8', '::DOUBLE')} "
            f"FROM range({TOTAL}) AS r(i)"
        )


def window(rows: int) -> tuple[dt.datetime, dt.datetime]:
    """The time window holding the table's first ``rows`` rows."""
    return START, START + dt.timedelta(seconds=rows * JANUARY_S / TOTAL)


def rss_mb(field: str = "VmRSS:") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def ours(connection: str, query: str, start: dt.datetime, end: dt.datetime, out: Path) -> int:
    lf = piot_dagster.scan_db(query, connection=connection).filter(
        pl.col("ts").is_between(start, end, closed="left")
    )
    written = PartitionWriter(open_storage(out.parent), out.name, "ts").write(lf)
    assert written is not None
    return written.rows


def batches(connection: str, sql: str) -> Iterator[object]:
    """The database's own Arrow record batches for ``sql``."""
    if connection.startswith("duckdb:///"):
        with duckdb.connect(connection.removeprefix("duckdb:///"), read_only=True) as conn:
            yield from conn.sql(sql).to_arrow_reader(1_000_000)
        return
    import adbc_driver_postgresql.dbapi

    with adbc_driver_postgresql.dbapi.connect(connection) as conn, conn.cursor() as cur:
        cur.execute(sql)
        yield from cur.fetch_record_batch()


def plain(connection: str, query: str, start: dt.datetime, end: dt.datetime, out: Path) -> int:
    sql = f"SELECT * FROM ({query}) q WHERE ts >= '{start}' AND ts < '{end}'"
    schema = pl.from_arrow(next(iter(batches(connection, sql + " LIMIT 0")), None)).schema  # type: ignore[union-attr]

    def source(*_: object) -> Iterator[pl.DataFrame]:
        for batch in batches(connection, sql):
            yield pl.from_arrow(batch)  # type: ignore[misc]

    lf = pl.io.plugins.register_io_source(source, schema=schema)
    lf.sink_parquet(out, engine="streaming")
    return pl.scan_parquet(out).select(pl.len()).collect().item()


def collect_and_write(
    connection: str, query: str, start: dt.datetime, end: dt.datetime, out: Path
) -> int:
    frame = (
        piot_dagster.scan_db(query, connection=connection)
        .filter(pl.col("ts").is_between(start, end, closed="left"))
        .collect()
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    out.write_bytes(buffer.getvalue())
    return frame.height


@ray.remote(max_calls=1)
def in_a_fresh_worker(write: Callable[..., int], *args: object) -> tuple[float, float, int]:
    """``write(*args)`` in a worker process of its own: seconds, peak RSS (MB), rows."""
    started = time.perf_counter()
    rows = write(*args)
    return time.perf_counter() - started, rss_mb("VmHWM:"), rows


@ray.remote(max_calls=1)
def idle_worker() -> float:
    """A fresh worker's peak after importing what every write imports."""
    import duckdb  # noqa: F401

    import piot_dagster  # noqa: F401

    return rss_mb("VmHWM:")


def measure(
    write: Callable[..., int], connection: str, query: str, rows: int, runs: int
) -> tuple[float, float]:
    seconds, peaks = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "partition.parquet"
            took, peak, written = ray.get(
                in_a_fresh_worker.remote(write, connection, query, *window(rows), out)
            )
            assert written == rows, (write.__name__, written, rows)
        seconds.append(took)
        peaks.append(peak)
    return statistics.median(seconds), statistics.median(peaks)


def driver_growth(run: Callable[[], object], idle: float) -> tuple[float, float, float]:
    """Seconds ``run()`` takes, this process's peak RSS meanwhile above ``idle``, and the
    most of Ray's object store (shared memory, mapped by zero-copy reads) in it (MB)."""
    shared = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            shared[0] = max(shared[0], rss_mb("RssShmem:"))

    sampler = threading.Thread(target=sample)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    sampler.start()
    started = time.perf_counter()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return time.perf_counter() - started, rss_mb("VmHWM:") - idle, shared[0]


def year_on_ray(table: str) -> pl.LazyFrame:
    year = pl.col("ts").is_between(dt.datetime(2024, 1, 1), dt.datetime(2025, 1, 1), closed="left")
    return (
        piot_dagster.scan_db(f"SELECT {COLUMNS} FROM {table}", connection=POSTGRES_URL)
        .filter(year)
        .piot.execute_on_ray(date_column="ts", time_unit="monthly")
    )


def sink_year(table: str, out: Path) -> None:
    year_on_ray(table).sink_parquet(out)


def collect_year(table: str, out: Path) -> None:
    year_on_ray(table).collect().write_parquet(out)


DRIVER_HEADER = (
    f"{'rows':>6}  {'a month':>9}  {'sink_parquet':>22}  {'collect + write':>16}  months"
)


def driver_line(rows: int, runs: int) -> None:
    """(c) for a year of ``rows``: a year streamed through the driver into one Parquet
    file, against collecting it; one line of the table."""
    import adbc_driver_postgresql.dbapi

    table = "piot_bench_year"
    every = 366 * 86_400 / rows  # 2024 has 366 days
    with adbc_driver_postgresql.dbapi.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE UNLOGGED TABLE {table} AS SELECT "
            + ROWS_SQL.replace(f"(i * {JANUARY_S}.0 / {TOTAL})", f"(i * {every})")
            + f" FROM generate_series(0, {rows - 1}) AS i"
        )
        conn.commit()
    try:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "year.parquet"
            # Idle: Ray started, nothing run yet; the first run starts the workers.
            idle = rss_mb()
            sunk = [driver_growth(partial(sink_year, table, out), idle) for _ in range(runs)]
            assert pl.scan_parquet(out).select(pl.len()).collect().item() == rows
            held = [driver_growth(partial(collect_year, table, out), idle) for _ in range(runs)]
        month = (
            piot_dagster.scan_db(f"SELECT {COLUMNS} FROM {table}", connection=POSTGRES_URL)
            .filter(pl.col("ts") < dt.datetime(2024, 2, 1))
            .collect()
            .estimated_size()
            / 2**20
        )
    finally:
        drop_postgres(table)
    s_s, g_s, m_s = (statistics.median(v) for v in zip(*sunk, strict=True))
    s_c, g_c, _ = (statistics.median(v) for v in zip(*held, strict=True))
    print(
        f"{rows // 1_000_000:>5}M  {month:>6,.0f} MB  {g_s:>6,.0f} MB ({m_s:>3,.0f}) "
        f"{s_s:>5.1f}s  {g_c:>6,.0f} MB {s_c:>5.1f}s  {g_s / month:.2f} "
        f"(collect: {g_c / month:.2f})"
    )


def partition_section(sizes: list[int], args: argparse.Namespace) -> None:
    """(a) and (b): one partition written by a fresh worker, three ways."""
    table = "piot_bench_memory"
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        build_postgres(table)
        duck = Path(folder) / "trades.duckdb"
        build_duckdb(duck, table)
        print(
            f"built {TOTAL:,} rows in PostgreSQL and DuckDB in "
            f"{time.perf_counter() - started:.0f} s"
        )
        idle = statistics.median(ray.get([idle_worker.remote() for _ in range(3)]))
        print(f"a fresh worker's peak after its imports: {idle:,.0f} MB\n")
        query = f"SELECT {COLUMNS} FROM {table}"
        try:
            for database, connection in (
                ("PostgreSQL", POSTGRES_URL),
                ("DuckDB", f"duckdb:///{duck}"),
            ):
                if database.lower() not in args.databases:
                    continue
                print(f"{database}: worker peak RSS (MB) and seconds, medians of {args.runs}")
                print(
                    f"{'rows':>6}  {'ours':>12}  {'plain':>12}  {'collect':>12}  "
                    "ours/plain  ours/collect (s)"
                )
                ours_peaks = {}
                for rows in sizes:
                    got = {
                        write.__name__: measure(write, connection, query, rows, args.runs)
                        for write in (ours, plain, collect_and_write)
                    }
                    (s_o, p_o), (s_p, p_p), (s_c, p_c) = (
                        got["ours"],
                        got["plain"],
                        got["collect_and_write"],
                    )
                    ours_peaks[rows] = p_o
                    print(
                        f"{rows // 1_000_000:>5}M  {p_o:>6,.0f} {s_o:>4.1f}s  "
                        f"{p_p:>6,.0f} {s_p:>4.1f}s  {p_c:>6,.0f} {s_c:>4.1f}s  "
                        f"{p_o / p_p:>9.2f}x  {s_o / s_c:>11.2f}x"
                    )
                if len(ours_peaks) > 1:
                    low, high = min(ours_peaks), max(ours_peaks)
                    print(
                        f"  ours at {high // 1_000_000}M / ours at {low // 1_000_000}M: "
                        f"{ours_peaks[high] / ours_peaks[low]:.2f}x (flat: near 1)\n"
                    )
        finally:
            drop_postgres(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4,16,48", help="partition sizes, millions of rows")
    parser.add_argument("--databases", default="postgresql,duckdb", help="which to read from")
    parser.add_argument("--years", default="12,48", help="(c): rows in a year, millions")
    parser.add_argument("--one-year", type=int, default=0, help=argparse.SUPPRESS)
    args = arguments(parser, rows=False)
    if args.one_year:
        start_ray()
        driver_line(args.one_year * 1_000_000, args.runs)
        ray.shutdown()
        return
    sizes = [int(s) * 1_000_000 for s in args.sizes.split(",") if s]
    if sizes:
        start_ray()
        partition_section(sizes, args)
        ray.shutdown()
    years = [int(y) for y in args.years.split(",") if y]
    if years:
        print(
            "PostgreSQL, a year by month: the driver's peak RSS above idle, medians of "
            f"{args.runs}; in brackets, of it, pages of Ray's object store mapped by "
            f"zero-copy reads"
        )
        print(DRIVER_HEADER)
        for year in years:
            # A process of its own for each year: its idle RSS holds nothing of another.
            command = [sys.executable, __file__, "--one-year", str(year), "--runs", str(args.runs)]
            subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
