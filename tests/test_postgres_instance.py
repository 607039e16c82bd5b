"""A Dagster instance on PostgreSQL (dagster-postgres), as multi-user deployments run it:
a database of its own on the local server, the code location's single-run backfill
through the `dagster` CLI, and a sensor tick by `dagster-daemon`, all recorded there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from defs.trades import source_table
from tests.dagster_server import (
    BIN,
    dagster_process,
    materialize_cli,
    run_cli,
    wait_for,
)
from tests.databases import admin, instance_yaml

SENSOR = "trades_daily_source_changes"


@pytest.fixture
def postgres_env(location_env: dict[str, str], postgres_url: str, tmp_path: Path) -> Iterator[dict]:
    """The code location's environment with DAGSTER_HOME on a fresh PostgreSQL database."""
    database = f"piot_dagster_{uuid.uuid4().hex[:10]}"
    admin(postgres_url, f'CREATE DATABASE "{database}"')
    home = tmp_path / "pg_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(postgres_url, database))
    try:
        yield {**location_env, "DAGSTER_HOME": str(home)}
    finally:
        admin(postgres_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_single_run_backfill_is_recorded_in_a_postgres_instance(postgres_env):
    materialize_cli(postgres_env, "trades_daily", "--partition-range", "2024-01-01...2024-01-05")

    with dg.DagsterInstance.from_config(postgres_env["DAGSTER_HOME"]) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        recorded = instance.get_materialized_partitions(dg.AssetKey("trades_daily"))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert recorded == {f"2024-01-0{d}" for d in range(1, 6)}


def test_the_daemon_ticks_the_refresh_sensor_against_a_postgres_instance(
    postgres_env, tmp_path, monkeypatch
):
    run_cli([str(BIN / "dagster"), "sensor", "start", SENSOR, "-f", "definitions.py"], postgres_env)
    log = tmp_path / "daemon.log"
    daemon = [str(BIN / "dagster-daemon"), "run", "-f", "definitions.py"]
    with (
        dagster_process(daemon, postgres_env, log),
        dg.DagsterInstance.from_config(postgres_env["DAGSTER_HOME"]) as instance,
    ):
        wait_for(lambda: ticks(instance), f"a tick of {SENSOR}; {log}", timeout=180)
        (tick,) = ticks(instance)[-1:]
        monkeypatch.setenv("PIOT_TRADES_DB", postgres_env["PIOT_TRADES_DB"])
        recorded = source_table().recorded(instance)
    # The first tick records each day's data version, in PostgreSQL, and asks for no run.
    assert tick.status.value in ("SKIPPED", "SUCCESS"), log.read_text()[-3000:]
    assert len(recorded) == 1096
    assert not tick.tick_data.run_ids


def ticks(instance: dg.DagsterInstance) -> list:
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.instigator_name == SENSOR
    ]
    if not states:
        return []
    (state,) = states
    done = [
        t
        for t in instance.get_ticks(state.instigator_origin_id, state.selector_id)
        if t.status != TickStatus.STARTED
    ]
    return sorted(done, key=lambda t: t.timestamp)
