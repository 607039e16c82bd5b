"""The code location as users meet it (definitions.py over defs/): validated by the dagster
CLI, run by the demo (scripts/demo.py) and the CLI, served by `dagster dev` and driven
through GraphQL; and the refresh sensor."""

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest
import ray
from deltalake import DeltaTable
from dotenv import dotenv_values
from polars.testing import assert_frame_equal

import piot_dagster
from defs.analytics import summarize
from defs.trades import QUERY, source, source_table
from piot_dagster.dagster.formats.registry import FORMATS
from piot_dagster.dagster.reading import not_stored, ranges
from scripts.trades_db import ensure_trades_db, synthetic_trades
from tests.dagster_server import (
    BIN,
    ROOT,
    SESSION_CLUSTER,
    dagster_dev,
    finished,
    load_definitions,
    materialize_cli,
    project_files,
    run_cli,
    run_on_a_terminal,
    submit,
    wait_for,
)
from tests.ray_cluster import cmdline

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_the_dagster_cli_validates_the_code_location(location_env):
    run_cli([str(BIN / "dagster"), "definitions", "validate", "-f", "definitions.py"], location_env)


def test_definitions_py_loads_from_anywhere_without_the_repository_on_the_path(
    location_env, tmp_path
):
    """defs/ is imported as an installed package (the project's), not through sys.path:
    the file loads from another folder, with no PYTHONPATH."""
    env = {k: v for k, v in location_env.items() if k != "PYTHONPATH"}
    dagster = str(BIN / "dagster")
    run_cli(
        [dagster, "definitions", "validate", "-f", str(ROOT / "definitions.py")], env, cwd=tmp_path
    )
    source = (ROOT / "definitions.py").read_text()
    assert "sys.path" not in source
    assert len(source.splitlines()) <= 25, "definitions.py only loads defs/"
    for module in (ROOT / "defs").glob("*.py"):
        text = module.read_text()
        assert "sys.path" not in text, module
        assert "fcntl" not in text, module
        assert "filterwarnings" not in text, module


def test_without_the_database_the_location_loads_and_a_run_fails_naming_the_file(
    location_env, tmp_path
):
    """`dg check defs` works on a fresh clone, before `make demo` builds the database; a
    run then fails saying which file it could not open, and creates none."""
    absent = tmp_path / "absent.db"
    env = {**location_env, "PIOT_TRADES_DB": str(absent)}
    dagster = str(BIN / "dagster")
    run_cli([dagster, "definitions", "validate", "-f", "definitions.py"], env, cwd=ROOT)
    command = [dagster, "asset", "materialize", "-f", "definitions.py"]
    command += ["--select", "trades_daily", "--partition", "2024-01-02"]
    failed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert f"could not open (sqlite at {absent})" in failed.stdout + failed.stderr
    assert not absent.exists()


