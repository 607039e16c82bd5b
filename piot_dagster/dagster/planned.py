"""Failed partitions stay failed when Dagster plans a run's partitions as one subset."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from piot_dagster.dagster._compat import (
    plans_partition_subsets,
    report_planned_materializations,
    report_step_planned,
    step_of,
    unstored_planned_partitions,
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
    step = step_of(context)
    if step is None or not keys or not plans_partition_subsets(step.instance):
        return
    report_step_planned(step, context.asset_key, keys)


def plan_unstored(instance: dg.DagsterInstance, run_id: str) -> None:
    """Once a step of run ``run_id`` has failed, plan one by one each partition that the run
    planned as a subset and did not store, so Dagster shows it failed.

    This covers what :func:`plan_each` cannot: a step that fails before the IO manager
    runs (the asset's own code raising) and steps that never ran after it. Without the
    subset switch, or when no step failed, it does nothing.
    """
    if not plans_partition_subsets(instance):
        return
    failed = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1)
    if not failed.records:
        return
    for job_name, step_key, asset_key, keys in unstored_planned_partitions(instance, run_id):
        if keys:
            report_planned_materializations(instance, run_id, job_name, step_key, asset_key, keys)
