"""Delta Lake tables of partitions: each Ray task writes its partition's data file
(:mod:`~piot_dagster.storage.delta.writer`), and the Dagster process commits a run's files
in one transaction and reads the table back (:mod:`~piot_dagster.storage.delta.table`).
How Polars dtypes are stored lives in :mod:`~piot_dagster.storage.delta.types`, the
files' statistics in :mod:`~piot_dagster.storage.delta.stats`.

delta-rs is imported only where a table is opened: Ray workers write plain Parquet.
"""

from piot_dagster.storage.delta.table import SCHEMA_MODES, DeltaTarget
from piot_dagster.storage.delta.types import PARTITION_COLUMN, Column, restore, stored
from piot_dagster.storage.delta.writer import DeltaFile, DeltaFileWriter, partition_folder

__all__ = [
    "PARTITION_COLUMN",
    "SCHEMA_MODES",
    "Column",
    "DeltaFile",
    "DeltaFileWriter",
    "DeltaTarget",
    "partition_folder",
    "restore",
    "stored",
]