def test_the_code_location_defines_what_the_readme_promises(location_env, monkeypatch):
    monkeypatch.setenv("PIOT_TRADES_DB", location_env["PIOT_TRADES_DB"])
    defs = load_definitions()
    for name, unit in (
        ("trades_daily", "daily"),
        ("trades_weekly", "weekly"),
        ("trades_monthly", "monthly"),
        ("trades_yearly", "yearly"),
    ):
        asset = defs.get_assets_def(name)
        assert piot_dagster.partition_unit(asset.partitions_def) == unit
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
        assert asset.specs_by_key[asset.key].kinds == {"polars", "ray", "parquet"}
    delta = defs.get_assets_def("trades_daily_delta")
    assert delta.partitions_def == defs.get_assets_def("trades_daily").partitions_def
    assert delta.backfill_policy == dg.BackfillPolicy.single_run()
    assert delta.specs_by_key[delta.key].kinds == {"polars", "ray", "delta"}
    by_symbol = defs.get_assets_def("trades_by_symbol").partitions_def
    assert isinstance(by_symbol, dg.MultiPartitionsDefinition)
    assert [d.name for d in by_symbol.partitions_defs] == ["date", "symbol"]
    vwap = defs.get_assets_def("daily_vwap")
    assert piot_dagster.partition_unit(vwap.partitions_def) == "daily"
    assert vwap.specs_by_key[vwap.key].automation_condition is not None
    summary = defs.get_assets_def("daily_summary")
    assert summary.partitions_def is None, "one frame of every stored day"
    assert summary.dependency_keys == {dg.AssetKey("trades_daily")}
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("trades_table")).is_observable
    for name in ("trades_daily", "trades_weekly", "trades_monthly", "trades_yearly"):
        assert dg.AssetKey("trades_table") in graph.get(dg.AssetKey(name)).parent_keys, name
    assert sorted((c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys) == [
        (table, check)
        for table in ("trades_daily", "trades_daily_delta")
        for check in ("min_rows", "no_null_dates", "rows_in_window", "schema_as_previous")
    ]
    jobs = {
        "trades_daily_job": "trades_daily",
        "trades_daily_delta_job": "trades_daily_delta",
        "trades_monthly_job": "trades_monthly",
        "daily_vwap_job": "daily_vwap",
        "daily_summary_job": "daily_summary",
    }
    for job, asset_name in jobs.items():
        assert defs.resolve_job_def(job).asset_layer.executable_asset_keys == {
            dg.AssetKey(asset_name)
        }, job
    assert [sensor.name for sensor in defs.sensors] == ["trades_daily_source_changes"]
    assert defs.executor == dg.in_process_executor, "one Ray per run"

    # Every asset stores through one IO manager per format, and all of them share one Ray.
    io_managers = {key: defs.resources[key] for key in defs.resources}
    assert {key: type(r) for key, r in io_managers.items()} == {
        f.resource_key: f.io_manager for f in FORMATS.values()
    }
    rays = {id(r.ray) for r in io_managers.values()}  # type: ignore[attr-defined]
    assert len(rays) == 1
    keys = {
        defs.get_assets_def(key).get_io_manager_key_for_asset_key(key)
        for key in graph.materializable_asset_keys
    }
    assert keys == {f.resource_key for f in FORMATS.values()}


def test_missing_partitions_are_logged_as_a_count_and_ranges():
    days = [
        f"{d:%Y-%m-%d}"
        for d in pl.date_range(dt.date(2022, 1, 1), dt.date(2024, 12, 31), eager=True)
    ]
    missing = [d for d in days if not "2024-01-01" <= d <= "2024-03-31"]
    assert not_stored("trades_daily", days, missing) == (
        "trades_daily: 1,005 of 1,096 partitions not stored, skipped: "
        "2022-01-01..2023-12-31, 2024-04-01..2024-12-31"
    )
    assert ranges(list("abcdefgh"), set("bcegh"), limit=2) == "b..c, e and 1 more ranges"
    assert ranges(list("abc"), set()) == ""


def test_concurrent_builders_leave_one_whole_database_and_nothing_else(tmp_path):
    path = tmp_path / "data" / "trades.db"
    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(ensure_trades_db, [path, path]))
    assert built == [path, path]
    assert [p.name for p in path.parent.iterdir()] == ["trades.db"], "nothing else left"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0] > 2_000_000
    conn.close()


