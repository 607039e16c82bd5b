"""``partition_checks``: Dagster asset checks of each stored partition, judged from what the
Ray task that wrote it measured (rows outside the window, nulls in the date column, the
schema, the row count): no partition is read again, and a failed check deletes nothing."""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from piot_dagster.dagster._compat import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
    kept_on_copy,
)
from piot_dagster.dagster.previews import using_preview

__all__ = ["partition_checks"]

IN_WINDOW = "rows_in_window"
NO_NULL_DATES = "no_null_dates"
SAME_SCHEMA = "schema_as_previous"
MIN_ROWS = "min_rows"


def partition_checks(
    asset: dg.AssetsDefinition, *, min_rows: int | None = None
) -> dg.AssetChecksDefinition:
    """Partitioned asset checks of ``asset`` (stored by ``RayParquetIOManager``), one
    result per partition, also in a single-run backfill:

    - ``rows_in_window``: every row lies inside its partition's time window (error);
    - ``no_null_dates``: no null in the date column (error);
    - ``schema_as_previous``: the same columns and dtypes as the previous partition
      (warning; the first partition has nothing to compare with);
    - ``min_rows``, with ``min_rows``: at least that many rows (warning).

    Examples
    --------
    >>> defs = dg.Definitions(
    ...     assets=[trades_daily], asset_checks=[partition_checks(trades_daily, min_rows=1)]
    ... )  # doctest: +SKIP
    """
    if not isinstance(asset, dg.AssetsDefinition) or asset.partitions_def is None:
        raise TypeError(
            f"partition_checks: asset must be a partitioned asset definition, not {asset!r}"
        )
    if min_rows is not None and (isinstance(min_rows, bool) or not isinstance(min_rows, int)):
        raise TypeError(f"partition_checks: min_rows must be an int, not {min_rows!r}")
    partitions_def = asset.partitions_def
    described = {
        IN_WINDOW: "Every row lies inside its partition's time window.",
        NO_NULL_DATES: "No null in the date column.",
        SAME_SCHEMA: "The same columns and dtypes as the previous partition.",
    }
    if min_rows is not None:
        described[MIN_ROWS] = f"At least {min_rows:,} rows."
    with using_preview("partitions_def on an AssetCheckSpec"):
        specs = [
            dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, description=text)
            for name, text in described.items()
        ]

    @dg.multi_asset_check(
        specs=specs,
        can_subset=True,
        name=f"{asset.key.to_python_identifier()}_partition_checks",
    )
    # Dagster reads this annotation at definition time: no `from __future__ import annotations`.
    def _checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        keys = [str(k) for k in context.partition_keys]
        before = _previous(partitions_def, keys)
        stored = _latest_records(context.instance, asset.key, {*keys, *before.values()})
        wanted = {check.name for check in context.selected_asset_check_keys}
        for key in keys:
            record = stored.get(key)
            if record is None:
                continue  # nothing stored for it (an Optional output returned None)
            previous = stored.get(before.get(key, ""))
            judged = _judge(
                record.asset_materialization.metadata,  # type: ignore[union-attr]
                None if previous is None else previous.asset_materialization.metadata,  # type: ignore[union-attr]
                min_rows,
            )
            # The materialization judged: Dagster shows a result as current only while
            # it names the partition's latest materialization.
            target = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
            for name, (passed, severity, facts) in judged.items():
                if name in wanted:
                    context.op_execution_context.log_event(
                        AssetCheckEvaluation(
                            asset_key=asset.key,
                            check_name=name,
                            passed=passed,
                            metadata=facts,
                            severity=severity,
                            partition=key,
                            target_materialization_data=target,
                        )
                    )
        # Each partition's result is logged above: a check result yielded here could name
        # only one partition, and a single-run backfill checks many. Each selected check's
        # output is then yielded, as Dagster does for a check result, so the step does not
        # report outputs it "did not yield".
        for check_key in context.selected_asset_check_keys:
            output = _checks.get_output_name_for_asset_check_key(check_key)
            yield dg.Output(None, output_name=output)

    return kept_on_copy(_checks)


def _judge(
    metadata: Mapping[str, Any], previous: Mapping[str, Any] | None, min_rows: int | None
) -> dict[str, tuple[bool, dg.AssetCheckSeverity, dict[str, Any]]]:
    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    outside = _value(metadata.get("rows_outside_window"))
    nulls = _value(metadata.get("date_nulls"))
    rows = _value(metadata.get("dagster/partition_row_count"))
    schema = _columns(metadata)
    judged = {
        IN_WINDOW: (outside == 0, error, {"rows_outside_window": outside}),
        NO_NULL_DATES: (nulls == 0, error, {"null_dates": nulls}),
    }
    if previous is None:
        judged[SAME_SCHEMA] = (True, warn, {"compared_with": "nothing: no previous partition"})
    else:
        earlier = _columns(previous)
        changed = sorted(set(schema.items()) ^ set(earlier.items()))
        judged[SAME_SCHEMA] = (
            not changed,
            warn,
            {"differences": ", ".join(f"{n}: {t}" for n, t in changed) or "none"},
        )
    if min_rows is not None:
        judged[MIN_ROWS] = (rows is not None and rows >= min_rows, warn, {"rows": rows})
    return judged


def _value(entry: object) -> Any:
    return getattr(entry, "value", entry)


def _columns(metadata: Mapping[str, Any]) -> dict[str, str]:
    schema = _value(metadata.get("dagster/column_schema"))
    return {c.name: c.type for c in schema.columns} if schema is not None else {}


def _previous(partitions_def: dg.PartitionsDefinition, keys: Sequence[str]) -> dict[str, str]:
    """The partition before each of ``keys`` in time (the same other key for a cell)."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        time = partitions_def.time_window_dimension
        order = time.partitions_def.get_partition_keys()
        found = {}
        for key in keys:
            parts = partitions_def.get_partition_key_from_str(key).keys_by_dimension
            index = order.index(parts[time.name])
            if index:
                earlier = {**parts, time.name: order[index - 1]}
                found[key] = str(dg.MultiPartitionKey(earlier))
        return found
    order = partitions_def.get_partition_keys()
    position = {k: i for i, k in enumerate(order)}
    return {k: order[position[k] - 1] for k in keys if position.get(k)}


def _latest_records(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: set[str]
) -> dict[str, dg.EventLogRecord]:
    """Each partition's latest materialization, newest pages first."""
    found: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=sorted(partitions)),
            limit=1000,
            cursor=cursor,
            ascending=False,
        )
        for record in page.records:
            event = record.asset_materialization
            if event is not None and event.partition not in found:
                found[event.partition] = record  # type: ignore[index]
        if not page.has_more or len(found) == len(partitions):
            return found
        cursor = page.cursor
