"""Every use of Dagster's private API, in one place.

Dagster offers no public call for some of what piot_dagster does: logging a partition's
check result in a single-run backfill, planning a failed run's partitions one by one,
putting each partition's metadata on its own materialization in linear time, reading the
latest data version of every partition in one query. What does it lives here, as small
named functions, so that a Dagster upgrade that moves or changes any of it breaks this
module alone; ``tests/test_dagster_compat.py`` calls each function against the installed
Dagster and, when one fails, names this file.

The rest of the package imports these names, never ``dagster._core``, nor the private
attributes of a context (``_step_context``, ``_metadata_accumulator``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventBatchMetadata,
    generate_event_batch_id,
)
from dagster._core.execution.context.metadata_logging import (
    AssetMetadataHandle,
    OutputMetadataAccumulator,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from piot_dagster.dagster.previews import using_preview

__all__ = [
    "DATA_VERSION_TAG",
    "AssetCheckEvaluation",
    "AssetCheckEvaluationTargetMaterializationData",
    "Step",
    "attach_partition_metadata",
    "check_passed_by_partition",
    "kept_on_copy",
    "latest_data_versions",
    "plans_partition_subsets",
    "report_planned_materializations",
    "report_step_planned",
    "run_instance",
    "step_of",
    "unstored_planned_partitions",
]

# The running step behind an output context (Dagster's StepExecutionContext): what the
# functions below take as ``step``.
Step = Any


def step_of(context: dg.OutputContext) -> Step | None:
    """The running step behind ``context``; None for a context built by hand (outside a
    run), which has none."""
    return getattr(context, "_step_context", None)


def run_instance(context: dg.OutputContext | dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance: an input context has it, an output context's step does; None
    for a context built by hand without one."""
    try:
        return context.instance  # type: ignore[union-attr]
    except Exception:  # an output context: Dagster raises that it has no instance
        pass
    try:
        return context.step_context.instance  # type: ignore[union-attr]
    except Exception:  # built by hand, without a step
        return None


def attach_partition_metadata(
    step: Step, asset_key: dg.AssetKey, per_partition: Mapping[str | None, Mapping[str, Any]]
) -> None:
    """Each partition's metadata onto its own materialization in ``step``, in one update.

    ``add_asset_metadata`` lists the run's whole partition range on every call to check the
    key, and copies every partition's metadata so far: quadratic, 57 ms a call for 7,300
    day x symbol cells (seven minutes in all). The keys here are the run's own, so one
    update of the same accumulator does it in linear time.
    """
    accumulator = step._metadata_accumulator
    merged = dict(accumulator.per_output_metadata)
    for key, metadata in per_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)


def plans_partition_subsets(instance: dg.DagsterInstance) -> bool:
    """Whether Dagster plans a run's partitions as one subset event
    (``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``) rather than one per partition."""
    storage = instance.event_log_storage
    return bool(storage.supports_partition_subset_in_asset_materialization_planned_events)


def report_planned_materializations(
    instance: dg.DagsterInstance,
    run_id: str,
    job_name: str,
    step_key: str | None,
    asset_key: dg.AssetKey,
    keys: Sequence[str],
) -> None:
    """A planned materialization of each partition in ``keys`` in run ``run_id``, written
    in one batch (where ``DAGSTER_EVENT_BATCH_SIZE`` batches), each event built as Dagster
    builds its own."""
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


def report_step_planned(step: Step, asset_key: dg.AssetKey, keys: Sequence[str]) -> None:
    """:func:`report_planned_materializations` in ``step``'s run, as that step."""
    report_planned_materializations(
        step.instance, step.run_id, step.job_name, step.step.key, asset_key, keys
    )


def unstored_planned_partitions(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[str, str | None, dg.AssetKey, list[str]]]:
    """Each subset of partitions that run ``run_id`` planned as one event, less those it
    stored or planned one by one: ``(job_name, step_key, asset_key, keys)``, the keys in
    the subset's order."""
    kinds = {
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
    }
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
    unstored = []
    for event, data in subsets:
        keys = [
            key
            for key in data.partitions_subset.get_partition_keys()
            if (data.asset_key, key) not in done
        ]
        unstored.append((event.job_name, event.step_key, data.asset_key, keys))
    return unstored


def latest_data_versions(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> dict[str, str]:
    """Each partition's latest observed data version of ``asset_key``, in one query."""
    latest = instance.event_log_storage.get_latest_tags_by_partition(
        asset_key, dg.DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
    )
    return {key: tags[DATA_VERSION_TAG] for key, tags in latest.items()}


def check_passed_by_partition(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey], partitions: list[str]
) -> dict[tuple[str, str], bool]:
    """Whether each check passed on each partition: ``(partition, check name)`` to its
    latest result's success, where it has one."""
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(check_keys), partition_keys=partitions
    )
    return {
        (info.partition_key, info.check_key.name): info.latest_execution_status
        == AssetCheckExecutionRecordStatus.SUCCEEDED
        for info in infos
    }


def kept_on_copy(checks: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    """``checks`` as asset checks that stay an ``AssetChecksDefinition`` when Dagster
    copies them (see :class:`_ClassKept`)."""
    with using_preview("execution_type"):
        return _ClassKept(**checks.get_attributes_dict())


class _ClassKept(dg.AssetChecksDefinition):
    """Asset checks that stay an ``AssetChecksDefinition`` when Dagster copies them.

    A component's definitions get metadata added with ``with_attributes``, which returns
    a plain ``AssetsDefinition`` for asset checks (dagster-io/dagster#22064); Dagster then
    rebuilds an ``AssetChecksDefinition`` from it with the beta ``execution_type``
    parameter, warning "BetaWarning: Parameter `execution_type`" on every load and run.
    Copies of this class are made as this class, which the warning does not concern."""

    @staticmethod
    def dagster_internal_init(**attributes: Any) -> _ClassKept:  # type: ignore[override]
        with using_preview("execution_type"):
            return _ClassKept(**attributes)