def test_the_cli_materializes_a_range_as_one_run_and_one_partition_alone(location_env, tmp_path):
    materialize_cli(location_env, "trades_daily", "--partition-range", "2023-02-01...2023-02-03")
    materialize_cli(location_env, "trades_monthly", "--partition", "2023-02-01")
    materialize_cli(
        location_env, "trades_daily_delta", "--partition-range", "2023-02-01...2023-02-03"
    )
    assets = tmp_path / "assets"
    table = DeltaTable(str(assets / "trades_daily_delta"))
    assert table.version() == 0, "a range is one commit"
    assert pl.read_delta(str(assets / "trades_daily_delta")).height == 3 * 96 * 20
    assert sorted(p.name for p in (assets / "trades_daily").iterdir()) == [
        "2023-02-01.parquet",
        "2023-02-02.parquet",
        "2023-02-03.parquet",
    ]
    assert pl.read_parquet(assets / "trades_monthly" / "2023-02-01.parquet").height == 28 * 96 * 20
    with dg.DagsterInstance.from_config(location_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert len(runs) == 3, "a partition range is one run"


def test_the_demo_is_short_runs_named_jobs_judges_every_stored_days_checks_and_skips_what_is_stored(
    location_env, tmp_path
):
    # Three days stored without their checks, as the demo stored them before it ran checks.
    store_without_checks = (
        "import dagster as dg, definitions; d = definitions.defs(); "
        "dg.materialize([d.get_assets_def('trades_daily')], instance=dg.DagsterInstance.get(), "
        "resources=d.resources, "
        f"tags={{{RANGE_START!r}: '2024-01-01', {RANGE_END!r}: '2024-01-03'}})"
    )
    run_cli([sys.executable, "-c", store_without_checks], location_env)
    demo = [sys.executable, "-m", "scripts.demo"]
    shown = run_on_a_terminal(demo, location_env)
    # What stays on the screen: a bar redraws its line after each carriage return.
    lines = [line.rsplit("\r", 1)[-1] for line in shown.replace("\r\n", "\n").split("\n")]
    lines = lines[:-1] if lines[-1] == "" else lines
    assert "trades_daily:" in shown, "a progress bar on the terminal"
    assert "/91 [" in shown
    assert len(lines) <= 12, shown
    assert not [line for line in lines if "arning" in line or "DEBUG" in line], shown
    table = [line.split() for line in lines if line.startswith(("trades_daily", "daily_"))]
    assert [row[:3] for row in table] == [
        ["trades_daily", "91", "174,720"],
        ["trades_daily_delta", "91", "174,720"],
        ["daily_vwap", "91", "1,820"],
        ["daily_summary", "91", "91"],
    ]
    assert table[3][4] == str(tmp_path / "assets" / "daily_summary.parquet")
    assert "91 partitions read as one frame: 174,720 rows" in shown
    assert table[0][4] == f"{tmp_path / 'assets' / 'trades_daily'}/"
    assert len(list((tmp_path / "assets" / "trades_daily").iterdir())) == 91
    assert table[1][4:] == [
        f"{tmp_path / 'assets' / 'trades_daily_delta'}/",
        "(Delta",
        "table,",
        "version",
        "0)",
    ], "the quarter is one commit"
    checks_line = (
        "(partition checks, 4 of each stored day: trades_daily 364 of 364 passed, "
        "trades_daily_delta 364 of 364 passed)"
    )
    assert checks_line in lines
    # What the demo did not store, and why, in one short line.
    not_stored_line = (
        "(not stored: 1,005 of trades_daily's 1,096 days, 2022-01-01..2023-12-31, "
        "2024-04-01..2024-12-31: the demo backfills one quarter)"
    )
    assert not_stored_line in lines
    days = [
        f"{d:%Y-%m-%d}"
        for d in pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 3, 31), eager=True)
    ]
    with dg.DagsterInstance.from_config(location_env["DAGSTER_HOME"]) as instance:
        for table_name in ("trades_daily", "trades_daily_delta"):
            names = ["min_rows", "no_null_dates", "rows_in_window", "schema_as_previous"]
            keys = [dg.AssetCheckKey(dg.AssetKey(table_name), name) for name in names]
            judged = instance.event_log_storage.get_asset_check_partition_info(
                keys, partition_keys=days
            )
            passed = {
                (info.partition_key, info.check_key.name)
                for info in judged
                if info.is_current and info.latest_execution_status.value == "SUCCEEDED"
            }
            assert passed == {(day, name) for day in days for name in names}, table_name
        # The demo's runs are the location's jobs: the four that store, then one of them
        # judging the three days' checks alone (the first run is the test's own).
        runs = instance.get_runs()[::-1]  # newest first
        assert [r.job_name for r in runs[1:]] == [
            "trades_daily_job",
            "trades_daily_delta_job",
            "daily_vwap_job",
            "trades_daily_job",
            "daily_summary_job",
        ]

    again = run_cli(demo, location_env).stdout
    assert len(again.splitlines()) <= 12, again
    table = [line.split() for line in again.splitlines() if line.startswith(("trades_", "daily_"))]
    assert [row[:4] for row in table] == [
        ["trades_daily", "91", "174,720", "skipped"],
        ["trades_daily_delta", "91", "174,720", "skipped"],
        ["daily_vwap", "91", "1,820", "skipped"],
        ["daily_summary", "91", "91", "skipped"],
    ]
    assert checks_line in again.splitlines()
    assert not_stored_line in again.splitlines()
    assert "Ray:" not in again, "nothing to run: Ray is not even started"
    with dg.DagsterInstance.from_config(location_env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 6, "nothing run again"


def test_cli_commands_run_from_the_project_use_its_dagster_home(
    location_env, tmp_path, monkeypatch
):
    """`dagster asset materialize` as the README writes it, with no DAGSTER_HOME set, lands
    its run and file where `make ui` looks; `dagster asset list` needs no -f in the venv.
    The same .env has Dagster write events in batches, unless the environment says
    otherwise."""
    project = tmp_path / "project"
    project.mkdir()
    # The code location: definitions.py, and the dg project's YAML definitions it merges.
    shutil.copy(ROOT / "definitions.py", project)
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copytree(ROOT / "defs", project / "defs")
    home = project_files(project)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    assert dotenv_values(project / ".env")["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "50")
    assert dotenv_values(project / ".env")["DAGSTER_EVENT_BATCH_SIZE"] == "50"
    env = {k: v for k, v in location_env.items() if k not in ("DAGSTER_HOME", "PIOT_ASSET_DIR")}
    dagster = str(BIN / "dagster")
    run_cli(
        [
            dagster,
            "asset",
            "materialize",
            "-f",
            "definitions.py",
            "--select",
            "trades_monthly",
            "--partition",
            "2023-02-01",
        ],
        env,
        cwd=project,
    )
    stored = home / "storage" / "trades_monthly" / "2023-02-01.parquet"
    assert pl.read_parquet(stored).height == 28 * 96 * 20
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_runs()) == 1

    env.pop("DAGSTER_PYTHON_FILE", None)
    listed = run_cli(
        ["bash", "-c", f"source {BIN / 'activate'} && cd / && dagster asset list"], env
    ).stdout.split()
    assert {"trades_daily", "trades_monthly", "daily_vwap"} <= set(listed)


# Declarative Automation -----------------------------------------------------------------


@pytest.fixture
def location(trades_db, tmp_path, monkeypatch, ray_cluster):
    """The code location loaded in this process, over the prebuilt database, storing its
    assets under ``tmp_path / "assets"``."""
    monkeypatch.setenv("PIOT_TRADES_DB", str(trades_db))
    monkeypatch.setenv("PIOT_ASSET_DIR", str(tmp_path / "assets"))
    return load_definitions()


def test_automation_recomputes_exactly_the_vwap_days_whose_trades_changed(location, tmp_path):
    resources = location.resources
    trades_daily = location.get_assets_def("trades_daily")
    daily_vwap = location.get_assets_def("daily_vwap")
    vwap = dg.AssetKey("daily_vwap")
    with dg.instance_for_test() as instance:
        quiet = dg.evaluate_automation_conditions(defs=location, instance=instance)
        assert quiet.total_requested == 0, "history is for backfills, not automation"
        for day in ("2024-01-02", "2024-03-05"):
            assert dg.materialize(
                [trades_daily], partition_key=day, instance=instance, resources=resources
            ).success
        changed = dg.evaluate_automation_conditions(
            defs=location, instance=instance, cursor=quiet.cursor
        )
        assert changed.get_requested_partitions(vwap) == {"2024-01-02", "2024-03-05"}
        for day in ("2024-01-02", "2024-03-05"):
            assert dg.materialize(
                [trades_daily, daily_vwap],
                selection=[daily_vwap],
                partition_key=day,
                instance=instance,
                resources=resources,
            ).success
        after = dg.evaluate_automation_conditions(
            defs=location, instance=instance, cursor=changed.cursor
        )
    assert after.total_requested == 0
    stored = pl.read_parquet(tmp_path / "assets" / "daily_vwap" / "2024-03-05.parquet")
    assert stored["day"].unique().to_list() == [dt.date(2024, 3, 5)]
    assert stored.height == 20, "one row per symbol"


def test_the_summary_reads_every_stored_day_as_one_frame_and_equals_plain_polars(
    location, trades_db, tmp_path
):
    resources = location.resources
    trades_daily = location.get_assets_def("trades_daily")
    with dg.instance_for_test() as instance:
        # Days stored by separate runs, with gaps between them and a DST change (Europe's,
        # which UTC partitions do not see) among them; every other day is missing.
        for first, last in (("2023-03-25", "2023-03-27"), ("2024-02-28", "2024-03-01")):
            tags = {RANGE_START: first, RANGE_END: last}
            assert dg.materialize(
                [trades_daily], instance=instance, resources=resources, tags=tags
            ).success
        result = dg.materialize(
            [trades_daily, location.get_assets_def("daily_summary")],
            selection=["daily_summary"],
            instance=instance,
            resources=resources,
        )
        assert result.success
        metadata = result.asset_materializations_for_node("daily_summary")[0].metadata
    days = ["2023-03-25", "2023-03-26", "2023-03-27", "2024-02-28", "2024-02-29", "2024-03-01"]
    stored = pl.read_parquet(tmp_path / "assets" / "daily_summary.parquet")
    assert stored["day"].cast(pl.String).to_list() == days
    assert metadata["partitions_read"].value == 6
    assert metadata["rows_read"].value == 6 * 96 * 20

    conn = sqlite3.connect(trades_db)
    bounds = " OR ".join(f"(ts >= '{d}' AND ts < date('{d}', '+1 day'))" for d in days)
    raw = pl.read_database(f"SELECT ts, symbol, price, qty FROM trades WHERE {bounds}", conn)
    conn.close()
    # The asset's own computation, on the same rows read by plain Polars: integers and
    # times exactly, the VWAP up to the order its floats are summed in.
    plain = summarize(raw.lazy().with_columns(pl.col("ts").str.to_datetime(time_unit="us")))
    assert_frame_equal(stored, plain, check_exact=False, rel_tol=1e-12)


# The UI, for real -----------------------------------------------------------------------


@pytest.fixture
def dagster_dev_port(location_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    with dagster_dev(ROOT / "definitions.py", location_env, tmp_path / "dagster-dev.log") as port:
        yield port


BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def test_the_ui_runs_a_partition_and_a_backfill_through_graphql(
    dagster_dev_port, location_env, tmp_path
):
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev_port)
    run_id = submit(dagster_dev_port, "trades_daily_job", {"dagster/partition": "2024-02-29"})
    backfill = client._execute(
        BACKFILL,
        {
            "params": {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": ["trades_monthly"]},
                        "partitions": {"range": {"start": "2023-01-01", "end": "2023-03-01"}},
                    }
                ]
            }
        },
    )["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

    wait_for(lambda: finished(dagster_dev_port, run_id), "the run")
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.SUCCESS
    # The downstream of every stored day: the one just run.
    summary_run = submit(dagster_dev_port, "daily_summary_job", {})
    wait_for(lambda: finished(dagster_dev_port, summary_run), "the summary run")
    assert client.get_run_status(summary_run) == dg.DagsterRunStatus.SUCCESS
    assets = tmp_path / "assets"
    monthly = [assets / "trades_monthly" / f"2023-0{m}-01.parquet" for m in (1, 2, 3)]

    with dg.DagsterInstance.from_config(location_env["DAGSTER_HOME"]) as instance:

        def backfill_runs() -> list[dg.DagsterRun]:
            return [
                r
                for r in instance.get_runs()
                if r.tags.get("dagster/backfill") == backfill["backfillId"]
            ]

        wait_for(
            lambda: backfill_runs() and all(r.is_finished for r in backfill_runs()), "the backfill"
        )
        assert len(backfill_runs()) == 1, "the single-run policy makes the backfill one run"
        assert backfill_runs()[0].status == dg.DagsterRunStatus.SUCCESS
        record = instance.get_latest_materialization_event(dg.AssetKey("trades_daily"))
        metadata = record.asset_materialization.metadata
        assert record.asset_materialization.partition == "2024-02-29"
        assert metadata["dagster/partition_row_count"].value == 96 * 20
        columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
        assert columns == ["ts", "symbol", "price", "qty"]
        summary = instance.get_latest_materialization_event(dg.AssetKey("daily_summary"))
        assert summary.asset_materialization.metadata["partitions_read"].value == 1
        # The job runs the day's partition checks with it: the Checks tab shows them passed.
        names = ["min_rows", "no_null_dates", "rows_in_window", "schema_as_previous"]
        judged = instance.event_log_storage.get_asset_check_partition_info(
            [dg.AssetCheckKey(dg.AssetKey("trades_daily"), name) for name in names],
            partition_keys=["2024-02-29"],
        )
        assert sorted(
            (info.check_key.name, info.latest_execution_status.value, info.is_current)
            for info in judged
        ) == [(name, "SUCCEEDED", True) for name in names]
    assert all(p.exists() for p in monthly)
    assert pl.read_parquet(monthly[1]).height == 28 * 96 * 20
    screenshot(dagster_dev_port, tmp_path, "trades_daily?view=partitions")
    screenshot(dagster_dev_port, tmp_path, "trades_daily?view=checks")
    screenshot(dagster_dev_port, tmp_path, "daily_summary")


def test_make_ui_keeps_one_ray_cluster_for_the_session_and_stops_it_after(location_env, tmp_path):
    home = project_files(tmp_path)
    # No RAY_ADDRESS, and a Ray temp folder of its own: no cluster of this machine's to join.
    env = {k: v for k, v in location_env.items() if k != "RAY_ADDRESS"}
    env |= {"DAGSTER_HOME": str(home), "RAY_TMPDIR": tempfile.mkdtemp(prefix="r", dir="/tmp")}
    log = tmp_path / "ui.log"
    with dagster_dev(ROOT / "definitions.py", env, log, launcher=SESSION_CLUSTER) as port:
        address = re.search(r"cluster up at (\S+);", log.read_text()).group(1)  # type: ignore[union-attr]
        runs = [
            submit(port, "trades_daily_job", {"dagster/partition": day})
            for day in ("2024-02-05", "2024-02-06")
        ]
        for run_id in runs:
            wait_for(lambda run_id=run_id: finished(port, run_id), "the run")
        launcher = next(
            p
            for p in psutil.Process().children(recursive=True)
            if cmdline(p.pid).startswith(" ".join(SESSION_CLUSTER))
        )
        started = launcher.children(recursive=True)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert [instance.get_run_by_id(r).status for r in runs] == [
                dg.DagsterRunStatus.SUCCESS
            ] * 2
            for day in ("2024-02-05", "2024-02-06"):
                record = instance.fetch_materializations(
                    dg.AssetRecordsFilter(
                        asset_key=dg.AssetKey("trades_daily"), asset_partitions=[day]
                    ),
                    limit=1,
                ).records[0]
                # Both runs joined the session's cluster: it outlives them.
                cluster = record.asset_materialization.metadata["ray_cluster"].value
                assert cluster.rsplit(":", 1)[1] == address.rsplit(":", 1)[1]
        assert any("gcs_server" in cmdline(p.pid) for p in started)
    # Stopped as Ctrl-C stops `make ui`: the cluster went with it, every process of it.
    psutil.wait_procs(started, timeout=60)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_make_ui_uses_a_cluster_the_user_runs_and_leaves_it_up(location_env, ray_cluster):
    command = [
        sys.executable,
        "-c",
        "import ray; ray.init(); print(ray.cluster_resources()['CPU'])",
    ]
    shown = run_cli([*SESSION_CLUSTER, *command], location_env).stdout
    assert f"runs join the cluster at {location_env['RAY_ADDRESS']}, which stays up" in shown
    assert ray.cluster_resources()["CPU"] > 0, "the user's cluster is still up"


START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on PythonError { message }
  }
}
"""


def test_the_sensor_turned_on_through_graphql_runs_exactly_the_changed_days(
    location_env, trades_db, tmp_path, monkeypatch
):
    from dagster_graphql import DagsterGraphQLClient

    source = tmp_path / "trades.db"
    shutil.copy(trades_db, source)
    env = {**location_env, "PIOT_TRADES_DB": str(source)}
    with dagster_dev(ROOT / "definitions.py", env, tmp_path / "dagster-dev.log") as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        selector = {
            "repositoryLocationName": "definitions.py",
            "repositoryName": "__repository__",
            "sensorName": "trades_daily_source_changes",
        }
        wait_for(lambda: started(client, selector), "the sensor to start", timeout=120)
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            monkeypatch.setenv("PIOT_TRADES_DB", str(source))
            table = source_table()
            wait_for(lambda: len(table.recorded(instance)) == 1096, "the first tick", 240)
            conn = sqlite3.connect(source)
            conn.execute("INSERT INTO trades VALUES ('2024-01-05 12:34:56', 'SYM00', 1.0, 1)")
            conn.execute(
                "UPDATE trades SET price = price + 1 WHERE symbol = 'SYM07' "
                "AND ts = '2024-03-20 10:00:00'"
            )
            conn.commit()
            conn.close()

            def refresh_runs() -> list[dg.DagsterRun]:
                return [r for r in instance.get_runs() if "dagster/sensor_name" in r.tags]

            wait_for(
                lambda: len(refresh_runs()) >= 2 and all(r.is_finished for r in refresh_runs()),
                "the refresh runs",
                timeout=300,
            )
            runs = refresh_runs()
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["2024-01-05", "2024-03-20"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    stored = pl.read_parquet(tmp_path / "assets" / "trades_daily" / "2024-01-05.parquet")
    assert stored.height == 96 * 20 + 1, "the appended trade is in its day"


def started(client: object, selector: dict[str, str]) -> bool:
    result = client._execute(START_SENSOR, {"selector": selector})["startSensor"]  # type: ignore[attr-defined]
    return result["__typename"] == "Sensor"


def screenshot(port: int, tmp_path: Path, page: str) -> None:
    """An asset's page (``trades_daily?view=partitions``) renders in headless Chromium
    (Debian's package)."""

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    picture = tmp_path / f"{page.replace('?view=', '_')}.png"
    url = f"http://127.0.0.1:{port}/assets/{page}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,900",
        "--virtual-time-budget=15000",
        f"--screenshot={picture}",
    ]
    subprocess.run([chromium, *flags, url], capture_output=True, timeout=120, check=False)
    assert picture.exists(), "chromium wrote no screenshot"
    assert picture.stat().st_size > 20_000, "the page rendered nearly blank"
    if (ROOT / ".pytest_cache").is_dir():  # kept where a run's pictures can be looked at
        shutil.copy(picture, ROOT / ".pytest_cache" / picture.name)


