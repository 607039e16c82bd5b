"""Partitions as one Delta table: ``<base_dir>/<asset key path>/``, partitioned by
``dagster_partition`` (the Dagster partition key). Each task streams its partition into
data files of the table (a :class:`~piot_dagster.storage.delta.DeltaFileWriter`), rolled
at ``target_file_size``; the run commits them in one transaction, which replaces exactly
its partitions. A downstream asset reads, with ``pl.scan_delta``, the version of the table
in which ``present`` found them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
import pyarrow as pa
from pydantic import Field

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.formats.base import Listing, Place
from piot_dagster.dagster.io_manager import RayIOManager
from piot_dagster.dagster.reading import Wanted, select_columns
from piot_dagster.engine.ray_tasks import PeriodResult, Writer
from piot_dagster.storage.delta import (
    PARTITION_COLUMN,
    SCHEMA_MODES,
    Column,
    DeltaFileWriter,
    DeltaTarget,
    partition_folder,
    restore,
    stored,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["TARGET_FILE_SIZE", "DeltaListing", "DeltaPlan", "RayDeltaIOManager"]

# Data files of this size keep a 48M-row partition to a handful of files, and a reader
# fetches each in a few seconds; delta-rs rolls at about 100 MiB by default.
TARGET_FILE_SIZE = 128 * 2**20


@dataclass(frozen=True)
class DeltaPlan:
    """How a run stores its frame: each column as the table keeps it, and the other
    dimensions that the frame lacks as columns (each becomes a String column)."""

    columns: tuple[Column, ...]
    added: frozenset[str]


@dataclass(frozen=True)
class DeltaListing(Listing):
    """The stored cells, and the table's version that holds them."""

    table: DeltaTable


