"""``RayParquetIOManager``: each time partition of an asset is one Ray task that filters
the asset's frame to its window and writes its own Parquet file."""

import contextlib
import datetime as dt
import logging
import os
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from piot_dagster.dagster.partitions import partition_unit
from piot_dagster.dagster.ray_resource import RayResource
from piot_dagster.engine.periods import Period, period_of_window, window_filter
from piot_dagster.engine.ray_tasks import (
    PeriodResult,
    PeriodTask,
    ShippedPlan,
    check_remote_options,
    run,
)
from piot_dagster.errors import PeriodExecutionError, listing
from piot_dagster.storage.parquet_files import ParquetTarget, file_path

__all__ = ["RayParquetIOManager"]

_INT64 = (-(2**63), 2**63 - 1)
# A non-partitioned asset is one period covering all time.
_ALL_TIME = Period(dt.date.min, dt.date.max, 0, 0)


class RayParquetIOManager(dg.ConfigurableIOManager):
    """Stores time-partitioned Polars assets as one Parquet file per partition, each
    written by its own Ray task: ``<base_dir>/<asset key path>/<partition key>.parquet``.

    An asset returns a LazyFrame (typically :func:`piot_dagster.scan_db`) or a DataFrame.
    For every partition of the run (one, or a whole single-run backfill) a Ray task
    filters the frame to the partition's half-open time window, collects it and writes the
    file through a temporary file and a rename; the driver never holds the data. Assets
    override ``date_column``, ``max_concurrency`` and ``remote_options`` through their
    definition metadata.

    A downstream asset receives the upstream partitions of its window in chronological
    order: as one lazy scan (``pl.LazyFrame``), one frame (``pl.DataFrame`` or no
    annotation) or one entry per partition (``dict[str, pl.DataFrame | pl.LazyFrame]``).
    Missing partitions are an error unless the input's metadata sets
    ``allow_missing_partitions=True``.
    """

    ray: dg.ResourceDependency[RayResource]
    base_dir: str | None = None
    date_column: str | None = None
    max_concurrency: int = 100
    remote_options: dict[str, Any] | None = None

    # -- writing ----------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        asset = context.asset_key.to_user_string()
        if isinstance(obj, pl.DataFrame):
            obj = obj.lazy()
        if not isinstance(obj, pl.LazyFrame):
            raise TypeError(
                f"asset {asset} returned {type(obj).__name__}; RayParquetIOManager stores "
                f"a polars LazyFrame or DataFrame"
            )
        settings = {**self.model_dump(exclude={"ray"}), **_settings(context.definition_metadata)}
        try:
            options = check_remote_options(settings["remote_options"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"asset {asset}: {exc}") from None
        limit = settings["max_concurrency"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"asset {asset}: max_concurrency must be an int of at least 1, not {limit!r}"
            )
        base = self._base_dir(context)
        _check_writable(base, asset)
        schema = obj.collect_schema()
        column = settings["date_column"]
        if context.has_asset_partitions:
            work = self._partition_work(context, asset, schema, column, base)
        else:
            target = ParquetTarget(
                str(_asset_file(base, context.asset_key)), column if column in schema else None
            )
            work = [
                (
                    _ALL_TIME,
                    PeriodTask(
                        pl.lit(True), head=None, columns=None, return_as="arrow", write=target
                    ),
                )
            ]
        cluster = self.ray.cluster_address
        started = dt.datetime.now()
        key_of = {period.label: key for key, (period, _) in zip(_keys(context), work, strict=True)}
        results: list[PeriodResult] = []
        tasks = run(
            ShippedPlan(obj),
            work,
            column=column or asset,
            schema=schema,
            options=options,
            max_concurrency=settings["max_concurrency"],
            keep_going=True,
        )
        # Closed at once whatever ends the loop, even an interrupt landing between two
        # results, so the tasks in flight are stopped before the run's process exits.
        with _bridged_logs(context.log), contextlib.closing(tasks):
            try:
                for result in tasks:
                    results.append(result)
            except BaseException as exc:
                # The partitions written before a failure or an interrupt are recorded as
                # materialized, so Dagster marks only the others failed. (One finishing
                # while the run stops holds the new version but stays unrecorded.)
                for result in results:
                    context.log_event(
                        dg.AssetMaterialization(
                            context.asset_key,
                            partition=key_of[result.period.label],
                            metadata=_metadata(result, cluster),
                        )
                    )
                if isinstance(exc, PeriodExecutionError):
                    raise _partitions_failed(asset, key_of, len(work), exc) from exc
                raise
        per_partition = {
            key_of[result.period.label]: _metadata(result, cluster) for result in results
        }
        _record(context, per_partition, started)

    def _partition_work(
        self,
        context: dg.OutputContext,
        asset: str,
        schema: pl.Schema,
        column: str | None,
        base: Path,
    ) -> list[tuple[Period, PeriodTask]]:
        partitions_def = context.asset_partitions_def
        try:
            partition_unit(partitions_def)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"asset {asset}: {exc}") from None
        if column is None:
            raise ValueError(
                f"asset {asset} is time-partitioned: set date_column on RayParquetIOManager "
                f"or in the asset's metadata, e.g. @asset(metadata={{'date_column': 'date'}})"
            )
        dtype = schema.get(column)
        if dtype is None or not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
            found = "is missing from" if dtype is None else f"is {dtype} in"
            raise ValueError(
                f"asset {asset}: date_column {column!r} {found} its frame; it needs a Date or "
                f"Datetime column. Its columns are {schema.names()}"
            )
        work = []
        for key in context.asset_partition_keys:
            window = partitions_def.time_window_for_partition_key(key)  # type: ignore[union-attr]
            period = period_of_window(window.start, window.end, dtype)
            if not _INT64[0] <= period.start <= period.end <= _INT64[1]:
                raise ValueError(
                    f"asset {asset}: partition {key} ({period.label}) lies outside what a "
                    f"{dtype} column can hold; use a coarser time unit for date_column "
                    f"{column!r}, or partitions within its range"
                )
            target = ParquetTarget(str(file_path(base, context.asset_key.path, key)), column)
            work.append(
                (
                    period,
                    PeriodTask(
                        window_filter(column, dtype, period),
                        head=None,
                        columns=None,
                        return_as="arrow",
                        write=target,
                    ),
                )
            )
        return work

    # -- reading ----------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> object:
        asset = context.asset_key.to_user_string()
        base = self._base_dir(context)
        if context.has_asset_partitions:
            partitions_def = context.asset_partitions_def
            keys = sorted(
                context.asset_partition_keys,
                key=lambda k: partitions_def.time_window_for_partition_key(k).start,  # type: ignore[union-attr]
            )
            paths = {key: file_path(base, context.asset_key.path, key) for key in keys}
        else:
            paths = {asset: _asset_file(base, context.asset_key)}
        missing = [key for key, path in paths.items() if not path.exists()]
        if missing:
            allowed = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
            if not allowed or len(missing) == len(paths):
                raise FileNotFoundError(
                    f"asset {asset}: {len(missing)} partition(s) are not materialized: "
                    f"{listing(missing)}. Materialize them, or set "
                    f"AssetIn(metadata={{'allow_missing_partitions': True}})"
                )
            context.log.warning(
                f"asset {asset}: skipping {len(missing)} missing partition(s): {listing(missing)}"
            )
            paths = {key: path for key, path in paths.items() if key not in missing}
        return _as_annotated(context.dagster_type.typing_type, paths)

    def _base_dir(self, context: dg.OutputContext | dg.InputContext) -> Path:
        if self.base_dir is not None:
            return Path(self.base_dir)
        instance = _instance(context)
        if instance is None:
            raise ValueError("RayParquetIOManager needs base_dir when there is no Dagster instance")
        return Path(instance.storage_directory())


