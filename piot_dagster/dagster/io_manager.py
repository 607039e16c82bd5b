"""The IO managers: each time partition of an asset is one Ray task that filters the
asset's frame to its window and writes its partition, to a local or shared folder or to
an object store. ``RayParquetIOManager`` keeps a Parquet file per partition,
``RayDeltaIOManager`` one Delta table per asset; what differs is a
:class:`~piot_dagster.dagster.formats.base.Format`, the fan-out is the same."""

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import dagster as dg
import polars as pl
from pydantic import Field

from piot_dagster.dagster.cells import Cell, cell_filter, cell_of, check_partitions
from piot_dagster.dagster.formats.base import Format
from piot_dagster.dagster.formats.delta import DeltaPartitions
from piot_dagster.dagster.formats.parquet import ParquetFiles
from piot_dagster.dagster.metadata import Cluster, partition_metadata, record
from piot_dagster.dagster.planned import plan_each, plan_unstored
from piot_dagster.dagster.progress import Progress
from piot_dagster.dagster.ray_resource import RayResource
from piot_dagster.dagster.reading import Wanted
from piot_dagster.dagster.settings import Settings, resolve
from piot_dagster.dagster.visibility import seen, unseen
from piot_dagster.engine.periods import Period, period_of_window, window_filter
from piot_dagster.engine.ray_tasks import PeriodResult, PeriodTask, ShippedPlan, Writer, run
from piot_dagster.errors import PeriodExecutionError, StorageError, listing
from piot_dagster.storage import Storage, open_storage

__all__ = ["RayDeltaIOManager", "RayParquetIOManager"]

_INT64 = (-(2**63), 2**63 - 1)
# A non-partitioned asset is one period covering all time.
_ALL_TIME = Period(dt.date.min, dt.date.max, 0, 0)


class RayIOManager(dg.ConfigurableIOManager):
    """What both IO managers share: their settings, the fan-out that writes every
    partition of a run in its own Ray task, and reading partitions back. Subclasses name
    the :class:`~piot_dagster.dagster.formats.base.Format` that keeps the partitions."""

    format_class: ClassVar[type[Format]]

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
            storage = self._storage(context, settings)
            storage.check()
        schema = obj.collect_schema()
        column = settings.date_column
        partitioned = context.has_asset_partitions
        kept = self._format(storage, context.asset_key.path, asset, partitioned, settings)
        if partitioned:
            work = self._partition_work(context, asset, schema, settings, kept)
        else:
            with _naming(asset):
                kept.prepare(schema, [None])
            date_column = column if column in schema else None
            writer = kept.writer(None, date_column=date_column, window=None)
            work = [(_ALL_TIME, _writing_task(pl.lit(True), writer))]
        cluster = self._lasting_cluster()
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
                    landed = seen(storage, results) if failed else kept.drop(results)
                    extra = kept.keep(landed, run_id) if failed else {}
                _log_landed(context, landed, key_of, cluster, extra)
                if failed:
                    raise _partitions_failed(asset, key_of, len(work), exc) from exc
                raise
        with _naming(asset):
            lost = {id(r) for r in unseen(storage, results)}
            landed = [r for r in results if id(r) not in lost]
            extra = kept.keep(landed, run_id)
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
        self,
        context: dg.OutputContext,
        asset: str,
        schema: pl.Schema,
        settings: Settings,
        kept: Format,
    ) -> list[tuple[Period, PeriodTask]]:
        partitions_def = context.asset_partitions_def
        column = settings.date_column
        with _naming(asset):
            check_partitions(partitions_def)
        if column is None:
            raise ValueError(
                f"asset {asset} is time-partitioned: set date_column on {type(self).__name__} "
                f"or in the asset's metadata, e.g. @asset(metadata={{'date_column': 'date'}})"
            )
        dtype = schema.get(column)
        if dtype is None or not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
            found = "is missing from" if dtype is None else f"is {dtype} in"
            raise ValueError(
                f"asset {asset}: date_column {column!r} {found} its frame; it needs a Date or "
                f"Datetime column. Its columns are {schema.names()}"
            )
        cells = [cell_of(partitions_def, key) for key in context.asset_partition_keys]
        others = cell_filter(cells, settings.partition_columns, schema, asset)
        with _naming(asset):
            kept.prepare(schema, cells)
        work = []
        for cell in cells:
            try:
                period = period_of_window(*cell.window, dtype)
            except ValueError as exc:
                raise ValueError(f"asset {asset}: partition {cell.key}: {exc}") from None
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
                writer = kept.writer(cell, date_column=column, window=(period.start, period.end))
            work.append((period, _writing_task(where, writer)))
        return work

    # -- reading ----------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> object:
        asset = context.asset_key.to_user_string()
        upstream = context.upstream_output
        settings = self._settings(upstream.definition_metadata if upstream else None, asset)
        partitioned = context.has_asset_partitions
        with _naming(asset):
            storage = self._storage(context, settings)
            cells: list[Cell | None] = [None]
            if partitioned:
                partitions_def = context.asset_partitions_def
                check_partitions(partitions_def)
                cells = sorted(
                    (cell_of(partitions_def, key) for key in context.asset_partition_keys),
                    key=lambda cell: (cell.window[0], cell.folders),
                )
            kept = self._format(storage, context.asset_key.path, asset, partitioned, settings)
            present = kept.present(cells)
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
        missing = [kept.name(cell) for cell in cells if kept.name(cell) not in present]
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
                    f"{listing(missing)} (looked in {kept.uri}). Materialize them, or set "
                    f"AssetIn(metadata={{'allow_missing_partitions': True}}), or annotate the "
                    f"input `... | None`"
                )
            context.log.warning(
                f"asset {asset}: skipping {len(missing)} missing partition(s): {listing(missing)}"
            )
            cells = [cell for cell in cells if kept.name(cell) in present]
        columns = _columns((context.definition_metadata or {}).get("columns"), asset)
        with _naming(asset):
            return kept.load(cells, wanted, columns)

    # -- settings ---------------------------------------------------------------------

    def _format(
        self,
        storage: Storage,
        path: Sequence[str],
        asset: str,
        partitioned: bool,
        settings: Settings,
    ) -> Format:
        with _naming(asset):
            return self.format_class(
                storage, path, asset=asset, partitioned=partitioned, settings=settings
            )

    def _lasting_cluster(self) -> Cluster | None:
        """The Ray cluster, where it outlives the run (one this run started does not)."""
        address = self.ray.cluster_address
        if address is None or self.ray.started_cluster:
            return None
        return Cluster(address, self.ray.dashboard_url)

    def _settings(self, metadata: Mapping[str, Any] | None, asset: str) -> Settings:
        return resolve(self.model_dump(exclude={"ray"}), metadata, asset)

    def _storage(self, context: dg.OutputContext | dg.InputContext, settings: Settings) -> Storage:
        base_dir = settings.base_dir
        if base_dir is None:
            instance = _instance(context)
            if instance is None:
                raise ValueError(
                    f"{type(self).__name__} needs base_dir when there is no Dagster instance"
                )
            base_dir = instance.storage_directory()
        return open_storage(base_dir, settings.storage_options)


