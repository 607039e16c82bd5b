"""Benchmark a one-partition run launched from the UI (issue 12, item 6).

`dagster dev -f definitions.py` as `make ui` starts it, on a fresh instance, with a run of
`trades_daily_job` for one day launched through GraphQL and timed from the launch to
SUCCESS as GraphQL reports it:

- baseline: `dagster dev` alone, so every run starts a Ray of its own;
- `make ui`: the same under `piot_dagster.dagster.session_cluster`, one local cluster
  for the session that every run joins.

    .venv/bin/python benchmarks/bench_ui.py [--runs 3]

Each session launches a first run (code location loading, first workers), then
``--runs`` timed ones; medians.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dagster_server import (
    ROOT,
    SESSION_CLUSTER,
    dagster_dev,
    finished,
    project_files,
    submit,
    wait_for,
)

DAYS = ["2024-02-05", "2024-02-06", "2024-02-07", "2024-02-08", "2024-02-09", "2024-02-12"]


def session(wrapped: bool, runs: int) -> tuple[float, list[float]]:
    """Seconds of a session's first run, and of each following one."""
    folder = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    home = project_files(folder)  # the instance `make ui` uses
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {
        "DAGSTER_HOME": str(home),
        "PIOT_ASSET_DIR": str(folder / "assets"),
        "RAY_AUTH_MODE": "disabled",
    }
    launcher = SESSION_CLUSTER if wrapped else []
    seconds = []
    with dagster_dev(ROOT / "definitions.py", env, folder / "dev.log", launcher) as port:
        for day in DAYS[: runs + 1]:
            started = time.perf_counter()
            run_id = submit(port, "trades_daily_job", {"dagster/partition": day})
            if not seconds:
                started = time.perf_counter()  # the code location has loaded: time from here
            wait_for(lambda run_id=run_id: finished(port, run_id), "the run", timeout=300)
            seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from scripts.trades_db import ensure_trades_db

    ensure_trades_db()
    print(
        f"one-partition run from the UI, launch to SUCCESS through GraphQL (medians of {args.runs})"
    )
    results = {}
    for name, wrapped in (
        ("dagster dev, a Ray per run", False),
        ("make ui, one session cluster", True),
    ):
        first, rest = session(wrapped, args.runs)
        results[name] = statistics.median(rest)
        each = [round(s, 2) for s in rest]
        print(f"  {name:<32} first {first:5.2f} s   then {results[name]:5.2f} s  {each}")
    base, ours = results.values()
    print(f"  ratio: {ours / base:.2f} (target: a run <= 6 s)")


if __name__ == "__main__":
    main()
