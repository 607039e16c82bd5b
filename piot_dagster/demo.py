"""``make demo``: the engine on a synthetic year of trades, on an embedded local Ray.

Run with ``python -m piot_dagster.demo``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import polars as pl
from polars.testing import assert_frame_equal

import piot_dagster  # noqa: F401  (registers lf.piot)

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"]


def synthetic_trades(rows: int = 1_000_000) -> pl.LazyFrame:
    """One trade every ~30 s through 2023, deterministic, as an in-memory LazyFrame."""
    start = dt.datetime(2023, 1, 1)
    step = (dt.datetime(2024, 1, 1) - start) / rows
    index = pl.int_range(rows, eager=True)
    return pl.DataFrame(
        {
            "date": pl.datetime_range(start, start + step * (rows - 1), step, eager=True),
            "symbol": pl.Series(SYMBOLS).gather(index % len(SYMBOLS)),
            "price": 100 + (index % 997).cast(pl.Float64) / 10,
        }
    ).lazy()


def main() -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING)
    trades = synthetic_trades()
    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"Ray started in {time.perf_counter() - started:.1f} s")

    first_quarter = pl.col("date").is_between(
        dt.datetime(2023, 1, 1), dt.datetime(2023, 3, 31, 23, 59)
    )
    query = (
        trades.filter(first_quarter)
        .piot.execute_on_ray(date_column="date", time_unit="daily")
        .group_by("symbol")
        .agg(trades=pl.len(), mean_price=pl.col("price").mean())
        .sort("symbol")
    )
    started = time.perf_counter()
    result = query.collect()
    seconds = time.perf_counter() - started
    expected = (
        trades.filter(first_quarter)
        .group_by("symbol")
        .agg(trades=pl.len(), mean_price=pl.col("price").mean())
        .sort("symbol")
        .collect()
    )

    print(result)
    # Float sums may differ in the last bits with the order of addition.
    assert_frame_equal(result, expected, check_exact=False)
    print(
        f"90 daily periods of Q1 2023 ran as Ray tasks in {seconds:.2f} s: "
        f"{result['trades'].sum():,} trades, the same as plain Polars."
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