class RayParquetIOManager(RayIOManager):
    """Stores time-partitioned Polars assets as one Parquet file per partition, each
    written by its own Ray task: ``<base_dir>/<asset key path>/<partition key>.parquet``.

    ``base_dir`` is a local or shared folder, or an object-store URI (``s3://``,
    ``gs://``, ``az://``, ``abfs://``) with ``storage_options`` as Polars' cloud IO takes
    them (each may be a ``dg.EnvVar``). An asset returns a LazyFrame (typically
    :func:`piot_dagster.scan_db`) or a DataFrame. For every partition of the run (one, or
    a whole single-run backfill) a Ray task filters the frame to the partition's
    half-open time window, collects it and stores the file atomically: a temporary file
    and a rename on a filesystem, one PUT on an object store. The driver never holds the
    data; it checks that it sees every file written, so a worker writing to a disk of its
    own fails the run instead of losing partitions. Assets override ``base_dir``,
    ``storage_options``, ``date_column``, ``max_concurrency`` and ``remote_options``
    through their definition metadata.

    A downstream asset receives the upstream partitions of its window in chronological
    order: as one lazy scan (``pl.LazyFrame``), one frame (``pl.DataFrame`` or no
    annotation) or one entry per partition (``dict[str, pl.DataFrame | pl.LazyFrame]``).
    Missing partitions are an error unless the input's metadata sets
    ``allow_missing_partitions=True``.

    Examples
    --------
    >>> RayParquetIOManager(
    ...     ray=RayResource(address="ray://head:10001"),
    ...     base_dir="s3://lake/assets",
    ...     storage_options={
    ...         "aws_access_key_id": dg.EnvVar("AWS_ACCESS_KEY_ID"),
    ...         "aws_secret_access_key": dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    ...         "aws_region": "eu-west-1",
    ...     },
    ... )  # doctest: +SKIP
    """

    format_class: ClassVar[type[Format]] = ParquetFiles


class RayDeltaIOManager(RayIOManager):
    """Stores time-partitioned Polars assets as one Delta Lake table per asset,
    ``<base_dir>/<asset key path>/``, partitioned by ``dagster_partition`` (the Dagster
    partition key). Each partition's Ray task writes its own data file; the Dagster
    process then commits the run's files in one transaction, which replaces exactly the
    rows of the run's partitions: a 3,650-partition single-run backfill is one commit,
    and the data never passes through the Dagster process.

    Settings are those of :class:`RayParquetIOManager`, and ``schema_mode="merge"`` (here
    or in an asset's metadata) lets a run add columns to the table; otherwise a frame
    whose columns differ from the table's fails before any task runs. A downstream asset
    receives partitions as from :class:`RayParquetIOManager`, read with
    ``pl.scan_delta``. Every commit carries the Dagster run id and its partition range
    (``DeltaTable.history()``).

    Examples
    --------
    >>> RayDeltaIOManager(ray=RayResource(), base_dir="s3://lake/tables")  # doctest: +SKIP
    """

    format_class: ClassVar[type[Format]] = DeltaPartitions
    schema_mode: str | None = Field(
        default=None,
        description="'merge' lets a run add columns to an asset's table (assets may set it "
        "in their metadata too); unset, the table's schema is fixed.",
    )


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
    """Errors about settings or storage, prefixed with the asset they concern."""
    try:
        yield
    except (TypeError, ValueError, StorageError) as exc:
        raise type(exc)(f"asset {asset}: {exc}") from None


def _instance(context: dg.OutputContext | dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance: an input context has it, an output context's step does."""
    with contextlib.suppress(Exception):
        return context.instance  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        return context.step_context.instance  # type: ignore[union-attr]
    return None


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
