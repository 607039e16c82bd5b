"""piot_dagster: time-partitioned Polars pipelines on Ray, orchestrated by Dagster.

Importing the package registers the ``.piot`` LazyFrame namespace.
"""

from __future__ import annotations

from piot_dagster import namespace as _namespace  # noqa: F401  (registers lf.piot)
from piot_dagster.engine import execute_on_ray
from piot_dagster.errors import PeriodExecutionError, RayNotInitializedError, UnboundedRangeError

__all__ = [
    "PeriodExecutionError",
    "RayNotInitializedError",
    "UnboundedRangeError",
    "execute_on_ray",
]
