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
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from pydantic import BaseModel

from piot_dagster.dagster.formats.registry import StoredAs
from piot_dagster.dagster.partitioned_query import (
    check_date_column,
    check_query,
    partitioned_query,
)
from piot_dagster.dagster.partitions import time_partitions
from piot_dagster.dagster.ray_resource import RayResource
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


def _at_line(context: dg.ResolutionContext, message: str) -> ResolutionException:
    """An error naming the attribute's file and line, but not showing the line (as
    Dagster's own errors do): it may hold a secret, or belong to an attribute other than
    the one being resolved."""
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
        raise _at_line(
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
            raise _at_line(
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


def _resolve_query(context: dg.ResolutionContext, raw: str) -> str:
    """The query, which must be one SELECT statement in the connection's dialect (read
    with sqlglot, without the database)."""
    query = context.resolve_value(raw, as_type=str)
    _, connection = context.stash[_QUERY]
    check_query(query, connection)
    return query


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

    name: Annotated[str, dg.Resolver.default(description="The dimension's name, such as symbol.")]
    keys: Annotated[list[str], dg.Resolver.default(description="Its keys, such as [AAPL, MSFT].")]
    column: Annotated[
        str | None,
        dg.Resolver.default(
            description="The query's column holding the keys; its filter reaches the SQL "
            "WHERE. Unset, every cell reads the whole time window."
        ),
    ] = None


@dataclass
class Partitions(dg.Resolvable):
    """One partition per ``time_unit`` from ``start`` to ``end`` (exclusive; open if
    unset), in ``timezone``; optionally times a ``static`` dimension."""

    time_unit: Annotated[
        TimeUnitName,
        dg.Resolver(
            _resolve_time_unit,
            model_field_type=TimeUnitName,
            description="One partition per hourly, daily, weekly (from Monday), monthly "
            "or yearly period.",
        ),
    ]
    start: Annotated[
        str,
        dg.Resolver.default(
            description='The first partition\'s start, such as "2024-01-01" (quoted).'
        ),
    ]
    end: Annotated[
        str | None,
        dg.Resolver.default(
            description="The end, exclusive; unset, partitions run up to now.",
        ),
    ] = None
    timezone: Annotated[
        str, dg.Resolver.default(description="The partitions' calendar: an IANA zone.")
    ] = "UTC"
    static: Annotated[
        StaticDimension | None,
        dg.Resolver.default(
            description="A second dimension of fixed keys: each cell is one time window "
            "and one key."
        ),
    ] = None

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
    try:
        partitions.definition()
    except ValueError as exc:
        # A bad start, end or zone is refused here, at the line of the attribute at fault.
        raise _at_line(context.at_path(_culprit(partitions, str(exc))), str(exc)) from None
    return partitions


def _culprit(partitions: Partitions, message: str) -> str:
    """Which of ``partitions``' attributes ``message`` (refusing them) is about."""
    if "must come after start" in message:
        return "end"
    if partitions.static is not None and "static.name" in message:
        return "static"
    try:
        zoneinfo.ZoneInfo(partitions.timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return "timezone"
    try:
        time_partitions(partitions.time_unit, str(partitions.start))
    except ValueError:
        return "start"
    return "end"


@dataclass
class Output(dg.Resolvable):
    """Where partitions land: Parquet files or a Delta table under ``base_dir`` (default:
    the Dagster instance's storage), with Polars' ``storage_options`` for object stores."""

    format: Annotated[
        StoredAs,
        dg.Resolver.default(
            description="parquet (a file per partition) or delta (one Delta table, one "
            "commit per run)."
        ),
    ] = "parquet"
    base_dir: Annotated[
        str | None,
        dg.Resolver.default(
            description="A folder every Ray node mounts, or s3://, gs://, az://, abfs:// "
            "(default: the Dagster instance's storage)."
        ),
    ] = None
    storage_options: Annotated[
        dict[str, str | dg.EnvVar] | None,
        # Raw: each {{ env.NAME }} stays a reference, read when the asset runs.
        dg.Resolver(
            _resolve_storage_options,
            model_field_type=dict[str, str] | None,
            inject_before_resolve=False,
            description="Polars' cloud options, such as aws_region; a secret must be "
            '"{{ env.NAME }}".',
        ),
    ] = None
    schema_mode: Annotated[
        Literal["merge"] | None,
        dg.Resolver.default(
            description="For delta: merge lets a run add columns to the table; unset, its "
            "schema is fixed."
        ),
    ] = None


@dataclass
class Checks(dg.Resolvable):
    """The partition checks; ``min_rows`` adds a check of each partition's row count."""

    min_rows: Annotated[
        int | None,
        dg.Resolver.default(
            description="Adds a check (a warning) that each partition has at least this many rows."
        ),
    ] = None


@dataclass
class SourceSensor(dg.Resolvable):
    """The sensor refreshing exactly the partitions whose source rows changed."""

    minimum_interval_seconds: Annotated[
        int, dg.Resolver.default(description="Seconds between two evaluations.")
    ] = 60
    running: Annotated[
        bool, dg.Resolver.default(description="Whether the sensor starts running.")
    ] = False


def _resolve_ray_resource(context: dg.ResolutionContext, raw: Any) -> Any:
    """A resource built in Python, as a template variable (``"{{ ray_cluster }}"``)."""
    if raw is None:
        return None
    value = context.resolve_value(raw)
    if not callable(getattr(value, "connect", None)):
        raise ValueError(
            f"ray.resource must be a Ray resource (dagster-ray's LocalRay, KubeRayCluster, "
            f"KubeRayInteractiveJob, or piot_dagster's RayResource), given as a template "
            f'variable such as "{{{{ ray_cluster }}}}", not {type(value).__name__}'
        )
    return value


def _ray_field(name: str) -> dg.Resolver:
    """The resolver of the ``ray`` attribute's field ``name``: as written, described as
    RayResource describes the field of that name."""
    return dg.Resolver.default(description=RayResource.model_fields[name].description)


@dataclass
class Ray(dg.Resolvable):
    """The run's Ray: piot_dagster's RayResource fields, or ``resource``, a Ray resource
    built in Python (dagster-ray's ``LocalRay``, ``KubeRayCluster``...) and given as a
    template variable. Assets of equal ``ray`` and ``io_manager`` settings share one IO
    manager; others get one of their own, under a key derived from the settings."""

    address: Annotated[str | None, _ray_field("address")] = None
    num_cpus: Annotated[int | None, _ray_field("num_cpus")] = None
    num_gpus: Annotated[int | None, _ray_field("num_gpus")] = None
    runtime_env: Annotated[dict[str, Any] | None, _ray_field("runtime_env")] = None
    include_dashboard: Annotated[bool | None, _ray_field("include_dashboard")] = None
    namespace: Annotated[str | None, _ray_field("namespace")] = None
    connect_timeout_s: Annotated[float | None, _ray_field("connect_timeout_s")] = None
    resource: Annotated[
        Any,
        dg.Resolver(
            _resolve_ray_resource,
            model_field_type=str | None,
            description="Instead of the fields above: a Ray resource built in Python, such as "
            "dagster-ray's LocalRay or KubeRayCluster, as a template variable "
            '("{{ ray_cluster }}", with template_vars_module); set lifecycle.connect false '
            "on it for a lazy connection.",
        ),
    ] = None

    def resource_object(self) -> Any:
        """The Ray resource these settings describe."""
        fields = {
            name: getattr(self, name)
            for name in RayResource.model_fields
            if getattr(self, name, None) is not None
        }
        if self.resource is not None:
            if fields:
                raise ValueError(
                    f"ray: set either resource or RayResource's fields, not both "
                    f"({', '.join(fields)})"
                )
            return self.resource
        return RayResource(**fields)


def _resolve_ray(context: dg.ResolutionContext, model: BaseModel | None) -> Ray | None:
    if model is None:
        return None
    ray = Ray.resolve_from_model(context, model)
    try:
        ray.resource_object()  # both resource and fields are refused here, at the line
    except ValueError as exc:
        raise _at_line(context.at_path("resource"), str(exc)) from None
    return ray


@dataclass
class IOManagerOptions(dg.Resolvable):
    """The IO managers' options (the other settings are per asset: output, remote_options,
    max_concurrency)."""

    infeasible_timeout_s: Annotated[
        float | None,
        dg.Resolver.default(
            description="How long tasks may wait for a node offering the resources they ask "
            "for when no alive node does, before the run fails (default 60)."
        ),
    ] = None


@dg.scaffold_with(PartitionedQueryScaffolder)
@dataclass
class PartitionedQuery(dg.Component, dg.Resolvable):
    """A SQL query as a time-partitioned asset: each partition a Ray task reading its own
    slice with ``scan_db`` and storing it as Parquet or in a Delta table, backfills as one
    run, with optional partition checks, source-change sensor and automation condition.

    ``dg scaffold defs piot_dagster.PartitionedQuery <name>`` writes a commented
    ``defs.yaml`` to start from.
    """

    name: Annotated[str, dg.Resolver.default(description="The asset's key.")]
    query: Annotated[
        str,
        dg.Resolver(
            _resolve_query,
            model_field_type=str,
            description="One SELECT statement, sent to the database as written; partitions "
            "filter around it. Checked in the connection's dialect when definitions load.",
        ),
    ]
    connection: Annotated[
        str | dg.EnvVar,
        # Raw: a whole {{ env.NAME }} stays a reference, read when the asset runs.
        dg.Resolver(
            _resolve_connection,
            model_field_type=str,
            inject_before_resolve=False,
            description="sqlite:///path, duckdb:///path, postgresql://..., mysql://... or an "
            'ODBC string; with a password, from an environment variable: "{{ env.NAME }}".',
        ),
    ] = field(repr=False)  # a password it reads from the environment
    date_column: Annotated[
        str,
        dg.Resolver(
            _resolve_date_column,
            model_field_type=str,
            description="The Date or Datetime column that partitions split on; the query "
            "must select it.",
        ),
    ]
    partitions: Annotated[
        Partitions,
        dg.Resolver(
            _resolve_partitions,
            model_field_type=Partitions.model(),
            description="The time partitions (and an optional static dimension).",
        ),
    ]
    output: Annotated[
        Output, dg.Resolver.default(description="Where and how partitions are stored.")
    ] = field(default_factory=Output)
    remote_options: Annotated[
        dict[str, Any] | None,
        dg.Resolver.default(
            description="Each partition's Ray task options, such as {num_cpus: 1}."
        ),
    ] = None
    max_concurrency: Annotated[
        int | None,
        dg.Resolver.default(description="How many partitions' tasks run at once (100)."),
    ] = None
    checks: Annotated[
        Checks | None,
        dg.Resolver.default(
            description="Partition checks: rows in window, no null dates, schema as the "
            "previous partition's, and optionally min_rows."
        ),
    ] = None
    source_sensor: Annotated[
        SourceSensor | None,
        dg.Resolver.default(
            description="A sensor re-materializing exactly the partitions whose source "
            "rows changed."
        ),
    ] = None
    automation_condition: Annotated[
        dg.AutomationCondition | None,
        dg.Resolver.default(
            model_field_type=str | None,
            description='Declarative Automation: "{{ dg.AutomationCondition.eager() }}".',
        ),
    ] = None
    group_name: Annotated[str | None, dg.Resolver.default(description="The asset's group.")] = None
    kinds: Annotated[
        list[str] | None,
        dg.Resolver.default(description="The asset's kinds (default: polars, ray, format)."),
    ] = None
    description: Annotated[
        str | None, dg.Resolver.default(description="The asset's description.")
    ] = None
    deps: Annotated[
        list[str],
        dg.Resolver.default(
            description="Other upstream asset keys, for lineage (a/b for a key of two parts)."
        ),
    ] = field(default_factory=list)
    tags: Annotated[dict[str, str] | None, dg.Resolver.default(description="The asset's tags.")] = (
        None
    )
    owners: Annotated[
        list[str] | None,
        dg.Resolver.default(description="The asset's owners: emails or team:name."),
    ] = None
    ray: Annotated[
        Ray | None,
        dg.Resolver(
            _resolve_ray,
            model_field_type=Ray.model() | None,
            description="The run's Ray (default: a local cluster, or an embedded one).",
        ),
    ] = None
    io_manager: Annotated[
        IOManagerOptions | None,
        dg.Resolver.default(description="The IO managers' options."),
    ] = None

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
            tags=self.tags,
            owners=self.owners,
            ray=self.ray.resource_object() if self.ray is not None else None,
            infeasible_timeout_s=(
                self.io_manager.infeasible_timeout_s if self.io_manager is not None else None
            ),
        )
