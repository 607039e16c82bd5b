"""What differs between the ways an asset's partitions can be kept.

The IO manager's fan-out is the same for every format: one Ray task per partition, each
filtering the asset's frame to its window and handing the rows to a writer. A format
says what that writer is, what a run does with what its tasks wrote (nothing more for
loose Parquet files; one commit for a Delta table), and how stored partitions are found
and read back. Another format (Iceberg, say) is one more module implementing this.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.reading import Wanted
from piot_dagster.dagster.settings import Settings
from piot_dagster.engine.ray_tasks import PeriodResult, Writer
from piot_dagster.storage import Storage

__all__ = ["Format"]


class Format(abc.ABC):
    """One asset's partitions, kept in this format under ``storage``: ``path`` is the
    asset key's path, ``asset`` its name for messages."""

    def __init__(
        self,
        storage: Storage,
        path: Sequence[str],
        *,
        asset: str,
        partitioned: bool,
        settings: Settings,
    ) -> None:
        self.storage = storage
        self.path = list(path)
        self.asset = asset
        self.partitioned = partitioned
        self.settings = settings

    # -- writing ----------------------------------------------------------------------

    def prepare(self, schema: pl.Schema, cells: Sequence[Cell | None]) -> None:  # noqa: B027
        """Check, before any task runs, that the asset's frame (of ``schema``) can be
        stored for ``cells``; called before :meth:`writer`. (Most formats need nothing.)"""

    @abc.abstractmethod
    def writer(
        self, cell: Cell | None, *, date_column: str | None, window: tuple[int, int] | None
    ) -> Writer:
        """What the task of ``cell`` (None: the whole unpartitioned asset) writes with;
        it measures ``date_column`` against ``window``, the cell's time window in the
        column's physical unit."""

    @abc.abstractmethod
    def keep(self, results: Sequence[PeriodResult], run_id: str | None) -> Mapping[str, Any]:
        """Make what these tasks of run ``run_id`` wrote its stored partitions (all of
        them, or those of a failed run that succeeded): Dagster metadata to add to each."""

    @abc.abstractmethod
    def drop(self, results: Sequence[PeriodResult]) -> list[PeriodResult]:
        """An interrupted run's tasks wrote ``results``: what of them stays stored."""

    # -- reading ----------------------------------------------------------------------

    @abc.abstractmethod
    def present(self, cells: Sequence[Cell | None]) -> set[str]:
        """The names (:meth:`name`) of ``cells`` that are stored."""

    @abc.abstractmethod
    def load(
        self, cells: Sequence[Cell | None], wanted: Wanted, columns: Sequence[str] | None
    ) -> object:
        """Stored ``cells`` (at least one, in time order) as ``wanted``: one lazy scan, one
        frame, or one of either per partition; only ``columns`` if given."""

    # -- shared -----------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """Where the asset's partitions are, for messages."""
        return self.storage.location.uri

    def name(self, cell: Cell | None) -> str:
        """A cell's name for a downstream dict: its partition key, or the asset's."""
        return self.asset if cell is None else cell.key
