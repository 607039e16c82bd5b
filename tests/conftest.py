"""Shared fixtures: a real local Ray cluster, started once and restarted if a test stops it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import cloudpickle
import pytest
import ray
from hypothesis import settings

import tests

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


POSTGRES_URL = os.environ.get("PIOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server on 127.0.0.1:5432. In CI (CI=true) its absence fails the
    tests that need it; elsewhere they are skipped."""
    import adbc_driver_postgresql.dbapi

    try:
        adbc_driver_postgresql.dbapi.connect(POSTGRES_URL).close()
    except Exception as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_URL
