"""The PartitionedQuery component and the repository as a `dg` project, through the real
`dg` CLI: scaffolding into a new project, checking and listing definitions, a partition
range materialized from YAML on a real local Ray, and the errors a wrong attribute gets.
(No `from __future__ import annotations`: Dagster reads the annotations of these tests'
assets.)"""

import json
import os
import re
import urllib.request
from dataclasses import fields
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import ray
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

import piot_dagster
from piot_dagster import PartitionedQuery
from piot_dagster.dagster.component import Checks, Output, Partitions, SourceSensor, StaticDimension
from tests.dagster_server import BIN, ROOT, dagster_process, free_port, wait_for
from tests.dg_projects import DG, dagster_home, dg_cli, dg_project
from tests.partitioned_prices import prices

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture
def project(tmp_path: Path, prices_db: str) -> tuple[Path, dict[str, str]]:
    """A new `dg` project (as `create-dagster project` lays one out) and the environment of
    a user in its activated venv: the tests' Ray, a Dagster home of its own, and the
    database in PIOT_SOURCE_URI."""
    root = tmp_path / "lake"
    dg_project(root, "lake")
    home = dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(BIN.parent),
        "DAGSTER_HOME": str(home),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PIOT_SOURCE_URI": prices_db,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env.pop("DAGSTER_PYTHON_FILE", None)
    return root, env


def scaffolded(root: Path, env: dict[str, str], name: str = "prices_daily") -> Path:
    """`dg scaffold defs piot_dagster.PartitionedQuery <name>`, set to the test's table."""
    dg_cli("scaffold", "defs", "piot_dagster.PartitionedQuery", name, cwd=root, env=env)
    path = root / "lake" / "defs" / name / "defs.yaml"
    text = path.read_text()
    text = text.replace(
        "SELECT ts, symbol, price FROM trades", "SELECT ts, symbol, price FROM prices"
    )
    text = text.replace('start: "2024-01-01"', 'start: "2024-01-01"\n    end: "2024-01-11"')
    path.write_text(text)
    return path


# Scaffolding, listing and checking ------------------------------------------------------


def test_dg_finds_the_component_and_scaffolds_a_commented_defs_yaml_that_loads(project):
    root, env = project

    listed = json.loads(dg_cli("list", "components", "--json", cwd=root, env=env))
    assert "piot_dagster.PartitionedQuery" in {item["key"] for item in listed["items"]}
    path = scaffolded(root, env)

    text = path.read_text()
    every = {
        f.name
        for kind in (PartitionedQuery, Partitions, StaticDimension, Output, Checks, SourceSensor)
        for f in fields(kind)
    }
    unwritten = [name for name in every if not re.search(rf"^ *(# *)?{name}:", text, re.M)]
    assert not unwritten, "every attribute is in the file, set or commented out"
    assert 'connection: "{{ env.PIOT_SOURCE_URI }}"' in text
    assert "All definitions loaded successfully" in dg_cli("check", "defs", cwd=root, env=env)
    defs = json.loads(dg_cli("list", "defs", "--json", cwd=root, env=env))
    (asset,) = defs["assets"]
    assert asset["asset_key"] == "prices_daily"
    assert asset["source"].startswith("lake/defs/prices_daily/defs.yaml:")
    assert {check["name"] for check in defs["asset_checks"]} == {
        "rows_in_window", "no_null_dates", "schema_as_previous", "min_rows"
    }  # fmt: skip