def _instance(context: dg.OutputContext | dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance: an input context has it, an output context's step does."""
    with contextlib.suppress(Exception):
        return context.instance  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        return context.step_context.instance  # type: ignore[union-attr]
    return None


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


def _check_writable(base: Path, asset: str) -> None:
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise PermissionError(f"asset {asset}: cannot create base_dir {base}: {exc}") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(
            f"asset {asset}: base_dir {base} is not writable; choose another base_dir"
        )


def _settings(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The asset's own overrides of the IO manager's settings."""
    keys = ("date_column", "max_concurrency", "remote_options")
    return {k: _raw(v) for k, v in (metadata or {}).items() if k in keys}


def _raw(value: object) -> object:
    return getattr(value, "value", value)


def _asset_file(base: Path, asset_key: dg.AssetKey) -> Path:
    *folders, name = asset_key.path
    return file_path(base, folders, name)


def _keys(context: dg.OutputContext) -> list[str | None]:
    return list(context.asset_partition_keys) if context.has_asset_partitions else [None]


def _metadata(result: PeriodResult, cluster: str | None) -> dict[str, Any]:
    written, seconds = result.written, result.seconds
    assert written is not None, "a writing task returns its file's stats"
    columns = [dg.TableColumn(name, dtype) for name, dtype in written.schema.items()]
    metadata: dict[str, Any] = {
        "dagster/row_count": written.rows,
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "path": dg.MetadataValue.path(written.path),
        "size_bytes": written.bytes,
        "task_seconds": dg.MetadataValue.float(round(seconds, 4)),
        "ray_cluster": cluster or "",
    }
    if written.date_min is not None:
        metadata["date_min"] = str(written.date_min)
        metadata["date_max"] = str(written.date_max)
    if written.sql:
        metadata["sql"] = dg.MetadataValue.md("\n\n".join(f"```sql\n{s}\n```" for s in written.sql))
    return metadata


def _record(
    context: dg.OutputContext, per_partition: dict[str | None, dict[str, Any]], started: dt.datetime
) -> None:
    """Per-partition metadata on each partition's materialization, where a run records
    them; the totals (and, outside a run, every partition's) on the output."""
    step = getattr(context, "_step_context", None)
    partitioned = context.has_asset_partitions
    if partitioned and step is not None:
        for key, metadata in per_partition.items():
            step.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
        context.add_output_metadata(
            {
                "partitions": len(per_partition),
                "seconds": (dt.datetime.now() - started).total_seconds(),
            }
        )
    elif not partitioned:
        context.add_output_metadata(per_partition[None])
    else:
        context.add_output_metadata(
            {
                "partitions": len(per_partition),
                "dagster/row_count": sum(m["dagster/row_count"] for m in per_partition.values()),
                "by_partition": dg.MetadataValue.json(
                    {
                        k: {"rows": m["dagster/row_count"], "path": m["path"].path}
                        for k, m in per_partition.items()
                    }
                ),
            }
        )


def _as_annotated(annotation: object, paths: Mapping[str, Path]) -> object:
    """The files as the downstream asset's annotation asks: a lazy scan, a frame, or one
    entry per partition; schema drift between partitions is reconciled by column name.

    Eager reads go through one open handle per file, so a run replacing a partition
    meanwhile is seen either before or after, never mixed. A lazy scan opens the files
    when it is collected.
    """

    def read(path: Path) -> pl.DataFrame:
        with open(path, "rb") as handle:
            return pl.read_parquet(handle)

    def combine(frames: list[Any]) -> Any:
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")

    if typing.get_origin(annotation) in (dict, Mapping):
        value = typing.get_args(annotation)[1] if typing.get_args(annotation) else pl.DataFrame
        load = pl.scan_parquet if value is pl.LazyFrame else read
        return {key: load(path) for key, path in paths.items()}
    if annotation is pl.LazyFrame:
        return combine([pl.scan_parquet(path) for path in paths.values()])
    return combine([read(path) for path in paths.values()])


@contextlib.contextmanager
def _bridged_logs(log: logging.Logger | Any) -> Iterator[None]:
    """The engine's log lines (per period, stops), forwarded to the run's log."""

    class _Bridge(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log.log(record.levelno, record.getMessage())

    handler = _Bridge(level=logging.INFO)
    logger = logging.getLogger("piot_dagster")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
