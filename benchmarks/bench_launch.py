"""Benchmark a one-partition run as a user launches it (issue 30, item 2).

Workload: one daily partition (``--rows`` rows a day, from SQLite) of a
``partitioned_query`` asset with its partition checks, in a `dg` project laid out as
``create-dagster project`` makes it. Each run is a fresh process that starts its own
embedded Ray, as a user's does:

- (a) ``dg launch`` of the asset defined in YAML (the ``PartitionedQuery`` component),
  under Dagster's default multiprocess executor (a process per step);
- (b) ``dg launch`` of the same asset defined in Python (``partitioned_query``);
- (c) the same materialization in process: ``dg.materialize`` of the Python asset and
  its checks, in a fresh Python process (import, Ray start, run);
- (d) ``dg launch`` of a no-op asset and its check in the same code location, and (e)
  the same in process: (d) - (e) is Dagster's own overhead of a launched run.

Prints the medians of ``--runs`` runs of each, the ratios (a)/(c) and (b)/(c), and what
the launch adds over the in-process run next to Dagster's own overhead (the run's and
each step's process, each loading the code location). Ray starts once per run of the
asset, never for the no-op.

    .venv/bin/python benchmarks/bench_launch.py [--rows 200000] [--runs 3]
"""

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dg_projects import dagster_home, dg_project

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAY = "2024-01-02"

YAML = """\
type: piot_dagster.PartitionedQuery
attributes:
  name: trades_yaml
  query: SELECT ts, symbol, price FROM trades
  connection: "{{ env.BENCH_DB }}"
  date_column: ts
  partitions: {time_unit: daily, start: "2024-01-01", end: "2024-01-11"}
  output: {base_dir: "{{ env.BENCH_OUT }}"}
  checks: {min_rows: 1}
"""
PYTHON = """\
import dagster as dg

import piot_dagster

trades_python = piot_dagster.partitioned_query(
    "trades_python",
    query="SELECT ts, symbol, price FROM trades",
    connection=dg.EnvVar("BENCH_DB"),
    date_column="ts",
    partitions_def=piot_dagster.time_partitions("daily", "2024-01-01", end="2024-01-11"),
    base_dir=__import__("os").environ["BENCH_OUT"],
    min_rows=1,
)

"""
NOOP = """\
import dagster as dg

import piot_dagster


@dg.asset(partitions_def=piot_dagster.time_partitions("daily", "2024-01-01", end="2024-01-11"))
def noop() -> None:
    pass  # nothing: a run of it and its check is Dagster's own overhead


@dg.asset_check(asset=noop)
def noop_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)

"""
IN_PROCESS = """\
import dagster as dg

from benchlake.defs.noop_asset import noop, noop_check
from benchlake.defs.python_asset import trades_python

assets = [*trades_python.assets, *trades_python.asset_checks]
if "{what}" == "noop":
    assets = [noop, noop_check]
with dg.instance_for_test() as instance:
    result = dg.materialize(
        assets, resources=trades_python.resources, partition_key="{day}", instance=instance
    )
assert result.success
"""


def build_db(path: Path, rows: int) -> None:
    """``rows`` trades a day over ten days of January 2024."""
    step = 86_400 / rows
    start = dt.datetime(2024, 1, 1)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL)")
        for day in range(10):
            conn.executemany(
                "INSERT INTO trades VALUES (?, ?, ?)",
                (
                    (
                        (start + dt.timedelta(days=day, seconds=i * step)).isoformat(" "),
                        "ABCD"[i % 4],
                        100 + i % 97,
                    )
                    for i in range(rows)
                ),
            )


def project(root: Path) -> None:
    defs = dg_project(root, "benchlake")
    (defs / "yaml_asset").mkdir()
    (defs / "yaml_asset" / "defs.yaml").write_text(YAML)
    (defs / "python_asset.py").write_text(PYTHON)
    (defs / "noop_asset.py").write_text(NOOP)
    for what in ("asset", "noop"):
        (root / f"in_process_{what}.py").write_text(IN_PROCESS.format(day=DAY, what=what))


def timed_run(command: list[str], root: Path, env: dict[str, str], rays: int) -> float:
    home = Path(env["DAGSTER_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    dagster_home(home)
    ray_tmp = tempfile.mkdtemp(prefix="bl", dir="/tmp")  # short: AF_UNIX paths
    started = time.perf_counter()
    proc = subprocess.run(
        command, cwd=root, env={**env, "RAY_TMPDIR": ray_tmp}, capture_output=True, text=True
    )
    took = time.perf_counter() - started
    sessions = [p for p in Path(ray_tmp).rglob("session_2*") if not p.is_symlink()]
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if len(sessions) != rays:
        raise SystemExit(f"{' '.join(command)} started Ray {len(sessions)} times")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows a day")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        root = Path(tmp) / "benchlake"
        project(root)
        build_db(Path(tmp) / "trades.db", args.rows)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(BIN.parent),
            "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
            "DAGSTER_HOME": str(Path(tmp) / "home"),
            "BENCH_DB": f"sqlite:///{tmp}/trades.db",
            "BENCH_OUT": str(Path(tmp) / "out"),
            "RAY_AUTH_MODE": "disabled",
            "NO_COLOR": "1",
        }
        for name in ("RAY_ADDRESS", "DAGSTER_PYTHON_FILE"):
            env.pop(name, None)
        commands = {
            "(a) dg launch, YAML": [
                str(BIN / "dg"), "launch", "--assets", "trades_yaml", "--partition", DAY,
            ],
            "(b) dg launch, Python": [
                str(BIN / "dg"), "launch", "--assets", "trades_python", "--partition", DAY,
            ],
            "(c) dg.materialize in process": [sys.executable, str(root / "in_process_asset.py")],
            "(d) dg launch, a no-op asset": [
                str(BIN / "dg"), "launch", "--assets", "noop", "--partition", DAY,
            ],
            "(e) the no-op in process": [sys.executable, str(root / "in_process_noop.py")],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                rays = 0 if "no-op" in name else 1
                times[name].append(timed_run(command, root, env, rays))
    medians = {name: statistics.median(found) for name, found in times.items()}
    print(f"one partition of {args.rows:,} rows with its checks, medians of {args.runs} runs:")
    for name, found in times.items():
        runs = ", ".join(f"{t:.1f}" for t in found)
        print(f"  {name:32} {medians[name]:6.1f} s   ({runs})")
    base = medians["(c) dg.materialize in process"]
    for name in list(commands)[:2]:
        print(f"  {name} / in process: {medians[name] / base:.2f}x")
    own = medians["(d) dg launch, a no-op asset"] - medians["(e) the no-op in process"]
    for name in list(commands)[:2]:
        added = medians[name] - base
        print(f"  {name}: {added:+.1f} s over in process (Dagster's own overhead: {own:.1f} s)")


if __name__ == "__main__":
    main()
