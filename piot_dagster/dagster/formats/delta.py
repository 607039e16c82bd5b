"""Partitions as one Delta table: ``<base_dir>/<asset key path>/``, partitioned by
``dagster_partition`` (the Dagster partition key). Each task writes its partition's data
file; the run commits them in one transaction, which replaces exactly its partitions."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
import pyarrow as pa

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.formats.base import Format
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

__all__ = ["DeltaPartitions"]

_ORDER = "__piot_order"


class DeltaPartitions(Format):
    """The asset's Delta table; ``schema_mode="merge"`` (asset metadata) lets a run add
    columns."""

    # Set by prepare() for writing, by present() for reading.
    _columns: tuple[Column, ...] = ()
    _added: frozenset[str] = frozenset()
    _table: DeltaTable | None = None

    @cached_property
    def target(self) -> DeltaTarget:
        *folders, name = self.path
        key = self.storage.key(folders, name, suffix="")
        return DeltaTarget(self.storage, key, partitioned=self.partitioned)

    @property
    def uri(self) -> str:
        return self.target.uri

    # -- writing ----------------------------------------------------------------------

    def prepare(self, schema: pl.Schema, cells: Sequence[Cell | None]) -> None:
        mode = self.settings.schema_mode
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
        self._added = frozenset(added)
        self._columns = tuple(stored(pl.Schema({**schema, **added})))
        self.target.check_commit_safety()
        self.target.schema(self.target.open_for_writing(), self._columns, mode)

    def writer(
        self, cell: Cell | None, *, date_column: str | None, window: tuple[int, int] | None
    ) -> Writer:
        if cell is not None:
            partition_folder(cell.key)  # refused here, before any task runs
        return DeltaFileWriter(
            self.storage,
            self.target.key,
            None if cell is None else cell.key,
            self._columns,
            {} if cell is None else {d: v for d, v in cell.values.items() if d in self._added},
            date_column,
            window,
        )

    def keep(self, results: Sequence[PeriodResult], run_id: str | None) -> Mapping[str, Any]:
        if not results:
            return {}
        files = [result.written for result in results]
        keys = [f.partition_values.get(PARTITION_COLUMN, "") for f in files]
        properties: dict[str, Any] = {"dagster_run_id": run_id or "", "dagster_asset": self.asset}
        if self.partitioned:
            properties["dagster_partition_range"] = f"{keys[0]}...{keys[-1]}"
            properties["dagster_partition_count"] = len(keys)
        try:
            version = self.target.commit(
                files,
                self._columns,
                schema_mode=self.settings.schema_mode,
                partitions=keys,
                properties=properties,
            )
        except BaseException:
            self.drop(results)
            raise
        return {
            "delta_table": dg.MetadataValue.path(self.target.uri),
            "delta_version": version,
        }

    def drop(self, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        # Nothing of them is committed, so no reader can see them: removing them is
        # tidying up, and what cannot be removed now is left for vacuum.
        for result in results:
            with contextlib.suppress(Exception):
                self.storage.delete(result.written.key)
        return []

    # -- reading ----------------------------------------------------------------------

    def present(self, cells: Sequence[Cell | None]) -> set[str]:
        self._table = self.target.open()
        if self._table is None:
            return set()
        if not self.partitioned:
            return {self.name(cell) for cell in cells}
        held = self.target.partitions(self._table)
        return {self.name(cell) for cell in cells if self.name(cell) in held}

    def load(
        self, cells: Sequence[Cell | None], wanted: Wanted, columns: Sequence[str] | None
    ) -> object:
        names = [self.name(cell) for cell in cells]
        lf = self._scan()
        if wanted.per_partition:
            parts = {n: self._own(lf, [n], columns) for n in names}
            if wanted.lazy:
                return parts
            return dict(zip(parts, pl.collect_all(parts.values()), strict=True))
        lf = self._own(lf, names, columns)
        return lf if wanted.lazy else lf.collect()

    def _scan(self) -> pl.LazyFrame:
        """The table at the version :meth:`present` found, in the dtypes written."""
        table = self._table
        assert table is not None, "present() found the table"
        changed = restore(pa.schema(table.schema().to_arrow()))
        lf = pl.scan_delta(table)
        return lf.with_columns(changed) if changed else lf

    def _own(
        self, lf: pl.LazyFrame, names: list[str], columns: Sequence[str] | None
    ) -> pl.LazyFrame:
        """The rows of partitions ``names`` of ``lf``, in that order, as the asset wrote
        them."""
        if self.partitioned:
            key = pl.col(PARTITION_COLUMN)
            lf = lf.filter(key.is_in(names) if len(names) > 1 else key == names[0])
            if len(names) > 1:
                # The scan gives files in the log's order: partitions come in time order,
                # each file's rows as stored (a stable sort).
                lf = lf.sort(key.replace_strict(names, range(len(names))), maintain_order=True)
            lf = lf.drop(PARTITION_COLUMN)
        return select_columns(lf, columns)
