"""``PartitionedQuery``: the pattern as a Dagster Component, defined in YAML.

    type: piot_dagster.PartitionedQuery
    attributes:
      name: trades_daily
      query: SELECT ts, symbol, price FROM trades
      connection: "{{ env.TRADES_DB }}"
      date_column: ts
      partitions: {time_unit: daily, start: "2024-01-01"}

Its assets are built by :func:`~piot_dagster.dagster.partitioned_query.partitioned_query`,
as Python code would build them. Each attribute is checked where it is resolved, so
``dg check defs`` names the YAML line of a wrong one: an unknown ``time_unit``, a
``date_column`` the query does not select, a literal password in ``connection`` or a
literal secret in ``storage_options`` (both must come from ``{{ env.NAME }}``).

(No ``from __future__ import annotations``: Dagster reads these annotations.)
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from pydantic import BaseModel

from piot_dagster.dagster.formats.registry import StoredAs
from piot_dagster.dagster.partitioned_query import check_date_column, partitioned_query
from piot_dagster.dagster.partitions import time_partitions
from piot_dagster.dagster.scaffolder import PartitionedQueryScaffolder
from piot_dagster.engine.periods import TIME_UNITS
from piot_dagster.sql.connection import Connection
from piot_dagster.storage import is_secret

__all__ = ["PartitionedQuery"]

# A whole value that is one environment variable: read when the asset runs.
_ENV = re.compile(r"^\s*\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
# Where the date column's resolver finds the query and connection.
_QUERY = "piot_dagster.query"
# The time dimension's name in a time x static partitioning.
_TIME_DIMENSION = "date"
TimeUnitName = Literal["hourly", "daily", "weekly", "monthly", "yearly"]
assert set(TIME_UNITS) == set(TimeUnitName.__args__)  # type: ignore[attr-defined]


def _secret_refused(context: dg.ResolutionContext, message: str) -> ResolutionException:
    """An error naming the attribute's file and line, but not showing the line (as
    Dagster's own errors do): it holds a secret."""
    where = ".".join(str(part) for part in context.path)
    tree = context.source_position_tree
    if tree is not None:
        position, _ = tree.lookup_closest_and_path(context.path, trace=None)
        where = f"{position.filename}:{position.start.line} - {where}"
    return ResolutionException(f"{where}: {message}")


def _resolve_connection(context: dg.ResolutionContext, raw: str) -> str | dg.EnvVar:
    """``{{ env.NAME }}`` as ``dg.EnvVar("NAME")``, read when the asset runs; a connection
    string written in the YAML only if it holds no password (a password it takes from the
    environment, ``...:{{ env.DB_PASSWORD }}@...``, is fine)."""
    whole = _ENV.match(raw) if isinstance(raw, str) else None
    if whole:
        return dg.EnvVar(whole.group(1))
    value = context.resolve_value(raw, as_type=str)
    password = Connection.parse(value).password
    if password and password in raw:
        raise _secret_refused(
            context,
            "connection holds a literal password; take the connection string (or its "
            'password) from an environment variable: connection: "{{ env.TRADES_DB }}"',
        )
    return value


def _resolve_storage_options(
    context: dg.ResolutionContext, raw: Mapping[str, str] | None
) -> dict[str, str | dg.EnvVar] | None:
    """Each ``{{ env.NAME }}`` as ``dg.EnvVar("NAME")``, read when the asset runs; a
    literal value of an option that may be secret is refused."""
    if raw is None:
        return None
    options: dict[str, str | dg.EnvVar] = {}
    for key, value in raw.items():
        whole = _ENV.match(value) if isinstance(value, str) else None
        if whole:
            options[key] = dg.EnvVar(whole.group(1))
        elif is_secret(key):
            raise _secret_refused(
                context.at_path(key),
                f"storage_options[{key!r}] is written literally; a secret must come from an "
                f'environment variable: {key}: "{{{{ env.NAME }}}}"',
            )
        else:
            options[key] = context.resolve_value(value, as_type=str)
    return options


def _resolve_date_column(context: dg.ResolutionContext, raw: str) -> str:
    """The date column, which the query must select where its text names its columns."""
    column = context.resolve_value(raw, as_type=str)
    query, connection = context.stash[_QUERY]
    check_date_column(query, connection, column)
    return column


def _resolve_time_unit(context: dg.ResolutionContext, raw: str) -> str:
    unit = context.resolve_value(raw, as_type=str)
    if unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {', '.join(TIME_UNITS)}, not {unit!r}")
    return unit


@dataclass
class StaticDimension(dg.Resolvable):
    """A second partition dimension of fixed keys: each cell is one time window and one
    key, and ``column`` is the query's column holding the keys (its filter reaches the
    SQL ``WHERE``)."""

    name: str
    keys: list[str]
    column: str | None = None