@pytest.mark.parametrize("stored_as", ["parquet", "delta"])
def test_a_partition_range_materializes_from_yaml_as_one_run(project, tmp_path, stored_as):
    root, env = project
    path = scaffolded(root, env)
    base = tmp_path / "lake-data"
    text = path.read_text().replace("format: parquet", f"format: {stored_as}")
    path.write_text(text.replace("    # base_dir: s3://lake/assets", f"    base_dir: {base}"))

    dg_cli(
        "launch", "--assets", "prices_daily", "--partition-range", "2024-01-02...2024-01-04",
        cwd=root, env=env,
    )  # fmt: skip

    expected = (
        prices(10).filter(pl.col("ts").dt.day().is_between(2, 4)).select("ts", "symbol", "price")
    )
    if stored_as == "delta":
        table = DeltaTable(str(base / "prices_daily"))
        assert table.version() == 0, "the range is one commit"
        stored = pl.read_delta(str(base / "prices_daily")).drop("dagster_partition")
    else:
        files = sorted((base / "prices_daily").iterdir())
        assert [f.name for f in files] == [f"2024-01-0{d}.parquet" for d in (2, 3, 4)]
        stored = pl.concat(pl.read_parquet(f) for f in files)
    assert_frame_equal(stored.sort("ts", "symbol"), expected)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_materialized_partitions(dg.AssetKey("prices_daily")) == {
            "2024-01-02", "2024-01-03", "2024-01-04"
        }  # fmt: skip


def test_dg_check_yaml_names_an_unknown_attribute_at_its_line(project):
    root, env = project
    path = scaffolded(root, env)
    path.write_text(
        path.read_text().replace("  date_column: ts", "  date_column: ts\n  colour: red")
    )

    printed = dg_cli("check", "yaml", cwd=root, env=env, ok=False)

    line = path.read_text().splitlines().index("  colour: red") + 1
    assert re.search(rf"defs\.yaml:{line} .*attributes\.colour", printed), printed[-2000:]
    assert "'colour' was unexpected" in printed


# One code path ---------------------------------------------------------------------------

YAML = """\
name: cells
query: SELECT ts, symbol, price FROM prices
connection: "{{ env.PIOT_SOURCE_URI }}"
date_column: ts
partitions:
  time_unit: daily
  start: "2024-01-01"
  end: "2024-01-11"
  timezone: Europe/Berlin
  static: {name: symbol, keys: [A, B], column: symbol}
output:
  format: delta
  base_dir: s3://lake/tables
  storage_options: {aws_region: eu-west-1, aws_secret_access_key: "{{ env.LAKE_SECRET }}"}
  schema_mode: merge
remote_options: {num_cpus: 1}
max_concurrency: 7
checks: {min_rows: 3}
automation_condition: "{{ dg.AutomationCondition.eager() }}"
group_name: markets
kinds: [polars, ray, delta]
description: Prices by day and symbol.
deps: [raw/prices]
"""


def test_yaml_builds_exactly_the_asset_python_builds_with_partitioned_query():
    from_yaml = dg.build_defs_for_component(PartitionedQuery.resolve_from_yaml(YAML))
    from_python = piot_dagster.partitioned_query(
        "cells",
        query="SELECT ts, symbol, price FROM prices",
        connection=dg.EnvVar("PIOT_SOURCE_URI"),
        date_column="ts",
        partitions_def=dg.MultiPartitionsDefinition(
            {
                "date": piot_dagster.time_partitions(
                    "daily", "2024-01-01", end="2024-01-11", timezone="Europe/Berlin"
                ),
                "symbol": dg.StaticPartitionsDefinition(["A", "B"]),
            }
        ),
        partition_columns={"symbol": "symbol"},
        stored_as="delta",
        base_dir="s3://lake/tables",
        storage_options={
            "aws_region": "eu-west-1",
            "aws_secret_access_key": dg.EnvVar("LAKE_SECRET"),
        },
        schema_mode="merge",
        remote_options={"num_cpus": 1},
        max_concurrency=7,
        min_rows=3,
        automation_condition=dg.AutomationCondition.eager(),
        group_name="markets",
        kinds=["polars", "ray", "delta"],
        description="Prices by day and symbol.",
        deps=["raw/prices"],
    )

    key = dg.AssetKey("cells")
    yaml_asset, python_asset = from_yaml.get_assets_def(key), from_python.get_assets_def(key)
    yaml_spec, python_spec = yaml_asset.specs_by_key[key], python_asset.specs_by_key[key]
    for attribute in ("partitions_def", "group_name", "kinds", "description", "deps"):
        assert getattr(yaml_spec, attribute) == getattr(python_spec, attribute), attribute
    assert repr(yaml_spec.automation_condition) == repr(python_spec.automation_condition)
    yaml_metadata = {k: v for k, v in yaml_spec.metadata.items() if not k.startswith("dagster/")}
    assert yaml_metadata == python_spec.metadata
    assert yaml_metadata["storage_options"]["aws_secret_access_key"] == dg.EnvVar("LAKE_SECRET")
    assert (
        yaml_asset.backfill_policy == python_asset.backfill_policy == dg.BackfillPolicy.single_run()
    )
    assert yaml_asset.get_io_manager_key_for_asset_key(key) == "piot_delta_io_manager"
    assert set(from_yaml.resources) == set(from_python.resources)
    checks = from_yaml.resolve_asset_graph().asset_check_keys
    assert {c.name for c in checks} == {
        "rows_in_window",
        "no_null_dates",
        "schema_as_previous",
        "min_rows",
    }


