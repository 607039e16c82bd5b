"""Shared fixtures: a real local Ray cluster, started once and restarted if a test stops it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import cloudpickle
import pytest
import ray

import tests

# Ray warns about token authentication on every start; tests don't need to see it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
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
