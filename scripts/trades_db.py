"""Build the example database the code location reads: about 2.1M trades, 2022 to 2024, 20
symbols every 15 minutes, in SQLite (``PIOT_TRADES_DB``, default ``data/trades.db``).

    python -m scripts.trades_db       # or `make data/trades.db`; `make demo` runs it first
"""

import datetime as dt
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import polars as pl

from defs.trades import END_DAY, FIRST_DAY, SYMBOLS, trades_db

STEP_MINUTES = 15


def synthetic_trades(first: dt.date, end: dt.date) -> pl.DataFrame:
    """Every symbol trades every 15 minutes; prices and sizes are deterministic."""
    stamps = pl.datetime_range(
        dt.datetime.combine(first, dt.time()),
        dt.datetime.combine(end, dt.time()) - dt.timedelta(minutes=STEP_MINUTES),
        f"{STEP_MINUTES}m",
        eager=True,
    )
    frame = pl.DataFrame({"ts": stamps}).join(pl.DataFrame({"symbol": SYMBOLS}), how="cross")
    step = pl.int_range(pl.len())
    return frame.with_columns(
        price=(100 + (step % 997) / 10 + (step % 20) * 5).round(2),
        qty=(1 + step % 50).cast(pl.Int64),
    )


def ensure_trades_db(path: Path | None = None) -> Path:
    """The database at ``path`` (default: the code location's), built unless it exists:
    indexed on the timestamp, in WAL mode so readers never wait for a writer. Built in a
    file of its own beside it and renamed into place, so a reader never sees it half
    built and concurrent builders each leave a whole one."""
    import adbc_driver_sqlite.dbapi

    path = path or trades_db()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.building")
    try:
        conn = sqlite3.connect(building)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL, qty INTEGER)")
        conn.close()
        rows = synthetic_trades(FIRST_DAY, END_DAY).with_columns(
            pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S")
        )
        with adbc_driver_sqlite.dbapi.connect(str(building)) as adbc, adbc.cursor() as cur:
            cur.adbc_ingest("trades", rows.to_arrow(), mode="append")
            adbc.commit()
        conn = sqlite3.connect(building)
        conn.execute("CREATE INDEX trades_ts ON trades (ts)")
        conn.commit()
        conn.close()
        os.replace(building, path)
    finally:
        building.unlink(missing_ok=True)
    return path


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


if __name__ == "__main__":
    started = time.perf_counter()
    existed = trades_db().exists()
    built = ensure_trades_db()
    what = "found" if existed else f"built in {time.perf_counter() - started:.1f} s"
    print(f"{shown(built)}: {what}", file=sys.stderr)
