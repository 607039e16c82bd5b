"""Failed partitions stay failed when Dagster plans a run's partitions as one subset."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dagster as dg
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventBatchMetadata,
    generate_event_batch_id,
)

__all__ = ["plan_each"]


def plan_each(context: dg.OutputContext, keys: Sequence[str]) -> None:
    """Record, in this run, a planned materialization of each partition in ``keys``.

    ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1`` makes Dagster plan a single-run
    backfill with one event per asset instead of one per partition: a fifth of a
    3,650-partition backfill's bookkeeping. But Dagster tells a failed partition by a
    planned event of its own with no materialization after it in a failed run; with one
    subset event there is none, and the partitions of a failed backfill would show as never
    tried. So a failing run plans the partitions it did not store, one by one, as it fails
    (in one batch, where ``DAGSTER_EVENT_BATCH_SIZE`` batches). Without the switch Dagster
    has planned each already, and this does nothing.

    Dagster offers no public call for this; the event is built as Dagster builds its own.
    """
    step = getattr(context, "_step_context", None)
    if step is None or not keys:
        return
    instance = step.instance
    storage = instance.event_log_storage
    if not storage.supports_partition_subset_in_asset_materialization_planned_events:
        return
    batch = generate_event_batch_id()
    for i, key in enumerate(keys):
        event = DagsterEvent.build_asset_materialization_planned_event(
            step.job_name,
            step.step.key,
            AssetMaterializationPlannedData(context.asset_key, partition=key),
        )
        instance.report_dagster_event(
            event,
            step.run_id,
            logging.DEBUG,
            batch_metadata=DagsterEventBatchMetadata(batch, i == len(keys) - 1),
        )
