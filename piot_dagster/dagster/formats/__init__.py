"""The formats an asset's partitions can be kept in, each a module: loose Parquet files
(:mod:`~piot_dagster.dagster.formats.parquet`) or one Delta table
(:mod:`~piot_dagster.dagster.formats.delta`), listed by name in
:mod:`~piot_dagster.dagster.formats.registry`. What their steps hand on is in
:mod:`~piot_dagster.dagster.formats.base`. Another format (Iceberg, say) is one more module
and its registry entry."""
