"""The Dagster pieces: partitions, the Ray resource, the IO manager, partition checks, and
the source table with its refresh sensor, and the whole pattern in one call
(``partitioned_query``) or in YAML (the ``PartitionedQuery`` component)."""

from piot_dagster.dagster.checks import partition_checks
from piot_dagster.dagster.component import PartitionedQuery
from piot_dagster.dagster.formats.delta import RayDeltaIOManager
from piot_dagster.dagster.formats.parquet import RayParquetIOManager
from piot_dagster.dagster.partitioned_query import partitioned_query
from piot_dagster.dagster.partitions import partition_unit, time_partitions
from piot_dagster.dagster.ray_resource import RayResource
from piot_dagster.dagster.source_sensor import source_change_sensor
from piot_dagster.dagster.source_table import SourceTable

__all__ = [
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
]
