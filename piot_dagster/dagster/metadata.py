"""A stored partition's Dagster metadata, in Dagster's conventions so the UI reads right:
``dagster/partition_row_count`` (``dagster/row_count`` for an unpartitioned asset),
``dagster/column_schema`` with short dtype names, a size a person reads, and the Ray
cluster only where it outlives the run. Each partition carries its own figures; the
run's totals go to the run's log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from piot_dagster.dagster._compat import attach_partition_metadata, step_of
from piot_dagster.engine.ray_tasks import PeriodResult

__all__ = ["Cluster", "dtype_name", "partition_metadata", "readable_size", "record"]


@dataclass(frozen=True)
class Cluster:
    """A Ray cluster that outlives the run: worth linking from each partition."""

    address: str
    dashboard_url: str | None = None


def dtype_name(dtype: pl.DataType) -> str:
    """``Datetime(us)``, ``Datetime(us, Europe/Berlin)``, ``List(String)``, ``Int64``.

    Examples
    --------
    >>> dtype_name(pl.Datetime("us", "UTC"))
    'Datetime(us, UTC)'
    """
    if isinstance(dtype, pl.Datetime):
        zone = f", {dtype.time_zone}" if dtype.time_zone else ""
        return f"Datetime({dtype.time_unit}{zone})"
    if isinstance(dtype, pl.Duration):
        return f"Duration({dtype.time_unit})"
    if isinstance(dtype, pl.Decimal):
        return f"Decimal({dtype.precision}, {dtype.scale})"
    if isinstance(dtype, pl.Array):
        return f"Array({dtype_name(dtype.inner)}, {dtype.size})"  # type: ignore[arg-type]
    if isinstance(dtype, pl.List):
        return f"List({dtype_name(dtype.inner)})"  # type: ignore[arg-type]
    if isinstance(dtype, pl.Struct):
        return f"Struct({', '.join(f'{f.name}: {dtype_name(f.dtype)}' for f in dtype.fields)})"
    return type(dtype).__name__ if "(" in str(dtype) else str(dtype)


def readable_size(size: int) -> str:
    """``812 B``, ``4.2 KiB``, ``1.5 MiB``: a size a person reads."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def partition_metadata(
    result: PeriodResult, *, partitioned: bool, cluster: Cluster | None
) -> dict[str, Any]:
    """What one partition's materialization records: its own figures only."""
    written = result.written
    assert written is not None, "a writing task returns its file's stats"
    columns = [dg.TableColumn(name, dtype_name(dtype)) for name, dtype in written.schema.items()]
    rows = "dagster/partition_row_count" if partitioned else "dagster/row_count"
    metadata: dict[str, Any] = {
        rows: written.rows,
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "path": dg.MetadataValue.path(written.uri),
        "size": readable_size(written.bytes),
        "task_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "ray_node": str(result.node),
    }
    if cluster is not None:
        metadata["ray_cluster"] = cluster.address
        if cluster.dashboard_url:
            metadata["ray_dashboard"] = dg.MetadataValue.url(cluster.dashboard_url)
    if written.date_min is not None:
        metadata["date_min"] = str(written.date_min)
        metadata["date_max"] = str(written.date_max)
    if written.date_nulls is not None:
        metadata["date_nulls"] = written.date_nulls
    if written.outside_window is not None:
        metadata["rows_outside_window"] = written.outside_window
    if written.sql:
        metadata["sql"] = dg.MetadataValue.md("\n\n".join(f"```sql\n{s}\n```" for s in written.sql))
    return metadata


def record(
    context: dg.OutputContext,
    per_partition: Mapping[str | None, dict[str, Any]],
    started: dt.datetime,
) -> None:
    """Each partition's metadata on its own materialization and the run's totals in its
    log, where a run records them; outside a run (a context built by hand), all of it on
    the output."""
    step = step_of(context)
    asset = context.asset_key.to_user_string()
    if not context.has_asset_partitions:
        context.add_output_metadata(per_partition[None])
        return
    rows = sum(m["dagster/partition_row_count"] for m in per_partition.values())
    if step is None:
        context.add_output_metadata(
            {
                "partitions": len(per_partition),
                "rows": rows,
                "by_partition": dg.MetadataValue.json(
                    {
                        k: {"rows": m["dagster/partition_row_count"], "path": m["path"].path}
                        for k, m in per_partition.items()
                    }
                ),
            }
        )
        return
    attach_partition_metadata(step, context.asset_key, per_partition)
    seconds = (dt.datetime.now() - started).total_seconds()
    context.log.info(
        f"asset {asset}: {len(per_partition)} partition(s), {rows:,} rows, stored in "
        f"{seconds:.1f} s"
    )
