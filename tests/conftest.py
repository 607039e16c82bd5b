"""Shared fixtures: a real local Ray cluster, started once and restarted if a test stops it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import ray

# Ray warns about token authentication on every start; tests don't need to see it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


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
