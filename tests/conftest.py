"""Shared fixtures: a real local Ray cluster (started once, restarted if a test stops it),
the example database and the code location's environment, the PostgreSQL server, and the
object-store servers the tests start (moto's S3 server and Azurite)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import polars as pl
import pytest
import ray
from hypothesis import settings

import tests
from piot_dagster import RayDeltaIOManager, RayParquetIOManager
from scripts.trades_db import ensure_trades_db
from tests import servers
from tests.partitioned_prices import prices

# Ray warns about token authentication on every start; tests don't need to see it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# CI runs the differential tests on a fixed seed; `make fuzz`-style local runs explore.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")
# Ray workers do not have the tests on their path: ship the tests' own functions by value.
cloudpickle.register_pickle_by_value(tests)


def start_ray() -> None:
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    start_ray()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_cluster(_ray_session: None) -> None:
    """A running local Ray; restarted when an earlier test shut it down."""
    start_ray()


@pytest.fixture(scope="session")
def trades_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example database, built once by the project's builder (scripts/trades_db.py)."""
    return ensure_trades_db(tmp_path_factory.mktemp("demo") / "trades.db")


@pytest.fixture
def location_env(trades_db: Path, tmp_path: Path, ray_cluster: None) -> dict[str, str]:
    """Environment for a process loading definitions.py: the prebuilt database, a fresh
    Dagster home and asset folder, and the running Ray cluster."""
    home = tmp_path / "home"
    home.mkdir()
    # nux off: the UI's first-visit "Join the community" dialog would cover the screenshots.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return {
        **os.environ,
        "PIOT_TRADES_DB": str(trades_db),
        "PIOT_ASSET_DIR": str(tmp_path / "assets"),
        "DAGSTER_HOME": str(home),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }


POSTGRES_URL = os.environ.get("PIOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server on 127.0.0.1:5432. In CI (CI=true) its absence fails the
    tests that need it; elsewhere they are skipped."""
    import adbc_driver_postgresql.dbapi

    try:
        adbc_driver_postgresql.dbapi.connect(POSTGRES_URL).close()
    except Exception as exc:
        servers.unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


MYSQL_URL = os.environ.get("PIOT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB server on 127.0.0.1:3306. In CI (CI=true) its absence fails the tests
    that need it; elsewhere they are skipped."""
    from tests.databases import mysql_connect

    try:
        mysql_connect(MYSQL_URL).close()
    except Exception as exc:
        servers.unavailable(f"MariaDB is not reachable at {MYSQL_URL}: {exc}")
    return MYSQL_URL


ODBC_DRIVERS = ["PostgreSQL Unicode", "MariaDB Unicode", "SQLite3"]


@pytest.fixture(scope="session")
def odbc_drivers() -> list[str]:
    """unixODBC and Debian's PostgreSQL, MariaDB and SQLite ODBC drivers (.ci/run
    installs them). In CI their absence fails the tests that need them."""
    try:
        import pyodbc
    except ImportError as exc:
        servers.unavailable(f"pyodbc cannot load unixODBC: {exc}")
    missing = [d for d in ODBC_DRIVERS if d not in pyodbc.drivers()]
    if missing:
        servers.unavailable(f"ODBC drivers not installed: {missing}; installed: {pyodbc.drivers()}")
    return ODBC_DRIVERS


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1, for the whole session."""
    with servers.moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on 127.0.0.1, for the whole session."""
    with servers.azurite(tmp_path_factory.mktemp("azurite")) as endpoint:
        yield endpoint


@pytest.fixture(params=["s3", "azure"])
def object_store(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """A ``base_dir`` in a fresh bucket (S3 on moto) or container (Azure on Azurite), and
    its storage options."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return f"s3://{servers.new_bucket(endpoint)}/lake", servers.s3_options(endpoint)
    endpoint = request.getfixturevalue("azurite_endpoint")
    return f"az://{servers.new_container(endpoint)}/lake", servers.azure_options(endpoint)


IOManagerClass = type[RayParquetIOManager] | type[RayDeltaIOManager]


@pytest.fixture(params=[RayParquetIOManager, RayDeltaIOManager], ids=["parquet", "delta"])
def io_manager_class(request: pytest.FixtureRequest) -> IOManagerClass:
    """A test taking it runs once per IO manager: what a downstream asset reads, and what
    each partition holds, is the same from both."""
    return request.param


@pytest.fixture(scope="module")
def prices_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Hourly prices of two symbols over ten days of 2024, as naive UTC text in SQLite."""
    path = tmp_path_factory.mktemp("db") / "prices.db"
    frame = prices(10).with_columns(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE prices (ts TIMESTAMP, symbol TEXT, price REAL, version INT)")
        conn.executemany("INSERT INTO prices VALUES (?, ?, ?, ?)", frame.rows())
    return f"sqlite:///{path}"
