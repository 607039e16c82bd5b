"""definitions.py as users meet it: validated by the dagster CLI, run by the demo and the
CLI, served by `dagster dev` and driven through GraphQL; and the refresh sensor."""

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import piot_dagster
from piot_dagster import time_partitions
from tests.dagster_server import (
    BIN,
    ROOT,
    dagster_dev,
    finished,
    load_definitions,
    materialize_cli,
    run_cli,
    submit,
    wait_for,
)

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_the_dagster_cli_validates_the_code_location(location_env):
    run_cli([str(BIN / "dagster"), "definitions", "validate", "-f", "definitions.py"], location_env)


def test_the_code_location_defines_what_the_readme_promises():
    defs = load_definitions().defs
    for name, unit in (
        ("trades_daily", "daily"),
        ("trades_monthly", "monthly"),
        ("trades_yearly", "yearly"),
    ):
        asset = defs.get_assets_def(name)
        assert piot_dagster.partition_unit(asset.partitions_def) == unit
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert defs.get_assets_def("daily_vwap").partitions_def is None
    assert defs.get_sensor_def("trades_daily_source_changes")


def test_the_cli_materializes_a_range_as_one_run_and_one_partition_alone(location_env, tmp_path):
    materialize_cli(location_env, "trades_daily", "--partition-range", "2023-02-01...2023-02-03")
    materialize_cli(location_env, "trades_monthly", "--partition", "2023-02-01")
    assets = tmp_path / "assets"
    assert sorted(p.name for p in (assets / "trades_daily").iterdir()) == [
        "2023-02-01.parquet",
        "2023-02-02.parquet",
        "2023-02-03.parquet",
    ]
    assert pl.read_parquet(assets / "trades_monthly" / "2023-02-01.parquet").height == 28 * 96 * 20
    with dg.DagsterInstance.from_config(location_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert len(runs) == 2, "a partition range is one run"


def test_the_demo_backfills_a_quarter_and_the_downstream_asset(location_env, tmp_path):
    proc = run_cli([sys.executable, "definitions.py"], location_env, timeout=600)
    assert "trades_daily: 91 partitions (2024-01-01 to 2024-03-31), 174,720 rows" in proc.stdout
    assert "daily_vwap: 1,820 rows" in proc.stdout
    assert len(list((tmp_path / "assets" / "trades_daily").iterdir())) == 91


# The refresh sensor ---------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "source.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (ts TIMESTAMP, price REAL)")
    rows = [
        ((dt.datetime(2024, 1, 1) + dt.timedelta(hours=h)).isoformat(sep=" "), float(h))
        for h in range(24 * 10)
    ]
    conn.executemany("INSERT INTO trades VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}", path


def append(path: Path, *stamps: str) -> None:
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO trades VALUES (?, 1.0)", [(s,) for s in stamps])
    conn.commit()
    conn.close()


def sensor_for(uri: str, unit: str = "daily") -> dg.SensorDefinition:
    start = "2024-01-01" if unit != "yearly" else "2024"

    @dg.asset(
        partitions_def=time_partitions(unit, start), backfill_policy=dg.BackfillPolicy.single_run()
    )
    def trades() -> pl.LazyFrame:
        return piot_dagster.scan_db("SELECT ts, price FROM trades", connection=uri)

    return piot_dagster.source_change_sensor(
        trades, connection=uri, query="SELECT ts, price FROM trades", date_column="ts"
    )


def tick(sensor: dg.SensorDefinition, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = sensor(context)
    return list(result.run_requests or []), result.cursor


def test_the_sensor_requests_exactly_the_partitions_whose_rows_changed(source):
    uri, path = source
    sensor = sensor_for(uri)
    requests, cursor = tick(sensor, None)
    assert requests == [], "the first tick records fingerprints and requests nothing"
    append(path, "2024-01-05 10:30:00")
    requests, cursor = tick(sensor, cursor)
    assert [r.partition_key for r in requests] == ["2024-01-05"]
    again, _ = tick(sensor, json.dumps({**json.loads(cursor), "2024-01-05": [0, ""]}))
    assert again[0].run_key == requests[0].run_key, "the same change gives the same run key"
    nothing, cursor = tick(sensor, cursor)
    assert nothing == []


def test_the_sensor_requests_one_range_run_when_many_partitions_change(source):
    uri, path = source
    sensor = sensor_for(uri)
    _, cursor = tick(sensor, None)
    append(path, "2024-01-02 01:00:00", "2024-01-07 02:00:00", "2024-01-12 00:00:00")
    (request,), _ = tick(sensor, cursor)
    assert request.partition_key is None
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2024-01-02", "2024-01-12")
    assert request.asset_selection == [dg.AssetKey("trades")]


def test_the_sensor_folds_days_into_monthly_partitions(source):
    uri, path = source
    sensor = sensor_for(uri, "monthly")
    _, cursor = tick(sensor, None)
    append(path, "2024-01-20 09:00:00")
    requests, _ = tick(sensor, cursor)
    assert [r.partition_key for r in requests] == ["2024-01-01"]


def test_the_sensor_skips_a_tick_when_the_source_cannot_be_read(tmp_path):
    sensor = sensor_for(f"sqlite:///{tmp_path / 'missing.db'}")
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert "could not be read" in result.skip_message


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
    assert all(p.exists() for p in monthly)
    assert pl.read_parquet(monthly[1]).height == 28 * 96 * 20
    screenshot_partitions_page(dagster_dev_port, tmp_path)


def screenshot_partitions_page(port: int, tmp_path: Path) -> None:
    """The asset's partitions page renders in headless Chromium (Debian's package)."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    picture = tmp_path / "trades_daily_partitions.png"
    url = f"http://127.0.0.1:{port}/assets/trades_daily?view=partitions"
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
    shutil.copy(picture, ROOT / ".pytest_cache" / picture.name) if (
        ROOT / ".pytest_cache"
    ).is_dir() else None


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
    trades = load_definitions().synthetic_trades(dt.date(2024, 1, 1), dt.date(2024, 1, 3))
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
