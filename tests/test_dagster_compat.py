"""Each function of ``piot_dagster/dagster/_compat.py`` (Dagster's private API, in one
place) against the installed Dagster: a Dagster upgrade that moves or changes what one of
them uses fails here, with a message naming that module and the function, before it
fails somewhere deep in a run. No Ray: plain Dagster runs on an ephemeral instance.

It needs only Dagster and Polars, and runs without the suite's conftest, so the core-only
install runs it too (tests/test_core_install.py), on the Dagster release a fresh core
install picks."""

import ast
import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from piot_dagster.dagster import _compat as compat
from piot_dagster.dagster.previews import using_preview

PACKAGE = Path(compat.__file__).parents[1]
COMPAT = "piot_dagster/dagster/_compat.py"
DAYS = dg.DailyPartitionsDefinition("2024-01-01", end_offset=0, end="2024-01-04")
KEYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
PRIVATE_ATTRIBUTES = {
    "_step_context",
    "_metadata_accumulator",
    "get_attributes_dict",
    "dagster_internal_init",
}


@contextlib.contextmanager
def compat_function(name: str) -> Iterator[None]:
    """A failure inside, turned into one that names the compat module and ``name``."""
    try:
        yield
    except Exception as exc:
        pytest.fail(
            f"{COMPAT}: {name}() no longer works with dagster {dg.__version__}: "
            f"{type(exc).__name__}: {exc}. Adapt it there (it holds all of Dagster's private "
            f"API that piot_dagster uses), or keep dagster at a release it works with.",
            pytrace=True,
        )


class Probe(dg.IOManager):
    """An IO manager that calls the compat functions on the contexts a real run gives."""

    seen: dict[str, object]

    def __init__(self) -> None:
        self.seen = {}

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        step = compat.step_of(context)
        self.seen["step"] = step
        self.seen["instance"] = compat.run_instance(context)
        keys = list(context.asset_partition_keys)
        compat.attach_partition_metadata(
            step, context.asset_key, {key: {"probe_day": key} for key in keys}
        )
        compat.report_step_planned(step, context.asset_key, keys)

    def load_input(self, context: dg.InputContext) -> object:
        return None


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def probed() -> int:
    return 1


def run_probe(instance: dg.DagsterInstance) -> tuple[Probe, dg.ExecuteInProcessResult]:
    probe = Probe()
    result = dg.materialize(
        [probed],
        instance=instance,
        resources={"io_manager": probe},
        tags={
            "dagster/asset_partition_range_start": KEYS[0],
            "dagster/asset_partition_range_end": KEYS[-1],
        },
    )
    assert result.success
    return probe, result


def test_step_of_and_run_instance_find_the_running_step_and_its_instance():
    with dg.instance_for_test() as instance:
        with compat_function("step_of"):
            probe, _ = run_probe(instance)
            assert probe.seen["step"] is not None
            assert compat.step_of(dg.build_output_context()) is None
        with compat_function("run_instance"):
            assert probe.seen["instance"] is instance
            assert compat.run_instance(dg.build_output_context()) is None
            assert compat.run_instance(dg.build_input_context(instance=instance)) is instance


def test_attach_partition_metadata_puts_each_partitions_on_its_materialization():
    with dg.instance_for_test() as instance, compat_function("attach_partition_metadata"):
        _, result = run_probe(instance)
        days = {
            m.partition: m.metadata["probe_day"].value
            for m in result.asset_materializations_for_node("probed")
        }
        assert days == {key: key for key in KEYS}


def test_plans_partition_subsets_reads_dagsters_switch(monkeypatch):
    with dg.instance_for_test() as instance, compat_function("plans_partition_subsets"):
        assert isinstance(compat.plans_partition_subsets(instance), bool)
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    with dg.instance_for_test() as instance, compat_function("plans_partition_subsets"):
        assert compat.plans_partition_subsets(instance) is True


