"""The Dagster pieces: partitions, the Ray resource, the IO manager and the source sensor."""

from piot_dagster.dagster.io_manager import RayParquetIOManager
from piot_dagster.dagster.partitions import partition_unit, time_partitions
from piot_dagster.dagster.ray_resource import RayResource
from piot_dagster.dagster.source_sensor import source_change_sensor

__all__ = [
    "RayParquetIOManager",
    "RayResource",
    "partition_unit",
    "source_change_sensor",
    "time_partitions",
]
