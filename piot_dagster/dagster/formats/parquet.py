"""Partitions as loose Parquet files: ``<base_dir>/<asset key path>/<partition key>.parquet``,
and ``.../<dimension>=<key>/<time key>.parquet`` for the cells of multi-partitions (Hive's
layout). Each task streams its partition into its file (a
:class:`~piot_dagster.storage.PartitionWriter`), in place once its task ends; a run adds
nothing, and a downstream asset reads the files back through
:mod:`~piot_dagster.dagster.reading`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.formats.base import Listing, Place
from piot_dagster.dagster.io_manager import RayIOManager
from piot_dagster.dagster.reading import Part, Wanted, load
from piot_dagster.dagster.visibility import seen
from piot_dagster.engine.ray_tasks import PeriodResult, Writer
from piot_dagster.storage import Listed, PartitionWriter

__all__ = ["ParquetListing", "RayParquetIOManager"]


@dataclass(frozen=True)
class ParquetListing(Listing):
    """The stored cells, and the entries of their folders' listings by key."""

    listed: Mapping[str, Listed]


class RayParquetIOManager(RayIOManager):
    """Stores time-partitioned Polars assets as one Parquet file per partition, each
    written by its own Ray task: ``<base_dir>/<asset key path>/<partition key>.parquet``.

    ``base_dir`` is a local or shared folder, or an object-store URI (``s3://``,
    ``gs://``, ``az://``, ``abfs://``) with ``storage_options`` as Polars' cloud IO takes
    them (each may be a ``dg.EnvVar``). An asset returns a LazyFrame (typically
    :func:`piot_dagster.scan_db`) or a DataFrame. For every partition of the run (one, or
    a whole single-run backfill) a Ray task filters the frame to the partition's
    half-open time window, streams it into a file and stores that atomically: a temporary
    file and a rename on a filesystem, one object on an object store (a multipart upload
    past 8 MiB, which has no practical size limit). A partition stays one file however
    large: one object replaced whole is what makes a partition visible whole to readers
    of an object store, with no commit log to say which files belong together (that is
    what :class:`RayDeltaIOManager`'s rolled files have). The driver never holds the
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

    def writer(
        self,
        place: Place,
        plan: None,
        cell: Cell | None,
        *,
        date_column: str | None,
        window: tuple[int, int] | None,
    ) -> Writer:
        return PartitionWriter(place.storage, _key(place, cell), date_column, window)

    def keep(
        self, place: Place, plan: None, results: Sequence[PeriodResult], run_id: str | None
    ) -> Mapping[str, Any]:
        return {}

    def drop(self, place: Place, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        # Every file put before the interrupt stays: it replaced its partition whole.
        return seen(place.storage, results)

    def present(self, place: Place, cells: Sequence[Cell | None]) -> ParquetListing:
        folders = {tuple(_key(place, cell).split("/")[:-1]) for cell in cells}
        listed: dict[str, Listed] = {}
        for folder in folders:  # one listing per folder: a symbol's, or the asset's
            listed.update(place.storage.list(folder))
        names = frozenset(place.name(cell) for cell in cells if _key(place, cell) in listed)
        return ParquetListing(names, listed)

    def load(
        self,
        place: Place,
        found: ParquetListing,
        cells: Sequence[Cell | None],
        wanted: Wanted,
        columns: Sequence[str] | None,
    ) -> object:
        parts = [
            Part(
                place.name(cell),
                key := _key(place, cell),
                None if cell is None else cell.window,
                size=found.listed[key].stored.size,
                version=found.listed[key].stored.version,
                values={} if cell is None else cell.values,
            )
            for cell in cells
        ]
        return load(place.storage, parts, wanted, place.settings.date_column, columns)


def _key(place: Place, cell: Cell | None) -> str:
    """The key of ``cell``'s file (None: the unpartitioned asset's)."""
    if cell is None:
        *folders, name = place.path
        return place.storage.key(folders, name)
    return place.storage.key([*place.path, *cell.folders], cell.name)
