"""The PartitionedQuery component in a `dg` project made as a user makes one, outside the
repository: `create-dagster project`, installed with `pip install -e`, driven by the real
`dg` CLI. Good YAML lands rows from a real SQLite file with Ray started once per run;
each case of bad input gets a short message naming its YAML line or attribute, and no
secret. (No `from __future__ import annotations`: Dagster reads the annotations of these
tests' assets.)"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import ray
from polars.testing import assert_frame_equal

import piot_dagster
import piot_dagster.errors
from piot_dagster import PartitionedQuery
from piot_dagster.dagster.component import (
    Checks,
    IOManagerOptions,
    Output,
    Partitions,
    Ray,
    SourceSensor,
    StaticDimension,
)
from tests.dagster_server import BIN
from tests.dg_projects import dg_cli
from tests.partitioned_prices import prices

SECRET = "Sup3rS3cret"
# What a failure may print at most: the reason, not pages of our own frames.
SHORT = 60

GOOD = """\
type: piot_dagster.PartitionedQuery
attributes:
  name: prices_daily
  query: SELECT ts, symbol, price FROM prices
  connection: "{{ env.PIOT_SOURCE_URI }}"
  date_column: ts
  partitions:
    time_unit: daily
    start: "2024-01-01"
    end: "2024-01-11"
  output:
    base_dir: BASE_DIR
  checks:
    min_rows: 1
"""


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory):
    """`create-dagster project <name>`, then `pip install -e . --no-deps` into the tests'
    venv (it holds piot-dagster's dependencies already); uninstalled at the end. The
    name is unique: the venv is shared."""
    name = f"piot_user_{uuid.uuid4().hex[:8]}"
    parent = tmp_path_factory.mktemp("user")
    env = {**os.environ, "NO_COLOR": "1"}
    subprocess.run(
        [str(BIN / "create-dagster"), "project", name, "--no-uv-sync"],
        cwd=parent, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    root = parent / name
    subprocess.run(
        [str(BIN / "pip"), "install", "-q", "-e", str(root), "--no-deps"],
        env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    try:
        yield root, name
    finally:
        subprocess.run(
            [str(BIN / "pip"), "uninstall", "-y", "-q", name], env=env, capture_output=True
        )


@pytest.fixture
def project(user_project, prices_db, tmp_path):
    """The user's project with one component folder to write, and their environment: a
    Dagster home of their own, the database in PIOT_SOURCE_URI, no Ray address."""
    root, name = user_project
    defs = root / "src" / name / "defs"
    for child in defs.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    folder = defs / "prices_daily"
    folder.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(BIN.parent),
        "DAGSTER_HOME": str(home),
        "PIOT_SOURCE_URI": prices_db,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    for name_ in ("DAGSTER_PYTHON_FILE", "RAY_ADDRESS"):
        env.pop(name_, None)
    base = tmp_path / "lake-data"
    path = folder / "defs.yaml"
    path.write_text(GOOD.replace("BASE_DIR", str(base)))
    return root, env, path, base


def line_of(path: Path, text: str) -> int:
    return next(n for n, row in enumerate(path.read_text().splitlines(), 1) if text in row)


def with_tests_ray(env):
    """The tests' running Ray, for runs that are not about how Ray starts."""
    return {**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


def launch(root, env, ok=True, partition="2024-01-03", timeout=300):
    return dg_cli(
        "launch", "--assets", "prices_daily", "--partition", partition, cwd=root, env=env,
        ok=ok, timeout=timeout,
    )  # fmt: skip


def expected_day(day: int) -> pl.DataFrame:
    return (prices(10).filter(pl.col("ts").dt.day() == day).select("ts", "symbol", "price")).sort(
        "ts", "symbol"
    )


# One Ray per run, quiet ----------------------------------------------------------------


def test_a_run_with_its_checks_starts_ray_once_quietly_and_lands_the_rows(project):
    """Dagster's multiprocess executor runs the asset and its partition checks in two
    processes: only the asset's step starts Ray (a session folder of its own)."""
    root, env, _, base = project
    ray_tmp = tempfile.mkdtemp(prefix="pb", dir="/tmp")  # short: AF_UNIX paths
    try:
        printed = launch(root, {**env, "RAY_TMPDIR": ray_tmp})
        sessions = [p for p in Path(ray_tmp).rglob("session_2*") if not p.is_symlink()]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert len(sessions) == 1, printed[-3000:]
    assert "did not yield" not in printed
    assert not re.search(r"BetaWarning|PreviewWarning|SupersessionWarning", printed), printed
    stored = pl.read_parquet(base / "prices_daily" / "2024-01-03.parquet")
    assert_frame_equal(stored.sort("ts", "symbol"), expected_day(3))
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("prices_daily"), "rows_in_window"), limit=5
        )
        assert checks, "the checks ran, in their own step"


