"""The IO managers' base: each time partition of an asset is one Ray task that filters the
asset's frame to its window and writes its partition, to a local or shared folder or to
an object store. The fan-out and the reading back are the same for every format; a
format (``piot_dagster.dagster.formats``) is a subclass implementing a few stateless
steps: what a task writes with, what a run keeps of what its tasks wrote, and how stored
partitions are found and read."""

import abc
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from piot_dagster.dagster._compat import run_instance
from piot_dagster.dagster.cells import Cell, cell_filter, cell_of, check_partitions
from piot_dagster.dagster.failures import as_failure
from piot_dagster.dagster.formats.base import Listing, Place
from piot_dagster.dagster.metadata import Cluster, partition_metadata, record
from piot_dagster.dagster.planned import plan_each, plan_unstored
from piot_dagster.dagster.progress import Progress
from piot_dagster.dagster.ray_resource import RayConnection, RayResource, connected
from piot_dagster.dagster.reading import Wanted, not_stored
from piot_dagster.dagster.settings import Settings, resolve
from piot_dagster.dagster.visibility import seen, unseen
from piot_dagster.engine.date_column import check_date_column
from piot_dagster.engine.periods import Period, period_of_window, window_filter
from piot_dagster.engine.ray_tasks import PeriodResult, PeriodTask, ShippedPlan, Writer, run
from piot_dagster.errors import PeriodExecutionError, StorageError, listing
from piot_dagster.storage import Storage, open_storage

__all__ = ["RayIOManager"]

_INT64 = (-(2**63), 2**63 - 1)
# A non-partitioned asset is one period covering all time.
_ALL_TIME = Period(dt.date.min, dt.date.max, 0, 0)


