"""Benchmark scan_db on SQLite, DuckDB and PostgreSQL (issue 3).

Workload: a ``trades`` table of ``--rows`` rows (default 10M) over 2022-2024, with
``date``, ``symbol`` and ``price``, indexed on ``date``, in each database. The tables are
built once and kept (SQLite and DuckDB files under ``benchmarks/.data``, PostgreSQL table
``piot_bench_trades``). For each database it prints, as medians of ``--runs`` runs:

- (a) one month through scan_db against the same SQL run directly through the fastest
  driver (target ratio <= 1.2);
- (b) all three years split monthly on Ray (36 tasks) against one full read with the
  fastest single-process reader (connectorx when installed, ADBC, or DuckDB's own),
  as a throughput ratio (targets: SQLite and PostgreSQL >= 1.3, DuckDB >= 0.7);
- (c) the driver's peak memory growth during (b).

    .venv/bin/python benchmarks/bench_scan_db.py [--rows 10000000] [--runs 3]
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import adbc_driver_postgresql.dbapi
import adbc_driver_sqlite.dbapi
import duckdb
import polars as pl
import ray
from bench_engine import arguments, peak_growth, start_ray, timed

import piot_dagster

DATA = Path(__file__).parent / ".data"
POSTGRES = os.environ.get("PIOT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG_TABLE = "piot_bench_trades"
FIRST, LAST = dt.date(2022, 1, 1), dt.date(2024, 12, 31)
MONTH = (dt.date(2023, 6, 1), dt.date(2023, 7, 1))


def trades(rows: int) -> pl.DataFrame:
    """``rows`` trades spread evenly over 2022-2024, five symbols."""
    days = (LAST - FIRST).days + 1
    index = pl.int_range(rows)
    return pl.select(
        date=pl.lit(FIRST) + pl.duration(days=index * days // rows),
        symbol=pl.lit(pl.Series(["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"])).gather(index % 5),
        price=100 + (index % 1000).cast(pl.Float64) / 10,
    )


def build(rows: int) -> dict[str, tuple[str, str]]:
    """(connection, table) per database, building what is missing."""
    DATA.mkdir(exist_ok=True)
    frame: pl.DataFrame | None = None

    def data() -> pl.DataFrame:
        nonlocal frame
        if frame is None:
            frame = trades(rows)
        return frame

    sqlite_path = DATA / f"trades_{rows}.db"
    if not sqlite_path.exists():
        conn = sqlite3.connect(sqlite_path)
        conn.execute("CREATE TABLE trades (date DATE, symbol TEXT, price REAL)")
        conn.close()
        with adbc_driver_sqlite.dbapi.connect(str(sqlite_path)) as conn, conn.cursor() as cur:
            text_dates = data().with_columns(pl.col("date").cast(pl.String)).to_arrow()
            cur.adbc_ingest("trades", text_dates, mode="append")
            conn.commit()
        conn = sqlite3.connect(sqlite_path)
        conn.execute("CREATE INDEX trades_date ON trades (date)")
        conn.commit()
        conn.close()
    duckdb_path = DATA / f"trades_{rows}.duckdb"
    if not duckdb_path.exists():
        conn = duckdb.connect(str(duckdb_path))
        conn.register("frame", data().to_arrow())
        conn.execute("CREATE TABLE trades AS SELECT * FROM frame")
        conn.execute("CREATE INDEX trades_date ON trades (date)")
        conn.close()
    with adbc_driver_postgresql.dbapi.connect(POSTGRES) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM pg_tables WHERE tablename = '{PG_TABLE}'")
        exists = cur.fetchone()[0] == 1
        if exists:
            cur.execute(f"SELECT count(*) FROM {PG_TABLE}")
            exists = cur.fetchone()[0] == rows
        if not exists:
            cur.execute(f"DROP TABLE IF EXISTS {PG_TABLE}")
            cur.adbc_ingest(PG_TABLE, data().to_arrow(), mode="create")
            cur.execute(f"CREATE INDEX {PG_TABLE}_date ON {PG_TABLE} (date)")
            cur.execute(f"ANALYZE {PG_TABLE}")
            conn.commit()
    return {
        "sqlite": (f"sqlite:///{sqlite_path}", "trades"),
        "duckdb": (f"duckdb:///{duckdb_path}", "trades"),
        "postgres": (POSTGRES, PG_TABLE),
    }


def direct_reader(dialect: str, uri: str, sql: str) -> Callable[[], pl.DataFrame]:
    """The fastest single-process read of ``sql`` a user would write by hand, dates typed,
    on a connection opened once (its best case)."""
    if dialect == "duckdb":
        conn = duckdb.connect(uri.removeprefix("duckdb:///"), read_only=True)
        return lambda: conn.sql(sql).pl()
    try:
        import connectorx  # noqa: F401

        cx_uri = uri if dialect == "postgres" else f"sqlite://{Path(uri[10:]).resolve()}"
        return lambda: pl.read_database_uri(sql, cx_uri, engine="connectorx")
    except ImportError:
        pass
    if dialect == "sqlite":
        adbc = adbc_driver_sqlite.dbapi.connect(uri.removeprefix("sqlite:///"))
    else:
        adbc = adbc_driver_postgresql.dbapi.connect(uri)

    def read_adbc() -> pl.DataFrame:
        with adbc.cursor() as cur:
            cur.execute(sql)
            frame = pl.from_arrow(cur.fetch_arrow_table())
        if dialect == "sqlite":
            frame = frame.with_columns(pl.col("date").str.to_date())  # type: ignore[union-attr]
        return frame  # type: ignore[return-value]

    return read_adbc


def main() -> None:
    args = arguments()

    t0 = time.perf_counter()
    sources = build(args.rows)
    print(f"{args.rows:,} rows per database, ready in {time.perf_counter() - t0:.0f} s")
    start_ray()
    date = pl.col("date")
    for dialect, (uri, table) in sources.items():
        query = f"SELECT date, symbol, price FROM {table}"
        lf = piot_dagster.scan_db(query, connection=uri)
        month_filter = (date >= MONTH[0]) & (date < MONTH[1])
        literal = "'{}'" if dialect == "sqlite" else "DATE '{}'"
        lo, hi = (literal.format(day) for day in MONTH)
        month_sql = f"{query} WHERE date >= {lo} AND date < {hi}"
        ours, got = timed(lambda: lf.filter(month_filter).collect(), args.runs)  # noqa: B023
        theirs, expected = timed(direct_reader(dialect, uri, month_sql), args.runs)
        assert got.height == expected.height  # type: ignore[union-attr]
        print(
            f"{dialect:<8} (a) one month, {got.height:,} rows: scan_db {ours:.3f} s, "  # type: ignore[union-attr]
            f"direct {theirs:.3f} s, ratio {ours / theirs:.2f} (target <= 1.2)"
        )

        whole = lf.filter(date.is_between(FIRST, LAST)).piot.execute_on_ray(
            date_column="date", time_unit="monthly"
        )
        rss, private, _ = peak_growth(whole.collect)  # the first collect: the cold peak
        ray_time, result = timed(whole.collect, args.runs)
        single, baseline = timed(direct_reader(dialect, uri, query), args.runs)
        assert result.height == baseline.height == args.rows  # type: ignore[union-attr]
        target = 0.7 if dialect == "duckdb" else 1.3
        print(
            f"{'':<8} (b) 36 monthly tasks on Ray {ray_time:.2f} s vs one full read "
            f"{single:.2f} s: throughput ratio {single / ray_time:.2f} (target >= {target})"
        )
        result_mb = result.estimated_size("mb")  # type: ignore[union-attr]
        print(
            f"{'':<8} (c) driver peak growth, first collect of (b): RSS {rss:.0f} MB, private "
            f"{private:.0f} MB; result {result_mb:.0f} MB"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
