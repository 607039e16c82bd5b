"""``partitioned_query``: the whole pattern in one call. A SQL query read by ``scan_db``,
each time partition a Ray task that stores its own slice through one of the IO managers,
single-run backfills, and optionally the partition checks, the source-change sensor and
an automation condition. The ``PartitionedQuery`` component builds its assets with this
very function, so a YAML definition and a Python one are the same assets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from piot_dagster.dagster.cells import check_partitions
from piot_dagster.dagster.checks import partition_checks
from piot_dagster.dagster.failures import as_failure
from piot_dagster.dagster.formats.registry import FORMATS, StoredAs
from piot_dagster.dagster.previews import using_preview
from piot_dagster.dagster.resources import io_managers
from piot_dagster.dagster.settings import env_value
from piot_dagster.dagster.source_table import SourceTable
from piot_dagster.engine.date_column import check_date_column as check_column
from piot_dagster.sql import scan_db
from piot_dagster.sql.connection import Connection
from piot_dagster.sql.dialects import GENERIC
from piot_dagster.sql.pushdown import parse_query
from piot_dagster.sql.schema import named_columns

__all__ = ["partitioned_query"]


def partitioned_query(
    name: str,
    *,
    query: str,
    connection: str | dg.EnvVar,
    date_column: str,
    partitions_def: dg.PartitionsDefinition,
    partition_columns: Mapping[str, str] | None = None,
    stored_as: StoredAs = "parquet",
    base_dir: str | None = None,
    storage_options: Mapping[str, str | dg.EnvVar] | None = None,
    schema_mode: str | None = None,
    remote_options: Mapping[str, Any] | None = None,
    max_concurrency: int | None = None,
    checks: bool = False,
    min_rows: int | None = None,
    source_sensor: bool = False,
    sensor_interval_seconds: int = 60,
    sensor_running: bool = False,
    automation_condition: dg.AutomationCondition | None = None,
    group_name: str | None = None,
    kinds: Sequence[str] | None = None,
    description: str | None = None,
    deps: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    owners: Sequence[str] | None = None,
    ray: Any = None,
    infeasible_timeout_s: float | None = None,
) -> dg.Definitions:
    """Definitions of one time-partitioned asset ``name`` over ``query`` on ``connection``.

    Each partition (or cell of a time x static partitioning, with ``partition_columns``
    mapping the other dimension to its column) is a Ray task whose window reaches the
    SQL ``WHERE``; ``stored_as`` says where it lands: a Parquet file
    (:class:`RayParquetIOManager`) or a Delta table (:class:`RayDeltaIOManager`), under
    ``base_dir`` with ``storage_options`` (secrets as ``dg.EnvVar``). Backfills of a range
    run as one fan-out. ``checks`` (or ``min_rows``) adds :func:`partition_checks`;
    ``source_sensor`` adds the ``SourceTable`` of the query as the asset's upstream, with
    the sensor that refreshes exactly the partitions whose rows changed. ``deps`` are
    other upstream asset keys (``"a/b"`` for a key of two parts), for lineage; ``tags``
    and ``owners`` are the asset's.

    ``ray`` is the run's Ray: a :class:`RayResource` (default ``RayResource()``) or a
    dagster-ray resource (``LocalRay``, ``KubeRayCluster``, ``KubeRayInteractiveJob``);
    ``infeasible_timeout_s`` is the IO managers'. Assets of equal settings share one IO
    manager under one key; other settings get a key of their own
    (:mod:`piot_dagster.dagster.resources` says how it is derived).

    ``connection`` may be a ``dg.EnvVar``: it is read when the asset runs (and, for the
    sensor, when the definitions load), so the password is in no definition.

    Examples
    --------
    >>> defs = partitioned_query(
    ...     "trades_daily",
    ...     query="SELECT ts, symbol, price FROM trades",
    ...     connection=dg.EnvVar("TRADES_DB"),
    ...     date_column="ts",
    ...     partitions_def=time_partitions("daily", "2024-01-01"),
    ...     stored_as="delta",
    ...     min_rows=1,
    ... )  # doctest: +SKIP
    """
    where = f"partitioned_query {name!r}"
    if stored_as not in FORMATS:
        names = " or ".join(map(repr, FORMATS))
        raise ValueError(f"{where}: stored_as must be {names}, not {stored_as!r}")
    try:
        check_partitions(partitions_def)
    except TypeError as exc:
        exc.add_note(f"in {where}")
        raise
    check_query(query, connection)
    check_date_column(query, connection, date_column)
    options = {} if infeasible_timeout_s is None else {"infeasible_timeout_s": infeasible_timeout_s}
    suffix, resources = io_managers(ray, options)
    metadata: dict[str, Any] = {"date_column": date_column}
    for key, value in (
        ("partition_columns", partition_columns),
        ("base_dir", base_dir),
        ("storage_options", storage_options),
        ("schema_mode", schema_mode),
        ("remote_options", remote_options),
        ("max_concurrency", max_concurrency),
    ):
        if value is not None:
            metadata[key] = dict(value) if isinstance(value, Mapping) else value
    table = None
    if source_sensor and not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise ValueError(
            f"{where}: source_sensor fingerprints time partitions only, not a time x static "
            f"partitioning; leave the sensor out, or partition by time alone"
        )
    if source_sensor:
        table = SourceTable(
            f"{name}_source",
            connection=env_value(connection, f"{where}: connection"),
            query=query,
            date_column=date_column,
            partitions_def=partitions_def,
        )

    # A single-run backfill is what this pattern is: its beta warning teaches the user
    # nothing (their own use of the parameter still warns).
    with using_preview("backfill_policy"):
        asset_decorator = dg.asset(
            name=name,
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
            metadata=metadata,
            io_manager_key=FORMATS[stored_as].resource_key + suffix,
            kinds=set(kinds) if kinds is not None else {"polars", "ray", stored_as},
            deps=[
                *(dg.AssetKey.from_user_string(key) for key in deps),
                *([table.asset] if table is not None else []),
            ],
            group_name=group_name,
            automation_condition=automation_condition,
            description=description or f"The partition's rows of: {query}",
            tags=tags,
            owners=owners,
        )

    @asset_decorator
    def query_asset() -> pl.LazyFrame:
        with as_failure():
            return scan_db(query, connection=env_value(connection, f"{where}: connection"))

    return dg.Definitions(
        assets=[query_asset] + ([table.asset] if table is not None else []),
        asset_checks=(
            [partition_checks(query_asset, min_rows=min_rows)] if checks or min_rows else []
        ),
        sensors=(
            [
                table.sensor(
                    query_asset,
                    name=f"{name}_source_changes",
                    minimum_interval_seconds=sensor_interval_seconds,
                    default_status=dg.DefaultSensorStatus.RUNNING
                    if sensor_running
                    else dg.DefaultSensorStatus.STOPPED,
                )
            ]
            if table is not None
            else []
        ),
        resources=resources,
    )


def check_query(query: str, connection: str | dg.EnvVar | None) -> None:
    """Refuse a ``query`` that is not one SELECT statement in the connection's dialect,
    read from its text without the database. While the connection is unknown (None, or
    an unset environment variable) only scan_db checks it, when the asset runs: another
    dialect could refuse what the database's accepts."""
    text = connection.get_value() if isinstance(connection, dg.EnvVar) else connection
    if text:
        try:
            parse_query(query, Connection.parse(text).dialect)
        except ValueError as exc:
            # sqlglot underlines the offending token with terminal escapes.
            raise ValueError(re.sub(r"\x1b\[[0-9;]*m", "", str(exc))) from None


def check_date_column(query: str, connection: str | dg.EnvVar | None, date_column: str) -> None:
    """Refuse a ``date_column`` that ``query`` names no column of, when its text names
    them all (``SELECT *`` is checked only when the asset runs). The query is read in the
    connection's dialect, or a generic one while the connection is unknown (None, or an
    unset environment variable)."""
    text = connection.get_value() if isinstance(connection, dg.EnvVar) else connection
    columns = named_columns(query, Connection.parse(text).dialect if text else GENERIC)
    if columns is not None:
        check_column(columns, date_column)
