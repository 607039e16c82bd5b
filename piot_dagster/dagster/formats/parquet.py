"""Partitions as loose Parquet files: ``<base_dir>/<asset key path>/<partition key>.parquet``,
and ``.../<dimension>=<key>/<time key>.parquet`` for the cells of multi-partitions (Hive's
layout). Each task's file is in place once its task ends; a run adds nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.formats.base import Format
from piot_dagster.dagster.reading import Part, Wanted, load
from piot_dagster.dagster.visibility import seen
from piot_dagster.engine.ray_tasks import PeriodResult, Writer
from piot_dagster.storage import Listed, PartitionWriter

__all__ = ["ParquetFiles"]


class ParquetFiles(Format):
    """One Parquet file per partition, put atomically by its task."""

    _listed: dict[str, Listed] | None = None

    def _key(self, cell: Cell | None) -> str:
        if cell is None:
            *folders, name = self.path
            return self.storage.key(folders, name)
        return self.storage.key([*self.path, *cell.folders], cell.name)

    def writer(
        self, cell: Cell | None, *, date_column: str | None, window: tuple[int, int] | None
    ) -> Writer:
        return PartitionWriter(self.storage, self._key(cell), date_column, window)

    def keep(self, results: Sequence[PeriodResult], run_id: str | None) -> Mapping[str, Any]:
        return {}

    def drop(self, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        # Every file put before the interrupt stays: it replaced its partition whole.
        return seen(self.storage, results)

    def present(self, cells: Sequence[Cell | None]) -> set[str]:
        folders = {tuple(self._key(cell).split("/")[:-1]) for cell in cells}
        listed: dict[str, Listed] = {}
        for folder in folders:  # one listing per folder: a symbol's, or the asset's
            listed.update(self.storage.list(folder))
        self._listed = listed
        return {self.name(cell) for cell in cells if self._key(cell) in listed}

    def load(
        self, cells: Sequence[Cell | None], wanted: Wanted, columns: Sequence[str] | None
    ) -> object:
        listed = self._listed or {}
        parts = [
            Part(
                self.name(cell),
                key := self._key(cell),
                None if cell is None else cell.window,
                size=listed[key].stored.size if key in listed else 0,
                version=listed[key].stored.version if key in listed else "",
                values={} if cell is None else cell.values,
            )
            for cell in cells
        ]
        return load(self.storage, parts, wanted, self.settings.date_column, columns)
