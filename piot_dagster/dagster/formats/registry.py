"""The formats, by name: the one list that ``partitioned_query``'s ``stored_as``, the
component's ``output.format`` and the IO managers' resource keys derive from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from piot_dagster.dagster.formats.delta import RayDeltaIOManager
from piot_dagster.dagster.formats.parquet import RayParquetIOManager
from piot_dagster.dagster.io_manager import RayIOManager

__all__ = ["FORMATS", "Format", "StoredAs"]


@dataclass(frozen=True)
class Format:
    """A format: its name (``stored_as``) and its IO manager, whose fields beyond the
    shared ones are the format's settings and whose ``writer`` and ``load`` give its
    streaming writer and its reader."""

    name: str
    io_manager: type[RayIOManager]

    @property
    def resource_key(self) -> str:
        """The key under which ``partitioned_query``'s assets find the IO manager."""
        return f"piot_{self.name}_io_manager"


FORMATS: dict[str, Format] = {
    f.name: f for f in (Format("parquet", RayParquetIOManager), Format("delta", RayDeltaIOManager))
}
StoredAs = Literal[*FORMATS]