class RayIOManager(dg.ConfigurableIOManager):
    """What every format's IO manager shares: the settings, the fan-out that writes every
    partition of a run in its own Ray task, and reading partitions back. A format
    implements the abstract steps below; its fields beyond these are its own settings,
    which an asset's metadata overrides as it does the shared ones."""

    # A piot_dagster RayResource, or a dagster-ray resource (LocalRay, KubeRayCluster,
    # KubeRayInteractiveJob): connected on the fan-out's first use, see `connected`.
    ray: dg.ResourceDependency[RayResource]
    base_dir: str | None = Field(
        default=None,
        description="A folder every Ray node mounts, or s3://, gs://, az:// or abfs:// "
        "(default: the Dagster instance's storage folder).",
    )
    storage_options: dict[str, str] | None = Field(
        default=None,
        repr=False,
        description="Options of Polars' cloud IO for an object-store base_dir, such as "
        "aws_region or aws_endpoint_url; give secrets as dg.EnvVar.",
    )
    date_column: str | None = None
    max_concurrency: int = 100
    remote_options: dict[str, Any] | None = None
    infeasible_timeout_s: float = Field(
        default=60.0,
        description="How long tasks may wait for a node offering the resources they ask "
        "for when no alive node does (a lost node, an autoscaler adding one) before the "
        "run fails.",
    )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # After the run's steps (in the step's process, with a multiprocess executor): a
        # step that failed before this IO manager ran leaves no failure mark of its own.
        if context.instance is not None and context.run is not None:
            plan_unstored(context.instance, context.run.run_id)

    # -- writing ----------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        with as_failure():
            self._handle_output(context, obj)

    def _handle_output(self, context: dg.OutputContext, obj: object) -> None:
        asset = context.asset_key.to_user_string()
        if obj is None and Wanted.of(context.dagster_type.typing_type).optional:
            context.log.info(f"asset {asset} returned None: nothing was stored")
            return
        if isinstance(obj, pl.DataFrame):
            obj = obj.lazy()
        if not isinstance(obj, pl.LazyFrame):
            raise TypeError(
                f"asset {asset} returned {type(obj).__name__}; {type(self).__name__} stores "
                f"a polars LazyFrame or DataFrame"
            )
        settings = self._settings(context.definition_metadata, asset)
        with _naming(asset):
            place = self._place(context, asset, settings)
            place.storage.check()
        storage = place.storage
        schema = obj.collect_schema()
        column = settings.date_column
        partitioned = context.has_asset_partitions
        if partitioned:
            plan, work = self._partition_work(context, schema, place)
        else:
            with _naming(asset):
                plan = self.prepare(place, schema, [None])
            date_column = column if column in schema else None
            writer = self.writer(place, plan, None, date_column=date_column, window=None)
            work = [(_ALL_TIME, _writing_task(pl.lit(True), writer))]
        cluster = _lasting_cluster(connected(self.ray, context))
        started = dt.datetime.now()
        keys = _keys(context)
        key_of = {period.label: key for key, (period, _) in zip(keys, work, strict=True)}
        run_id = _run_id(context)
        results: list[PeriodResult] = []
        progress = Progress(context.log, asset, len(work))
        # The run ends with its block, whatever ends the loop, even an interrupt landing
        # between two results, so the tasks in flight stop before the run's process exits.
        with (
            _bridged_logs(context.log),
            run(
                ShippedPlan(obj),
                work,
                column=column or asset,
                schema=schema,
                options=settings.remote_options,
                max_concurrency=settings.max_concurrency,
                keep_going=True,
                infeasible_timeout_s=self.infeasible_timeout_s,
            ) as tasks,
            contextlib.closing(progress),
        ):
            try:
                for result in tasks:
                    results.append(result)
                    progress.stored(len(results))
            except BaseException as exc:
                # Some periods failed, and every other one ran: what they wrote (and this
                # process sees) is kept and recorded as materialized, so Dagster marks
                # only the others failed. An interrupt keeps what the format keeps of an
                # unfinished run. (One finishing while the run stops stays unrecorded.)
                failed = isinstance(exc, PeriodExecutionError)
                with _naming(asset):
                    landed = seen(storage, results) if failed else self.drop(place, results)
                    extra = self.keep(place, plan, landed, run_id) if failed else {}
                _log_landed(context, landed, key_of, cluster, extra)
                if failed:
                    raise _partitions_failed(asset, key_of, len(work), exc) from exc
                raise
        with _naming(asset):
            lost = {id(r) for r in unseen(storage, results)}
            landed = [r for r in results if id(r) not in lost]
            extra = self.keep(place, plan, landed, run_id)
        if lost:
            _log_landed(context, landed, key_of, cluster, extra)
            raise _not_visible(asset, storage, [r for r in results if id(r) in lost], key_of)
        per_partition = {
            key_of[result.period.label]: {
                **partition_metadata(result, partitioned=partitioned, cluster=cluster),
                **extra,
            }
            for result in results
        }
        record(context, per_partition, started)

    def _partition_work(
        self, context: dg.OutputContext, schema: pl.Schema, place: Place
    ) -> tuple[Any, list[tuple[Period, PeriodTask]]]:
        """The run's write plan, and each partition's period and task."""
        asset, settings = place.asset, place.settings
        partitions_def = context.asset_partitions_def
        column = settings.date_column
        with _naming(asset):
            check_partitions(partitions_def)
        if column is None:
            raise ValueError(
                f"asset {asset} is time-partitioned: set date_column on {type(self).__name__} "
                f"or in the asset's metadata, e.g. @asset(metadata={{'date_column': 'date'}})"
            )
        with _naming(asset):
            dtype = check_date_column(schema, column)
        cells = [cell_of(partitions_def, key) for key in context.asset_partition_keys]
        others = cell_filter(cells, settings.partition_columns, schema, asset)
        with _naming(asset):
            plan = self.prepare(place, schema, cells)
        work = []
        for cell in cells:
            try:
                period = period_of_window(*cell.window, dtype)
            except ValueError as exc:
                exc.add_note(f"in partition {cell.key} of asset {asset}")
                raise
            if not _INT64[0] <= period.start <= period.end <= _INT64[1]:
                raise ValueError(
                    f"asset {asset}: partition {cell.key} ({period.label}) lies outside what a "
                    f"{dtype} column can hold; use a coarser time unit for date_column "
                    f"{column!r}, or partitions within its range"
                )
            period = dataclasses.replace(period, qualifier=" ".join(cell.folders))
            where = window_filter(column, dtype, period)
            if others[cell.key] is not None:
                where = where & others[cell.key]
            with _naming(asset):
                writer = self.writer(
                    place, plan, cell, date_column=column, window=(period.start, period.end)
                )
            work.append((period, _writing_task(where, writer)))
        return plan, work

    # -- reading ----------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> object:
        with as_failure():
            return self._load_input(context)

    def _load_input(self, context: dg.InputContext) -> object:
        asset = context.asset_key.to_user_string()
        upstream = context.upstream_output
        settings = self._settings(upstream.definition_metadata if upstream else None, asset)
        with _naming(asset):
            place = self._place(context, asset, settings)
            cells: list[Cell | None] = [None]
            if place.partitioned:
                partitions_def = context.asset_partitions_def
                check_partitions(partitions_def)
                cells = sorted(
                    (cell_of(partitions_def, key) for key in context.asset_partition_keys),
                    key=lambda cell: (cell.window[0], cell.folders),
                )
            found = self.present(place, cells)
        wanted = Wanted.of(context.dagster_type.typing_type)
        if not cells:
            # A mapping can give no upstream partition: a self-dependent asset's first one.
            if wanted.optional or wanted.per_partition:
                return wanted.nothing
            raise ValueError(
                f"asset {asset}: the partition mapping gives no partition of it for this "
                f"run; annotate the input `pl.DataFrame | None` (or `pl.LazyFrame | None`, "
                f"or a dict) to receive None (or an empty dict) then"
            )
        missing = [place.name(cell) for cell in cells if place.name(cell) not in found.names]
        if missing:
            if len(missing) == len(cells) and wanted.optional:
                context.log.info(f"asset {asset}: nothing stored for {listing(missing)}")
                return wanted.nothing
            allowed = wanted.optional or bool(
                (context.definition_metadata or {}).get("allow_missing_partitions")
            )
            if not allowed or len(missing) == len(cells):
                raise FileNotFoundError(
                    f"asset {asset}: {len(missing)} partition(s) are not materialized: "
                    f"{listing(missing)} (looked in {self.uri(place)}). Materialize them, or set "
                    f"AssetIn(metadata={{'allow_missing_partitions': True}}), or annotate the "
                    f"input `... | None`"
                )
            context.log.warning(not_stored(asset, [place.name(cell) for cell in cells], missing))
            cells = [cell for cell in cells if place.name(cell) in found.names]
        columns = _columns((context.definition_metadata or {}).get("columns"), asset)
        with _naming(asset):
            return self.load(place, found, cells, wanted, columns)

    # -- the format's steps -----------------------------------------------------------

    def prepare(self, place: Place, schema: pl.Schema, cells: Sequence[Cell | None]) -> Any:
        """Check, before any task runs, that the asset's frame (of ``schema``) can be
        stored for ``cells``: the run's write plan, which :meth:`writer` and :meth:`keep`
        take. (Most formats need no plan.)"""
        return None

    @abc.abstractmethod
    def writer(
        self,
        place: Place,
        plan: Any,
        cell: Cell | None,
        *,
        date_column: str | None,
        window: tuple[int, int] | None,
    ) -> Writer:
        """The streaming writer of the task of ``cell`` (None: the whole unpartitioned
        asset); it measures ``date_column`` against ``window``, the cell's time window in
        the column's physical unit."""

    @abc.abstractmethod
    def keep(
        self, place: Place, plan: Any, results: Sequence[PeriodResult], run_id: str | None
    ) -> Mapping[str, Any]:
        """Make what these tasks of run ``run_id`` wrote its stored partitions (all of
        them, or those of a failed run that succeeded): Dagster metadata to add to each."""

    @abc.abstractmethod
    def drop(self, place: Place, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        """An interrupted run's tasks wrote ``results``: what of them stays stored."""

    @abc.abstractmethod
    def present(self, place: Place, cells: Sequence[Cell | None]) -> Listing:
        """Which of ``cells`` are stored: the listing that :meth:`load` reads them by."""

    @abc.abstractmethod
    def load(
        self,
        place: Place,
        found: Listing,
        cells: Sequence[Cell | None],
        wanted: Wanted,
        columns: Sequence[str] | None,
    ) -> object:
        """Stored ``cells`` (at least one, in time order, each in ``found``, which
        :meth:`present` returned) as ``wanted``: one lazy scan, one frame, or one of
        either per partition; only ``columns`` if given."""

    def uri(self, place: Place) -> str:
        """Where the asset's partitions are, for messages."""
        return place.storage.location.uri

    # -- settings ---------------------------------------------------------------------

    def _place(
        self, context: dg.OutputContext | dg.InputContext, asset: str, settings: Settings
    ) -> Place:
        """Where the asset's partitions are kept, its storage opened."""
        storage = self._storage(context, settings)
        path = tuple(context.asset_key.path)
        return Place(storage, path, asset, context.has_asset_partitions, settings)

    def _settings(self, metadata: Mapping[str, Any] | None, asset: str) -> Settings:
        own = sorted(type(self).model_fields.keys() - RayIOManager.model_fields.keys())
        return resolve(self.model_dump(exclude={"ray"}), metadata, asset, own)

    def _storage(self, context: dg.OutputContext | dg.InputContext, settings: Settings) -> Storage:
        base_dir = settings.base_dir
        if base_dir is None:
            instance = run_instance(context)
            if instance is None:
                raise ValueError(
                    f"{type(self).__name__} needs base_dir when there is no Dagster instance"
                )
            base_dir = instance.storage_directory()
        return open_storage(base_dir, settings.storage_options)


def _lasting_cluster(ray: RayConnection) -> Cluster | None:
    """The Ray cluster, where it outlives the run (one this run started does not)."""
    address = ray.cluster_address
    if address is None or ray.started_cluster:
        return None
    return Cluster(address, ray.dashboard_url)


def _columns(value: object, asset: str) -> list[str] | None:
    """``AssetIn(metadata={"columns": [...]})``: the columns to load, checked."""
    value = getattr(value, "value", value)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
        raise TypeError(
            f"asset {asset}: AssetIn metadata 'columns' must be a list of column names, "
            f"not {value!r}"
        )
    return list(value)


def _writing_task(where: pl.Expr, writer: Writer) -> PeriodTask:
    return PeriodTask(where, head=None, columns=None, return_as="arrow", write=writer)


@contextlib.contextmanager
def _naming(asset: str) -> Iterator[None]:
    """Errors about settings or storage, with a note naming the asset they concern."""
    try:
        yield
    except (TypeError, ValueError, StorageError) as exc:
        exc.add_note(f"in asset {asset}")
        raise


def _log_landed(
    context: dg.OutputContext,
    results: list[PeriodResult],
    key_of: Mapping[str, str | None],
    cluster: Cluster | None,
    extra: Mapping[str, Any],
) -> None:
    """A failing run's record: the partitions it stored as materialized, the others as
    planned and never stored, which Dagster shows as failed once the run has failed."""
    partitioned = context.has_asset_partitions
    for result in results:
        context.log_event(
            dg.AssetMaterialization(
                context.asset_key,
                partition=key_of[result.period.label],
                metadata={
                    **partition_metadata(result, partitioned=partitioned, cluster=cluster),
                    **extra,
                },
            )
        )
    landed = {result.period.label for result in results}
    plan_each(context, [k for label, k in key_of.items() if label not in landed and k is not None])


def _not_visible(
    asset: str, storage: Storage, lost: list[PeriodResult], key_of: Mapping[str, str | None]
) -> StorageError:
    by_node: dict[str, list[str]] = {}
    for result in lost:
        by_node.setdefault(str(result.node), []).append(str(key_of[result.period.label]))
    which = "; ".join(
        f"on Ray node {node}: {listing(keys, limit=10)}" for node, keys in by_node.items()
    )
    return StorageError(
        f"asset {asset}: {len(lost)} partition(s) were written where this Dagster process "
        f"cannot see them under base_dir {storage.location.uri} ({which}); each node wrote "
        f"to a disk of its own. Use an object store (base_dir='s3://bucket/prefix' with "
        f"storage_options) or a folder that every Ray node mounts at the same path, and run "
        f"them again"
    )


def _partitions_failed(
    asset: str, key_of: Mapping[str, str | None], partitions: int, exc: PeriodExecutionError
) -> PeriodExecutionError:
    """The failure, naming the asset's failed partitions: every other one was written."""
    failed = [str(key_of.get(label)) for label in exc.periods]
    return PeriodExecutionError(
        f"asset {asset}: partition(s) {listing(failed)} failed and were not written; "
        f"the other {partitions - len(failed)} were. Re-run just the failed ones. {exc}",
        period=exc.period,
        periods=exc.periods,
    )


def _run_id(context: dg.OutputContext) -> str | None:
    """The run's id; an output context built by hand may have none."""
    with contextlib.suppress(Exception):
        return context.run_id
    return None


def _keys(context: dg.OutputContext) -> list[str | None]:
    return list(context.asset_partition_keys) if context.has_asset_partitions else [None]


@contextlib.contextmanager
def _bridged_logs(log: logging.Logger | Any) -> Iterator[None]:
    """The engine's warnings (failed periods, stops) forwarded to the run's log. Its line
    per period stays on the ``piot_dagster`` logger: the run's log gets progress instead."""

    class _Bridge(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log.log(record.levelno, record.getMessage())

    handler = _Bridge(level=logging.WARNING)
    logger = logging.getLogger("piot_dagster")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