def test_the_readme_tour_runs_as_written(trades_db, ray_cluster, capsys):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    code = "\n".join(line[3:] for line in block.splitlines() if not line.strip().startswith("```"))
    code = code.replace("sqlite:///data/trades.db", f"sqlite:///{trades_db}")
    code = code.replace("ray.init()", "pass  # the tests' Ray is already running")
    exec(compile(code, "README tour", "exec"), {})
    printed = capsys.readouterr().out
    assert "SYM00" in printed
    assert "8736" in printed  # 91 days x 96 trades a day


def test_the_code_location_reads_postgresql_when_configured(location_env, postgres_url, tmp_path):
    import adbc_driver_postgresql.dbapi

    schema = "piot_location_" + os.urandom(4).hex()
    trades = synthetic_trades(dt.date(2024, 1, 1), dt.date(2024, 1, 3))
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.adbc_ingest("trades", trades.to_arrow(), mode="create", db_schema_name=schema)
        conn.commit()
    try:
        uri = f"{postgres_url}?options=-csearch_path%3D{schema}"
        env = {
            **location_env,
            "PIOT_SOURCE_URI": uri,
            "PIOT_TRADES_DB": str(tmp_path / "unused.db"),
        }
        materialize_cli(env, "trades_daily", "--partition", "2024-01-02")
        stored = pl.read_parquet(tmp_path / "assets" / "trades_daily" / "2024-01-02.parquet")
        assert stored.height == 96 * 20
        assert not (tmp_path / "unused.db").exists(), "the embedded database is not built"
    finally:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.commit()


