"""The engine benchmark's workload, importable without piot_dagster (the peer's venv)."""

from __future__ import annotations

import datetime as dt

import polars as pl

START, END = dt.datetime(2023, 1, 1), dt.datetime(2023, 12, 31)


BOUND = pl.col("date").is_between(START, END)


def trades() -> pl.LazyFrame:
    """2M rows of 2023, one every 15 s: date, price, symbol."""
    dates = pl.datetime_range(
        START, START + dt.timedelta(seconds=15 * 1_999_999), "15s", eager=True
    )
    n = dates.len()
    frame = pl.DataFrame(
        {
            "date": dates,
            "price": pl.int_range(n, eager=True).cast(pl.Float64) * 0.01,
            "symbol": pl.Series(["AAPL", "MSFT", "GOOG", "AMZN"]).gather(
                pl.int_range(n, eager=True) % 4
            ),
        }
    )
    return frame.lazy()


def workload() -> pl.LazyFrame:
    """The benchmark query: the trades filtered to 2023."""
    return trades().filter(BOUND)
