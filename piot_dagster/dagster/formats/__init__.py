"""How an asset's partitions are kept: loose Parquet files
(:class:`~piot_dagster.dagster.formats.parquet.ParquetFiles`) or one Delta table
(:class:`~piot_dagster.dagster.formats.delta.DeltaPartitions`), behind one interface
(:class:`~piot_dagster.dagster.formats.base.Format`)."""

from piot_dagster.dagster.formats.base import Format
from piot_dagster.dagster.formats.delta import DeltaPartitions
from piot_dagster.dagster.formats.parquet import ParquetFiles

__all__ = ["DeltaPartitions", "Format", "ParquetFiles"]
