"""The engine: a LazyFrame split by calendar period and run as Ray tasks.

``execute`` is the entry point; ``plan_reader`` reads Polars' plan IR, ``ranges`` derives
a date column's range from it, ``periods`` splits that range into calendar periods, and
``ray_tasks`` runs one task per period.
"""

from piot_dagster.engine.execute import execute_on_ray

__all__ = ["execute_on_ray"]
