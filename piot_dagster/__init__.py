"""piot_dagster: time-partitioned Polars pipelines on Ray, orchestrated by Dagster.

Importing the package registers the ``.piot`` LazyFrame namespace.
"""

from __future__ import annotations

from piot_dagster import namespace as _namespace  # noqa: F401  (registers lf.piot)
from piot_dagster.connection import DatabaseError
from piot_dagster.engine import execute_on_ray
from piot_dagster.errors import PeriodExecutionError, RayNotInitializedError, UnboundedRangeError
from piot_dagster.io_manager import RayParquetIOManager
from piot_dagster.partitions import partition_unit, time_partitions
from piot_dagster.ray_resource import RayResource
from piot_dagster.scan import scan_db
from piot_dagster.source_sensor import source_change_sensor

__all__ = [
    "DatabaseError",
    "PeriodExecutionError",
    "RayNotInitializedError",
    "RayParquetIOManager",
    "RayResource",
    "UnboundedRangeError",
    "execute_on_ray",
    "partition_unit",
    "scan_db",
    "source_change_sensor",
    "time_partitions",
]
