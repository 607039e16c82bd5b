"""What a format's steps hand on: where an asset's partitions are (:class:`Place`) and
which of them are stored (:class:`Listing`).

A format is a subclass of :class:`~piot_dagster.dagster.io_manager.RayIOManager`
implementing its stateless steps, each given the :class:`Place` and what an earlier step
returned: ``prepare`` returns the write plan that ``writer`` and ``keep`` take,
``present`` the :class:`Listing` that ``load`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from piot_dagster.dagster.cells import Cell
from piot_dagster.dagster.settings import Settings
from piot_dagster.storage import Storage

__all__ = ["Listing", "Place"]


@dataclass(frozen=True)
class Place:
    """One asset's partitions under ``storage``: ``path`` is the asset key's path,
    ``asset`` its name for messages."""

    storage: Storage
    path: tuple[str, ...]
    asset: str
    partitioned: bool
    settings: Settings

    def name(self, cell: Cell | None) -> str:
        """A cell's name for a downstream dict: its partition key, or the asset's."""
        return self.asset if cell is None else cell.key


@dataclass(frozen=True)
class Listing:
    """The names (:meth:`Place.name`) of the cells found stored; a format's subclass adds
    what its ``load`` reads them from."""

    names: frozenset[str]