def test_planned_materializations_are_reported_and_the_unstored_found(monkeypatch):
    # With the switch, Dagster plans the run's range as one subset event, and the probe
    # plans each partition one by one (report_step_planned) as a failing run would.
    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    planned = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    with dg.instance_for_test() as instance:
        with compat_function("report_step_planned"):
            _, result = run_probe(instance)
            records = instance.get_records_for_run(result.run_id, of_type=planned).records
            one_by_one = {r.event_log_entry.get_dagster_event().partition for r in records}
            assert set(KEYS) <= one_by_one
        with compat_function("unstored_planned_partitions"):
            unstored = compat.unstored_planned_partitions(instance, result.run_id)
            # The one subset, every partition of which the run stored.
            assert [(job, key, keys) for job, _, key, keys in unstored] == [
                (result.job_def.name, probed.key, [])
            ]
        with compat_function("report_planned_materializations"):
            compat.report_planned_materializations(
                instance, result.run_id, result.job_def.name, None, dg.AssetKey("other"), ["x"]
            )
            records = instance.get_records_for_run(result.run_id, of_type=planned).records
            other = [
                r for r in records if r.event_log_entry.dagster_event.asset_key.path == ["other"]
            ]
            assert [r.event_log_entry.get_dagster_event().partition for r in other] == ["x"]


def test_latest_data_versions_reads_each_partitions_latest_observation():
    key = dg.AssetKey("source")
    with dg.instance_for_test() as instance, compat_function("latest_data_versions"):
        for partition, version in [("a", "1"), ("b", "2"), ("a", "3")]:
            instance.report_runless_asset_event(
                dg.AssetObservation(
                    key, partition=partition, tags={compat.DATA_VERSION_TAG: version}
                )
            )
        assert compat.latest_data_versions(instance, key) == {"a": "3", "b": "2"}


def test_a_check_evaluation_logged_per_partition_is_read_back_by_partition():
    with using_preview("partitions_def on an AssetCheckSpec"):
        spec = dg.AssetCheckSpec("probe_check", asset=probed, partitions_def=DAYS)

    @dg.multi_asset_check(specs=[spec], can_subset=True, name="probe_checks")
    def checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        for key in context.partition_keys:
            context.op_execution_context.log_event(
                compat.AssetCheckEvaluation(
                    asset_key=probed.key,
                    check_name="probe_check",
                    passed=key != KEYS[1],
                    partition=key,
                )
            )
        yield from ()

    with dg.instance_for_test() as instance, compat_function("check_passed_by_partition"):
        run_probe(instance)
        dg.materialize(
            [probed, checks],
            selection=dg.AssetSelection.checks(checks),
            instance=instance,
            resources={"io_manager": Probe()},
            tags={
                "dagster/asset_partition_range_start": KEYS[0],
                "dagster/asset_partition_range_end": KEYS[-1],
            },
        )
        passed = compat.check_passed_by_partition(instance, checks.check_keys, KEYS)
        assert passed == {
            (KEYS[0], "probe_check"): True,
            (KEYS[1], "probe_check"): False,
            (KEYS[2], "probe_check"): True,
        }


def private_uses(source: str) -> list[int]:
    """The lines of ``source`` that import ``dagster._...`` or touch a private attribute
    of a Dagster context."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = []
        attribute = node.attr if isinstance(node, ast.Attribute) else None
        if any(n.startswith("dagster._") for n in names) or attribute in PRIVATE_ATTRIBUTES:
            lines.append(node.lineno)
    return lines


def test_the_private_api_check_sees_imports_and_attributes():
    source = "from dagster._core.events import X\nimport dagster._core\nc._step_context\nok = 1\n"
    assert private_uses(source) == [1, 2, 3]


def test_no_module_but_compat_uses_dagsters_private_api():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_compat.py"
        for line in private_uses(path.read_text())
    ]
    assert not offenders, f"Dagster's private API belongs in {COMPAT}: {offenders}"


def test_kept_on_copy_checks_stay_asset_checks_when_a_component_adds_attributes():
    @dg.asset(partitions_def=DAYS)
    def days() -> None: ...

    @dg.asset_check(asset=days)
    def some_check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    with compat_function("kept_on_copy"), warnings.catch_warnings():
        warnings.simplefilter("error", dg.BetaWarning)
        kept = compat.kept_on_copy(some_check)
        copied = kept.with_attributes(metadata_by_key={})
    assert isinstance(copied, dg.AssetChecksDefinition)
