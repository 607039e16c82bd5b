"""piot_dagster: time-partitioned Polars pipelines on Ray, orchestrated by Dagster.

Importing the package registers the ``.piot`` LazyFrame namespace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from piot_dagster.engine import execute_on_ray
from piot_dagster.engine import namespace as _namespace  # noqa: F401  (registers lf.piot)
from piot_dagster.errors import (
    DatabaseError,
    MissingExtraError,
    PeriodExecutionError,
    PiotError,
    RayNotInitializedError,
    StorageError,
    UnboundedRangeError,
)
from piot_dagster.sql import scan_db

if TYPE_CHECKING:
    from piot_dagster.dagster import (
        PartitionedQuery,
        RayDeltaIOManager,
        RayParquetIOManager,
        RayResource,
        SourceTable,
        partition_checks,
        partition_unit,
        partitioned_query,
        source_change_sensor,
        time_partitions,
    )

# The Dagster layer is imported on first use: every Ray worker imports this package to run
# its task, and importing Dagster there cost each new worker about a second.
_DAGSTER = frozenset(
    {
        "PartitionedQuery",
        "RayDeltaIOManager",
        "RayParquetIOManager",
        "RayResource",
        "SourceTable",
        "partition_checks",
        "partition_unit",
        "partitioned_query",
        "source_change_sensor",
        "time_partitions",
    }
)


def __getattr__(name: str) -> Any:
    if name in _DAGSTER:
        from piot_dagster import dagster

        return getattr(dagster, name)
    raise AttributeError(f"module 'piot_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The Dagster names too: `dg list components` finds the component by listing them.
    return sorted({*globals(), *_DAGSTER})


__all__ = [
    "DatabaseError",
    "MissingExtraError",
    "PartitionedQuery",
    "PeriodExecutionError",
    "PiotError",
    "RayDeltaIOManager",
    "RayNotInitializedError",
    "RayParquetIOManager",
    "RayResource",
    "SourceTable",
    "StorageError",
    "UnboundedRangeError",
    "execute_on_ray",
    "partition_checks",
    "partition_unit",
    "partitioned_query",
    "scan_db",
    "source_change_sensor",
    "time_partitions",
]