SENSED = """\
name: cells
query: SELECT ts, symbol, price FROM prices
connection: sqlite:///prices.db
date_column: ts
partitions: {time_unit: daily, start: "2024-01-01"}
source_sensor: {minimum_interval_seconds: 120, running: true}
"""


def test_the_source_sensor_comes_with_its_source_table_and_starts_as_asked():
    defs = dg.build_defs_for_component(PartitionedQuery.resolve_from_yaml(SENSED))

    (sensor,) = defs.sensors
    assert sensor.name == "cells_source_changes"
    assert sensor.minimum_interval_seconds == 120
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert dg.AssetKey("cells_source") in defs.get_assets_def("cells").dependency_keys


def test_an_unset_connection_variable_is_named_with_its_asset(monkeypatch):
    monkeypatch.delenv("PIOT_UNSET_SOURCE", raising=False)
    # The sensor's source table reads the connection when the definitions load.
    yaml = SENSED.replace("sqlite:///prices.db", '"{{ env.PIOT_UNSET_SOURCE }}"')

    message = (
        "partitioned_query 'cells': connection reads the environment variable "
        "'PIOT_UNSET_SOURCE', which is not set in this process"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        dg.build_defs_for_component(PartitionedQuery.resolve_from_yaml(yaml))


# The repository as a dg project ----------------------------------------------------------


@pytest.fixture
def repository_env(location_env: dict[str, str]) -> dict[str, str]:
    env = {**location_env, "PATH": f"{BIN}:{os.environ['PATH']}", "VIRTUAL_ENV": str(BIN.parent)}
    env.pop("DAGSTER_PYTHON_FILE", None)
    return {**env, "NO_COLOR": "1", "COLUMNS": "200"}


def test_the_repository_is_a_dg_project_whose_yaml_asset_joins_the_python_ones(repository_env):
    assert "All definitions loaded successfully" in dg_cli(
        "check", "defs", cwd=ROOT, env=repository_env
    )
    dg_cli("check", "yaml", cwd=ROOT, env=repository_env)

    listed = json.loads(dg_cli("list", "defs", "--json", cwd=ROOT, env=repository_env))

    sources = {a["asset_key"]: a.get("source") or "" for a in listed["assets"]}
    assert sources["trades_yearly"].startswith("defs/trades_yearly/defs.yaml:")
    assert {"trades_daily", "trades_daily_delta", "trades_monthly", "daily_summary"} <= set(sources)


def test_dg_dev_serves_the_repository_from_its_root(repository_env, tmp_path):
    port = free_port()
    command = [DG, "dev", "--host", "127.0.0.1", "--port", str(port)]
    with dagster_process(command, repository_env, tmp_path / "dg-dev.log"):

        def assets() -> set[str] | None:
            query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/graphql", query, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    nodes = json.load(response)["data"]["assetNodes"]
            except Exception:
                return None
            return {"/".join(node["assetKey"]["path"]) for node in nodes}

        wait_for(lambda: assets(), "dg dev to serve the code location")
        served = assets()
    assert {"trades_yearly", "trades_daily", "trades_daily_delta", "daily_summary"} <= served
