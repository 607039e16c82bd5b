"""Failed partitions stay failed when Dagster plans a run's partitions as one subset."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dagster as dg
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    generate_event_batch_id,
)

__all__ = ["plan_each", "plan_unstored"]


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
    """
    step = getattr(context, "_step_context", None)
    if step is None or not keys:
        return
    _plan(step.instance, step.run_id, step.job_name, step.step.key, context.asset_key, keys)


def plan_unstored(instance: dg.DagsterInstance, run_id: str) -> None:
    """Once a step of run ``run_id`` has failed, plan one by one each partition that the run
    planned as a subset and did not store, so Dagster shows it failed.

    This covers what :func:`plan_each` cannot: a step that fails before the IO manager
    runs (the asset's own code raising) and steps that never ran after it. Without the
    subset switch, or when no step failed, it does nothing.
    """
    if not _plans_subsets(instance):
        return
    failed = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1)
    if not failed.records:
        return
    kinds = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION}
    events = [
        record.event_log_entry.get_dagster_event()
        for record in instance.get_records_for_run(run_id, of_type=kinds).records
    ]
    subsets = []
    done = set()
    for event in events:
        data = event.event_specific_data
        if isinstance(data, AssetMaterializationPlannedData) and data.partitions_subset is not None:
            subsets.append((event, data))
        else:  # a materialization, or a partition already planned on its own
            done.add((event.asset_key, event.partition))
    for event, data in subsets:
        keys = [
            key
            for key in data.partitions_subset.get_partition_keys()
            if (data.asset_key, key) not in done
        ]
        if keys:
            _plan(instance, run_id, event.job_name, event.step_key, data.asset_key, keys)


def _plan(
    instance: dg.DagsterInstance,
    run_id: str,
    job_name: str,
    step_key: str | None,
    asset_key: dg.AssetKey,
    keys: Sequence[str],
) -> None:
    """Planned materializations of ``keys`` in the run, in one batch. Dagster offers no
    public call for this; the event is built as Dagster builds its own."""
    if not keys or not _plans_subsets(instance):
        return
    batch = generate_event_batch_id()
    for i, key in enumerate(keys):
        event = DagsterEvent.build_asset_materialization_planned_event(
            job_name, step_key, AssetMaterializationPlannedData(asset_key, partition=key)
        )
        instance.report_dagster_event(
            event,
            run_id,
            logging.DEBUG,
            batch_metadata=DagsterEventBatchMetadata(batch, i == len(keys) - 1),
        )


def _plans_subsets(instance: dg.DagsterInstance) -> bool:
    """Whether Dagster plans a run's partitions as one subset (the switch is on)."""
    storage = instance.event_log_storage
    return storage.supports_partition_subset_in_asset_materialization_planned_events
