"""Benchmark execute_on_ray against plain Polars (and polars-io-tools, when installed).

Workload (issue 2): a 2M-row in-memory LazyFrame of 2023, one row every 15 s, with
columns date, price and symbol, filtered with is_between(2023-01-01, 2023-12-31). Ray is
started before timing and one warm-up collect runs first. Prints medians of several runs
and ratios against plain collect measured in the same run, and, with the peer, the first
collect of a new query against the peer's time (issue 12: monthly <= 1/10, daily <= 1/60).

    .venv/bin/python benchmarks/bench_engine.py [--runs 5] [--peer-python PATH]

``--peer-python`` names the Python of a separate virtual environment with polars-io-tools
installed; the peer is then timed on the same workload in that interpreter.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable

import ray
from workloads import workload

import piot_dagster  # noqa: F401  (registers lf.piot)


def timed(fn: Callable[[], object], runs: int, *, warm_up: bool = True) -> tuple[float, object]:
    """The median seconds of ``runs`` calls of ``fn`` and its last result."""
    if warm_up:
        fn()
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def arguments(
    parser: argparse.ArgumentParser | None = None, *, rows: bool = True
) -> argparse.Namespace:
    """``--runs`` (and ``--rows``) with the database benchmarks' defaults, and ``parser``'s
    own options, parsed; Dagster's console log quiet, as every benchmark wants it."""
    parser = parser or argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    if rows:
        parser.add_argument("--rows", type=int, default=10_000_000)
    logging.getLogger("dagster").setLevel(logging.WARNING)
    return parser.parse_args()


def start_ray() -> None:
    """A private local Ray, as the tests start it (without token authentication)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_mb() -> tuple[float, float]:
    """(RSS, private RSS) of this process; private excludes shared pages such as the pages
    of Ray's object store that zero-copy results map in."""
    with open("/proc/self/statm") as f:
        _, resident, shared = (int(x) for x in f.read().split()[:3])
    return resident * PAGE_MB, (resident - shared) * PAGE_MB


def peak_growth(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Peak growth of (RSS, private RSS) while ``fn`` runs, sampled every 2 ms."""
    base = memory_mb()
    peak = list(base)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = memory_mb()
            peak[0], peak[1] = max(peak[0], now[0]), max(peak[1], now[1])
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return peak[0] - base[0], peak[1] - base[1], result


PEER_SCRIPT = """
import datetime as dt, json, statistics, sys, time
import polars as pl, ray, polars_io_tools  # noqa: F401
sys.path.insert(0, {bench_dir!r})
from workloads import BOUND, trades
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
# The peer reads no filter inside the wrapped plan (it raises on that), so it gets the
# same query with the filter applied after execute_on_ray.
lf = trades()
out = {{}}
for unit in ("monthly", "daily"):
    run = lambda: lf.piot.execute_on_ray(date_column="date", time_unit=unit).filter(BOUND).collect()
    run()
    times = []
    for _ in range({runs}):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    out[unit] = statistics.median(times)
print(json.dumps(out))
"""


# Issue 12: a new query's first collect takes at most this share of the peer's time.
PEER_SHARE = {"monthly": 10, "daily": 60}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--peer-runs", type=int, default=1)
    args = parser.parse_args()

    lf = workload()
    input_mb = lf.collect().estimated_size("mb")
    start_ray()

    plain, expected = timed(lf.collect, args.runs)
    result_mb = expected.estimated_size("mb")  # type: ignore[union-attr]
    print(f"rows {expected.height:,}  input frame {input_mb:.1f} MB  result {result_mb:.1f} MB")  # type: ignore[union-attr]
    print(f"plain collect            {plain:8.3f} s")
    figures = {"plain": plain}
    first = {}
    for unit, target in (("monthly", 1.5), ("daily", 3.0)):
        # A fresh query each time: its first collect pickles the plan and ships it.
        cold = []
        for _ in range(args.runs):
            query = lf.piot.execute_on_ray(date_column="date", time_unit=unit)
            t0 = time.perf_counter()
            rss, private, result = peak_growth(query.collect)
            cold.append(time.perf_counter() - t0)
            assert result.equals(expected), f"{unit} result differs from plain Polars"  # type: ignore[union-attr]
        warm, result = timed(query.collect, args.runs)
        rss_warm, private_warm, _ = peak_growth(query.collect)
        figures[unit] = warm
        first[unit] = statistics.median(cold)
        print(
            f"{unit:<8} on Ray, first collect {statistics.median(cold):8.3f} s;"
            f" again {warm:8.3f} s  (target <= {target} s; {warm / plain:,.0f}x plain)"
        )
        print(
            f"{'':<8} driver peak memory growth, first collect: RSS {rss:.0f} MB,"
            f" private {private:.0f} MB; again: RSS {rss_warm:.0f} MB, private"
            f" {private_warm:.0f} MB  (target <= {2 * result_mb:.0f} MB = 2 x result)"
        )

    if args.peer_python:
        script = PEER_SCRIPT.format(
            bench_dir=os.path.dirname(os.path.abspath(__file__)), runs=args.peer_runs
        )
        proc = subprocess.run(
            [args.peer_python, "-c", script], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print("peer failed:", proc.stderr.strip().splitlines()[-1:])
        else:
            peer = json.loads(proc.stdout.strip().splitlines()[-1])
            for unit, seconds in peer.items():
                share = PEER_SHARE[unit]
                print(
                    f"{unit:<8} polars-io-tools {seconds:8.3f} s; ours, first collect, is "
                    f"1/{seconds / first[unit]:.1f} of it (target <= 1/{share}), again "
                    f"1/{seconds / figures[unit]:.1f}"
                )
    ray.shutdown()


if __name__ == "__main__":
    main()