# The component as an integration ------------------------------------------------------


def test_every_attribute_has_a_description_dg_shows(project):
    root, env, _, _ = project

    printed = dg_cli(
        "utils", "inspect-component", "piot_dagster.PartitionedQuery", cwd=root, env=env
    )

    schema = json.loads(printed.split("Component schema:", 1)[1])
    models = [schema, *schema["$defs"].values()]
    undescribed = [
        f"{model.get('title')}.{name}"
        for model in models
        for name, prop in model.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert not undescribed
    assert set(schema["$defs"]["RayModel"]["properties"]) == {
        "address", "num_cpus", "num_gpus", "runtime_env", "include_dashboard", "namespace",
        "connect_timeout_s", "resource",
    }  # fmt: skip
    assert set(schema["$defs"]["IOManagerOptionsModel"]["properties"]) == {"infeasible_timeout_s"}
    scaffolded = dg_cli(
        "scaffold", "defs", "piot_dagster.PartitionedQuery", "fresh", cwd=root, env=env
    )
    del scaffolded
    text = next(root.glob("src/*/defs/fresh/defs.yaml")).read_text()
    every = {
        f
        for kind in (
            PartitionedQuery, Partitions, StaticDimension, Output, Checks, SourceSensor, Ray,
            IOManagerOptions,
        )
        for f in kind.__dataclass_fields__
    }  # fmt: skip
    assert not [f for f in every if not re.search(rf"^ *(# *)?{f}:", text, re.M)]


def test_post_processing_and_asset_attributes_work_as_for_dagsters_components(project):
    root, env, path, _ = project
    path.write_text(
        path.read_text()
        + "  tags: {tier: gold}\n  owners: [data@example.com]\n"
        + textwrap.dedent(
            """\
            post_processing:
              assets:
                - target: "*"
                  attributes:
                    group_name: markets
                    tags: {team: lake}
            """
        )
    )

    (asset,) = json.loads(dg_cli("list", "defs", "--json", cwd=root, env=env))["assets"]

    assert asset["group_name"] == "markets"
    assert {(t["key"], t["value"]) for t in asset["tags"]} >= {("tier", "gold"), ("team", "lake")}
    assert asset["owners"] == [{"email": "data@example.com"}] or "data@example.com" in str(
        asset["owners"]
    )


RAY_AND_IO = """\
ray: {num_cpus: 2, include_dashboard: false}
io_manager: {infeasible_timeout_s: 30}
"""


def _yaml(name: str, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        name: {name}
        query: SELECT ts, symbol, price FROM prices
        connection: sqlite:///prices.db
        date_column: ts
        partitions: {{time_unit: daily, start: "2024-01-01"}}
        """
        )
        + extra
    )


def test_equal_settings_share_one_resource_and_others_get_a_key_of_their_own():
    def built(name, extra=""):
        return dg.build_defs_for_component(PartitionedQuery.resolve_from_yaml(_yaml(name, extra)))

    plain, same_a, same_b = built("plain"), built("a", RAY_AND_IO), built("b", RAY_AND_IO)
    other = built("c", RAY_AND_IO.replace("30", "45"))
    merged = dg.Definitions.merge(plain, same_a, same_b, other)

    keys = sorted(merged.resources)
    assert len(keys) == 6, "default, one pair for the shared settings, one for the others"
    key_a = same_a.get_assets_def("a").get_io_manager_key_for_asset_key(dg.AssetKey("a"))
    key_b = same_b.get_assets_def("b").get_io_manager_key_for_asset_key(dg.AssetKey("b"))
    key_c = other.get_assets_def("c").get_io_manager_key_for_asset_key(dg.AssetKey("c"))
    assert key_a == key_b != key_c
    assert re.fullmatch(r"piot_parquet_io_manager_[0-9a-f]{8}", key_a)
    assert same_a.resources[key_a] is same_b.resources[key_b]
    assert same_a.resources[key_a].infeasible_timeout_s == 30
    assert same_a.resources[key_a].ray.num_cpus == 2
    assert (
        plain.get_assets_def("plain").get_io_manager_key_for_asset_key(dg.AssetKey("plain"))
        == "piot_parquet_io_manager"
    )


# dagster-ray's resources ---------------------------------------------------------------


@pytest.mark.usefixtures("ray_cluster")
def test_dagster_rays_local_ray_is_the_ray_of_a_python_asset(tmp_path, prices_db):
    import dagster_ray
    from dagster_ray.configs import Lifecycle

    defs = piot_dagster.partitioned_query(
        "prices_daily",
        query="SELECT ts, symbol, price FROM prices",
        connection=prices_db,
        date_column="ts",
        partitions_def=piot_dagster.time_partitions("daily", "2024-01-01", end="2024-01-11"),
        base_dir=str(tmp_path),
        # Ray runs in this process already: LocalRay's own connect would call ray.init
        # again, so it leaves connecting to the IO manager, which uses Ray as it is.
        ray=dagster_ray.LocalRay(lifecycle=Lifecycle(connect=False)),
    )
    assert all(isinstance(m.ray, dagster_ray.LocalRay) for m in defs.resources.values())

    result = dg.materialize(defs.assets, resources=defs.resources, partition_key="2024-01-04")

    assert result.success
    stored = pl.read_parquet(tmp_path / "prices_daily" / "2024-01-04.parquet")
    assert_frame_equal(stored.sort("ts", "symbol"), expected_day(4))


@pytest.mark.usefixtures("ray_cluster")
def test_dagster_rays_local_ray_is_the_ray_of_a_yaml_asset(project):
    """A team's LocalRay, built in Python in the project, given to the YAML asset as a
    template variable; with `lifecycle.connect: false` it connects when the tasks run."""
    root, env, path, base = project
    (path.parent / "ray_vars.py").write_text(
        textwrap.dedent(
            """\
            import dagster as dg
            from dagster_ray import LocalRay
            from dagster_ray.configs import Lifecycle


            @dg.template_var
            def ray_cluster():
                return LocalRay(lifecycle=Lifecycle(connect=False))
            """
        )
    )
    text = path.read_text().replace("type:", "template_vars_module: .ray_vars\ntype:")
    path.write_text(text + '  ray:\n    resource: "{{ ray_cluster }}"\n')

    launch(root, with_tests_ray(env), partition="2024-01-05")

    stored = pl.read_parquet(base / "prices_daily" / "2024-01-05.parquet")
    assert_frame_equal(stored.sort("ts", "symbol"), expected_day(5))


# Bad input: each names its YAML line or attribute, shows no secret, and is short -------

AT_LOAD = {
    "misspelled_top_level": (
        ("  date_column: ts", "  date_colum: ts"),
        "date_colum",
        "'date_colum' was unexpected",
    ),
    # Dagster's schema lets a nested model be a template string too: the error is at the
    # parent's line, showing the misspelled name.
    "misspelled_nested": (
        ('    start: "2024-01-01"', '    start: "2024-01-01"\n    time_zone: UTC'),
        "attributes.partitions",
        "'time_zone': 'UTC'",
    ),
    "time_unit": (
        ("time_unit: daily", "time_unit: fortnightly"),
        "attributes.partitions.time_unit",
        "time_unit must be one of hourly, daily, weekly, monthly, yearly, not 'fortnightly'",
    ),
    "date_column": (
        ("date_column: ts", "date_column: stamp"),
        "attributes.date_column",
        "date_column 'stamp' is not a column of the query",
    ),
    "password": (
        (
            'connection: "{{ env.PIOT_SOURCE_URI }}"',
            f'connection: "mysql://u:{SECRET}@db.example.com/x"',
        ),
        "attributes.connection",
        "connection holds a literal password",
    ),
    "secret": (
        ("  output:", f"  output:\n    storage_options:\n      aws_secret_access_key: {SECRET}"),
        "attributes.output.storage_options.aws_secret_access_key",
        "storage_options['aws_secret_access_key'] is written literally; a secret must come "
        "from an environment variable",
    ),
    "sql_syntax": (
        ("FROM prices", "FROM prices WHERE (price > 0"),
        "attributes.query",
        "is not valid sqlite SQL",
    ),
    "start_after_end": (
        ('    end: "2024-01-11"', '    end: "2023-12-01"'),
        "attributes.partitions.end",
        "end is exclusive and must come after start",
    ),
}


@pytest.mark.parametrize("case", AT_LOAD.values(), ids=AT_LOAD.keys())
def test_dg_check_defs_names_the_line_of_bad_input(project, case):
    (written, replaced), where, message = case
    root, env, path, _ = project
    text = path.read_text()
    assert written in text
    path.write_text(text.replace(written, replaced))
    at = "  partitions:" if "time_zone" in replaced else replaced.split("\n")[-1].strip()
    line = line_of(path, at)

    printed = dg_cli("check", "defs", cwd=root, env=env, ok=False)

    assert re.search(rf"defs\.yaml:{line}\b.*{re.escape(where)}", printed), printed[-3000:]
    assert message in printed, printed[-3000:]
    assert SECRET not in printed
    assert len(printed.splitlines()) <= SHORT, printed


def assert_short(printed: str, reason: str) -> None:
    """The reason is the failure's first line, and our own frames are few: Dagster's
    output of a failed step (its event log, the failure printed for the step and the
    run) is the rest."""
    lines = printed.splitlines()
    failures = [line for line in lines if line.startswith("dagster.Failure: ")]
    assert failures, printed[-3000:]
    assert reason in failures[0], printed[-3000:]
    ours = [line for line in lines if line.strip().startswith("File") and "piot_dagster" in line]
    assert len(ours) <= 6, printed
    assert len(lines) <= 120, printed


def launch_failure(project, env_changes=None, replace=None, extra="", timeout=300):
    root, env, path, _ = project
    text = path.read_text()
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + extra)
    dg_cli("check", "defs", cwd=root, env={**env, **(env_changes or {})})
    started = time.monotonic()
    printed = launch(root, {**env, **(env_changes or {})}, ok=False, timeout=timeout)
    return printed, time.monotonic() - started


@pytest.mark.usefixtures("ray_cluster")
def test_an_unreachable_host_names_host_and_port_not_the_password(project, tmp_path):
    uri = f"postgresql://reader:{SECRET}@127.0.0.1:9/markets"
    printed, _ = launch_failure(
        project, {"PIOT_SOURCE_URI": uri, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    )

    assert_short(printed, "postgres at 127.0.0.1:9")
    assert SECRET not in printed


@pytest.mark.usefixtures("ray_cluster")
def test_a_missing_extra_names_the_pip_install(project, tmp_path):
    # The venv holds every driver; a user's without the [mysql] extra lacks these two.
    hidden = tmp_path / "hidden"
    for module in ("pymysql", "connectorx"):
        (hidden / module).mkdir(parents=True)
        (hidden / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n"
        )
    env = {
        "PIOT_SOURCE_URI": f"mysql://reader:{SECRET}@127.0.0.1:9/markets",
        "PYTHONPATH": f"{hidden}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    printed, _ = launch_failure(project, env)

    assert_short(printed, "pip install 'piot-dagster[mysql]'")
    assert SECRET not in printed


def test_a_ray_address_nobody_answers_at_fails_fast_naming_it(project):
    printed, took = launch_failure(
        project, extra='  ray: {address: "ray://127.0.0.1:9", connect_timeout_s: 2}\n'
    )

    assert_short(printed, "Ray at 127.0.0.1:9 (address 'ray://127.0.0.1:9') does not answer")
    assert took < 60, "no waiting on Ray's own retries"


@pytest.mark.usefixtures("ray_cluster")
def test_a_date_column_missing_from_a_select_star_fails_naming_it(project):
    printed, _ = launch_failure(
        project,
        {"RAY_ADDRESS": ray.get_runtime_context().gcs_address},
        replace={
            "SELECT ts, symbol, price FROM prices": "SELECT * FROM prices",
            "date_column: ts": "date_column: stamp",
        },
    )

    assert_short(printed, "date_column 'stamp' is not a column of the query, whose columns are")
