"""piot_dagster: time-partitioned Polars pipelines on Ray, orchestrated by Dagster.

Importing the package registers the ``.piot`` LazyFrame namespace.
"""

from __future__ import annotations

from piot_dagster.dagster import (
    RayParquetIOManager,
    RayResource,
    SourceTable,
    partition_checks,
    partition_unit,
    source_change_sensor,
    time_partitions,
)
from piot_dagster.engine import execute_on_ray
from piot_dagster.engine import namespace as _namespace  # noqa: F401  (registers lf.piot)
from piot_dagster.errors import PeriodExecutionError, RayNotInitializedError, UnboundedRangeError
from piot_dagster.sql import DatabaseError, scan_db

__all__ = [
    "DatabaseError",
    "PeriodExecutionError",
    "RayNotInitializedError",
    "RayParquetIOManager",
    "RayResource",
    "SourceTable",
    "UnboundedRangeError",
    "execute_on_ray",
    "partition_checks",
    "partition_unit",
    "scan_db",
    "source_change_sensor",
    "time_partitions",
]