WEEK = [f"2024-01-0{d}" for d in range(1, 8)]


@pytest.fixture(scope="module")
def mariadb_trades(mysql_url: str) -> Iterator[str]:
    """A fresh MariaDB database holding the code location's ``trades`` for the week of
    2024-01-01 (7 x 96 x 20 rows), indexed on ``ts``; its ``mysql://`` URI. Dropped after."""
    from urllib.parse import urlsplit

    from tests.databases import mysql_connect

    database = "piot_location_" + os.urandom(4).hex()
    url = urlsplit(mysql_url)._replace(path=f"/{database}").geturl()
    trades = synthetic_trades(dt.date(2024, 1, 1), dt.date(2024, 1, 8))
    admin = mysql_connect(mysql_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{database}`")
        conn = mysql_connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "CREATE TABLE trades (ts DATETIME(6), symbol VARCHAR(16), price DOUBLE, "
                    "qty BIGINT, INDEX (ts))"
                )
                rows = trades.rows()
                for start in range(0, len(rows), 5_000):
                    cursor.executemany(
                        "INSERT INTO trades VALUES (%s, %s, %s, %s)", rows[start : start + 5_000]
                    )
        finally:
            conn.close()
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()


def mariadb_connection(url: str, reached: str) -> str:
    """``url`` itself, or the MariaDB ODBC string for the same database."""
    from tests.databases import odbc_string

    return url if reached == "uri" else odbc_string("mariadb", mysql_url=url)


@pytest.mark.parametrize("reached", ["uri", "odbc"])
def test_the_code_location_backfills_a_week_from_mariadb_by_uri_or_odbc(
    location_env, mariadb_trades, tmp_path, reached, request
):
    if reached == "odbc":
        request.getfixturevalue("odbc_drivers")
    env = {
        **location_env,
        "PIOT_SOURCE_URI": mariadb_connection(mariadb_trades, reached),
        "PIOT_TRADES_DB": str(tmp_path / "unused.db"),
    }
    materialize_cli(env, "trades_daily", "--partition-range", f"{WEEK[0]}...{WEEK[-1]}")
    folder = tmp_path / "assets" / "trades_daily"
    assert sorted(p.name for p in folder.iterdir()) == [f"{day}.parquet" for day in WEEK]
    # The rows the database was given, day by day (prices follow a row's place in the week).
    week = synthetic_trades(dt.date(2024, 1, 1), dt.date(2024, 1, 8))
    for day in WEEK:
        stored = pl.read_parquet(folder / f"{day}.parquet")
        assert stored.height == 96 * 20, day
        given = week.filter(pl.col("ts").dt.date() == dt.date.fromisoformat(day))
        assert_frame_equal(stored.sort("ts", "symbol"), given.sort("ts", "symbol"))
    assert not (tmp_path / "unused.db").exists(), "the embedded database is not built"
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 1, "a week's backfill is one run"


def test_the_code_locations_source_table_fingerprints_mariadb_alike_by_uri_and_odbc(
    mariadb_trades, odbc_drivers, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIOT_TRADES_DB", str(tmp_path / "unused.db"))
    versions = []
    for reached in ("uri", "odbc"):
        monkeypatch.setenv("PIOT_SOURCE_URI", mariadb_connection(mariadb_trades, reached))
        trades = piot_dagster.scan_db(QUERY, connection=source())
        assert trades.select(pl.len()).collect().item() == 7 * 96 * 20
        versions.append(source_table().versions())
    assert sorted(versions[0]) == WEEK
    assert versions[1] == versions[0]
    assert not (tmp_path / "unused.db").exists()