class RayDeltaIOManager(RayIOManager):
    """Stores time-partitioned Polars assets as one Delta Lake table per asset,
    ``<base_dir>/<asset key path>/``, partitioned by ``dagster_partition`` (the Dagster
    partition key). Each partition's Ray task writes its own data files, of about
    ``target_file_size`` bytes each past that size; the Dagster process then commits the
    run's files in one transaction, which replaces exactly the rows of the run's
    partitions: a 3,650-partition single-run backfill is one commit, and the data never
    passes through the Dagster process.

    Settings are those of :class:`RayParquetIOManager`, and ``schema_mode="merge"`` (here
    or in an asset's metadata) lets a run add columns to the table; otherwise a frame
    whose columns differ from the table's fails before any task runs.
    ``target_file_size`` may be set in an asset's metadata too. A downstream asset
    receives partitions as from :class:`RayParquetIOManager`, read with
    ``pl.scan_delta``. Every commit carries the Dagster run id and its partition range
    (``DeltaTable.history()``).

    Examples
    --------
    >>> RayDeltaIOManager(ray=RayResource(), base_dir="s3://lake/tables")  # doctest: +SKIP
    """

    schema_mode: str | None = Field(
        default=None,
        description="'merge' lets a run add columns to an asset's table (assets may set it "
        "in their metadata too); unset, the table's schema is fixed.",
    )
    target_file_size: int = Field(
        default=TARGET_FILE_SIZE,
        description="Bytes (compressed, as stored) at which a partition's data files are "
        "rolled: a larger partition is written as several files of about this size, all "
        "in the run's one commit, so readers can fetch and skip them separately (assets "
        "may set it in their metadata too). A partition of up to 100,000 rows is always "
        "one file. Default 128 MiB.",
    )

    # -- writing ----------------------------------------------------------------------

    def prepare(self, place: Place, schema: pl.Schema, cells: Sequence[Cell | None]) -> DeltaPlan:
        _target_file_size(place)  # refused here, before any task runs
        mode = _schema_mode(place)
        if mode not in SCHEMA_MODES:
            raise ValueError(
                f"schema_mode must be 'merge' (a run may add columns) or unset (the table's "
                f"schema is fixed), not {mode!r}"
            )
        if PARTITION_COLUMN in schema:
            raise ValueError(
                f"its frame has a column {PARTITION_COLUMN!r}, the name the Delta table "
                f"gives its partition column; rename it"
            )
        # Other dimensions without a column of the frame become String columns.
        added = {d: pl.String() for cell in cells if cell for d in cell.values if d not in schema}
        plan = DeltaPlan(tuple(stored(pl.Schema({**schema, **added}))), frozenset(added))
        target = _target(place)
        target.check_commit_safety()
        target.schema(target.open_for_writing(), plan.columns, mode)
        return plan

    def writer(
        self,
        place: Place,
        plan: DeltaPlan,
        cell: Cell | None,
        *,
        date_column: str | None,
        window: tuple[int, int] | None,
    ) -> Writer:
        if cell is not None:
            partition_folder(cell.key)  # refused here, before any task runs
        return DeltaFileWriter(
            place.storage,
            _target(place).key,
            None if cell is None else cell.key,
            plan.columns,
            {} if cell is None else {d: v for d, v in cell.values.items() if d in plan.added},
            date_column,
            window,
            _target_file_size(place),
        )

    def keep(
        self,
        place: Place,
        plan: DeltaPlan,
        results: Sequence[PeriodResult],
        run_id: str | None,
    ) -> Mapping[str, Any]:
        if not results:
            return {}
        files = [file for result in results for file in result.written.files]
        keys = [r.written.files[0].partition_values.get(PARTITION_COLUMN, "") for r in results]
        properties: dict[str, Any] = {"dagster_run_id": run_id or "", "dagster_asset": place.asset}
        if place.partitioned:
            properties["dagster_partition_range"] = f"{keys[0]}...{keys[-1]}"
            properties["dagster_partition_count"] = len(keys)
        target = _target(place)
        try:
            version = target.commit(
                files,
                plan.columns,
                schema_mode=_schema_mode(place),
                partitions=keys,
                properties=properties,
            )
        except BaseException:
            self.drop(place, results)
            raise
        return {
            "delta_table": dg.MetadataValue.path(target.uri),
            "delta_version": version,
        }

    def drop(self, place: Place, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        # Nothing of them is committed, so no reader can see them: removing them is
        # tidying up, and what cannot be removed now is left for vacuum.
        for file in (file for result in results for file in result.written.files):
            with contextlib.suppress(Exception):
                place.storage.delete(file.key)
        return []

    # -- reading ----------------------------------------------------------------------

    def present(self, place: Place, cells: Sequence[Cell | None]) -> Listing:
        target = _target(place)
        table = target.open()
        if table is None:
            return Listing(frozenset())
        names = (place.name(cell) for cell in cells)
        if place.partitioned:
            held = target.partitions(table)
            names = (name for name in names if name in held)
        return DeltaListing(frozenset(names), table)

    def load(
        self,
        place: Place,
        found: DeltaListing,
        cells: Sequence[Cell | None],
        wanted: Wanted,
        columns: Sequence[str] | None,
    ) -> object:
        names = [place.name(cell) for cell in cells]
        lf = _scan(found.table)
        if wanted.per_partition:
            parts = {n: _own(place, lf, [n], columns) for n in names}
            if wanted.lazy:
                return parts
            return dict(zip(parts, pl.collect_all(parts.values()), strict=True))
        lf = _own(place, lf, names, columns)
        return lf if wanted.lazy else lf.collect()

    def uri(self, place: Place) -> str:
        return _target(place).uri


def _target(place: Place) -> DeltaTarget:
    """The asset's table."""
    *folders, name = place.path
    key = place.storage.key(folders, name, suffix="")
    return DeltaTarget(place.storage, key, partitioned=place.partitioned)


def _schema_mode(place: Place) -> str | None:
    return place.settings.own.get("schema_mode")


def _target_file_size(place: Place) -> int:
    """The asset's ``target_file_size``, checked."""
    size = place.settings.own.get("target_file_size", TARGET_FILE_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            f"target_file_size must be a positive int of bytes, such as {TARGET_FILE_SIZE} "
            f"(128 MiB), not {size!r}"
        )
    return size


def _scan(table: DeltaTable) -> pl.LazyFrame:
    """The table at the version ``present`` found, in the dtypes written."""
    changed = restore(pa.schema(table.schema().to_arrow()))
    lf = pl.scan_delta(table)
    return lf.with_columns(changed) if changed else lf


def _own(
    place: Place, lf: pl.LazyFrame, names: list[str], columns: Sequence[str] | None
) -> pl.LazyFrame:
    """The rows of partitions ``names`` of ``lf``, in that order, as the asset wrote
    them."""
    if place.partitioned:
        key = pl.col(PARTITION_COLUMN)
        lf = lf.filter(key.is_in(names) if len(names) > 1 else key == names[0])
        if len(names) > 1:
            # The scan gives files in the log's order: partitions come in time order,
            # each file's rows as stored (a stable sort).
            lf = lf.sort(key.replace_strict(names, range(len(names))), maintain_order=True)
        lf = lf.drop(PARTITION_COLUMN)
    return select_columns(lf, columns)