@dataclass
class Partitions(dg.Resolvable):
    """One partition per ``time_unit`` from ``start`` to ``end`` (exclusive; open if
    unset), in ``timezone``; optionally times a ``static`` dimension."""

    time_unit: Annotated[
        TimeUnitName, dg.Resolver(_resolve_time_unit, model_field_type=TimeUnitName)
    ]
    start: str
    end: str | None = None
    timezone: str = "UTC"
    static: StaticDimension | None = None

    def definition(self) -> dg.PartitionsDefinition:
        """The Dagster partitions: :func:`time_partitions`, times the static dimension
        (named ``date`` and ``static.name``) if any."""
        # A key such as `start: "2022"` may arrive as a number once templates are rendered.
        end = None if self.end is None else str(self.end)
        time = time_partitions(self.time_unit, str(self.start), end=end, timezone=self.timezone)
        if self.static is None:
            return time
        if self.static.name == _TIME_DIMENSION:
            raise ValueError(
                f"static.name must not be {_TIME_DIMENSION!r}, the time dimension's name"
            )
        keys = dg.StaticPartitionsDefinition(self.static.keys)
        return dg.MultiPartitionsDefinition({_TIME_DIMENSION: time, self.static.name: keys})


def _resolve_partitions(context: dg.ResolutionContext, model: BaseModel) -> Partitions:
    partitions = Partitions.resolve_from_model(context, model)
    partitions.definition()  # a bad start, end or zone is refused here, at its line
    return partitions


@dataclass
class Output(dg.Resolvable):
    """Where partitions land: Parquet files or a Delta table under ``base_dir`` (default:
    the Dagster instance's storage), with Polars' ``storage_options`` for object stores."""

    format: StoredAs = "parquet"
    base_dir: str | None = None
    storage_options: Annotated[
        dict[str, str | dg.EnvVar] | None,
        # Raw: each {{ env.NAME }} stays a reference, read when the asset runs.
        dg.Resolver(
            _resolve_storage_options,
            model_field_type=dict[str, str] | None,
            inject_before_resolve=False,
        ),
    ] = None
    schema_mode: Literal["merge"] | None = None


@dataclass
class Checks(dg.Resolvable):
    """The partition checks; ``min_rows`` adds a check of each partition's row count."""

    min_rows: int | None = None


@dataclass
class SourceSensor(dg.Resolvable):
    """The sensor refreshing exactly the partitions whose source rows changed."""

    minimum_interval_seconds: int = 60
    running: bool = False


@dg.scaffold_with(PartitionedQueryScaffolder)
@dataclass
class PartitionedQuery(dg.Component, dg.Resolvable):
    """A SQL query as a time-partitioned asset: each partition a Ray task reading its own
    slice with ``scan_db`` and storing it as Parquet or in a Delta table, backfills as one
    run, with optional partition checks, source-change sensor and automation condition.

    ``dg scaffold defs piot_dagster.PartitionedQuery <name>`` writes a commented
    ``defs.yaml`` to start from.
    """

    name: str
    query: str
    connection: Annotated[
        str | dg.EnvVar,
        # Raw: a whole {{ env.NAME }} stays a reference, read when the asset runs.
        dg.Resolver(_resolve_connection, model_field_type=str, inject_before_resolve=False),
    ] = field(repr=False)  # a password it reads from the environment
    date_column: Annotated[str, dg.Resolver(_resolve_date_column, model_field_type=str)]
    partitions: Annotated[
        Partitions, dg.Resolver(_resolve_partitions, model_field_type=Partitions.model())
    ]
    output: Output = field(default_factory=Output)
    remote_options: dict[str, Any] | None = None
    max_concurrency: int | None = None
    checks: Checks | None = None
    source_sensor: SourceSensor | None = None
    automation_condition: Annotated[
        dg.AutomationCondition | None, dg.Resolver.default(model_field_type=str | None)
    ] = None
    group_name: str | None = None
    kinds: list[str] | None = None
    description: str | None = None
    deps: list[str] = field(default_factory=list)

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel) -> Self:
        # The date column is checked against the query, at its own line: its resolver gets
        # the query and connection from here.
        query = context.at_path("query").resolve_value(model.query, as_type=str)  # type: ignore[attr-defined]
        try:
            connection = _resolve_connection(context, model.connection)  # type: ignore[attr-defined]
        except (ValueError, ResolutionException):
            connection = None  # its own resolver says what is wrong, at its line
        stashed = context.with_stashed_value(_QUERY, (query, connection))
        return super().resolve_from_model(stashed, model)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        static = self.partitions.static
        sensor = self.source_sensor
        return partitioned_query(
            self.name,
            query=self.query,
            connection=self.connection,
            date_column=self.date_column,
            partitions_def=self.partitions.definition(),
            partition_columns=(
                {static.name: static.column} if static is not None and static.column else None
            ),
            stored_as=self.output.format,
            base_dir=self.output.base_dir,
            storage_options=self.output.storage_options,
            schema_mode=self.output.schema_mode,
            remote_options=self.remote_options,
            max_concurrency=self.max_concurrency,
            checks=self.checks is not None,
            min_rows=self.checks.min_rows if self.checks is not None else None,
            source_sensor=sensor is not None,
            sensor_interval_seconds=sensor.minimum_interval_seconds if sensor else 60,
            sensor_running=sensor.running if sensor else False,
            automation_condition=self.automation_condition,
            group_name=self.group_name,
            kinds=self.kinds,
            description=self.description,
            deps=self.deps,
        )
