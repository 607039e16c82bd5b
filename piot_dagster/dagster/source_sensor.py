"""``source_change_sensor``: refresh the time partitions whose source rows changed, in one
call; :class:`~piot_dagster.dagster.source_table.SourceTable` is the longer form that
also gives the table's observable source asset, for lineage."""

from collections.abc import Sequence

import dagster as dg

from piot_dagster.dagster.source_table import SourceTable

__all__ = ["source_change_sensor"]


def source_change_sensor(
    asset: dg.AssetsDefinition,
    *,
    connection: str,
    query: str,
    date_column: str,
    checksum_columns: Sequence[str] | None = None,
    name: str | None = None,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that re-materializes exactly the partitions of ``asset`` whose rows in
    ``query`` changed (appended, deleted or updated in place): ``SourceTable(...).sensor``
    for a table named ``<asset>_source``, partitioned like ``asset``.

    Examples
    --------
    >>> sensor = source_change_sensor(
    ...     trades, connection="sqlite:///data/trades.db",
    ...     query="SELECT ts, symbol, price FROM trades", date_column="ts",
    ... )  # doctest: +SKIP
    """
    if not isinstance(asset, dg.AssetsDefinition):
        raise TypeError(
            f"source_change_sensor: asset must be an asset definition (a function decorated "
            f"with @dg.asset), not {type(asset).__name__}"
        )
    try:
        table = SourceTable(
            f"{asset.key.to_python_identifier()}_source",
            connection=connection,
            query=query,
            date_column=date_column,
            partitions_def=asset.partitions_def,  # type: ignore[arg-type]
            checksum_columns=checksum_columns,
        )
    except (TypeError, ValueError) as exc:
        exc.add_note(f"in source_change_sensor for asset {asset.key.to_user_string()}")
        raise
    return table.sensor(
        asset,
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
