"""Partition files: safe paths under a base directory, and atomic Parquet writes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

__all__ = ["ParquetTarget", "WrittenFile", "file_path", "write_atomically"]


@dataclass(frozen=True)
class ParquetTarget:
    """Where a task writes its partition, and which column's range to report."""

    path: str
    date_column: str | None
    # The temporary file's name is fixed when the task is made, not when it runs: a Ray
    # retry overwrites what a killed attempt left, and the driver can remove it once it
    # gives up on the task (failed or stopped). Concurrent writers of the same partition
    # still use different names.
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def temporary(self) -> Path:
        path = Path(self.path)
        return path.with_name(f".{path.name}.{self.token}.tmp")


@dataclass(frozen=True)
class WrittenFile:
    path: str
    rows: int
    bytes: int
    schema: dict[str, str]
    date_min: object
    date_max: object
    sql: tuple[str, ...]


def file_path(base_dir: str | Path, parts: Sequence[str], name: str) -> Path:
    """``<base_dir>/<parts...>/<name>.parquet``, refusing any part that could escape
    ``base_dir`` (a separator, ``..``, an empty or hidden name)."""
    base = Path(base_dir).resolve()
    for part in [*parts, name]:
        if (
            not isinstance(part, str)
            or not part
            or part in (".", "..")
            or part.startswith(".")
            or any(sep in part for sep in ("/", "\\", "\0"))
        ):
            raise ValueError(
                f"{part!r} cannot name a file under {base}: asset key parts and partition "
                f"keys must not be empty, start with '.', or contain '/', '\\\\' or '..'"
            )
    path = base.joinpath(*parts, f"{name}.parquet")
    if base not in path.resolve().parents:
        raise ValueError(f"{path} would escape base_dir {base}")
    return path


def write_atomically(
    frame: pl.DataFrame,
    target: ParquetTarget,
    sql: Sequence[str],
    *,
    proceed: Callable[[], bool] = lambda: True,
) -> WrittenFile | None:
    """Write ``frame`` to ``target.path`` through a temporary file and a rename, so a
    reader sees the old file or the new one, never a part. ``proceed`` is asked once the
    temporary file is complete; if it says no, the old file stays and None is returned."""
    path = Path(target.path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    temporary = target.temporary
    try:
        frame.write_parquet(temporary, compression="zstd", statistics=True)
        os.chmod(temporary, 0o644)
        if not proceed():
            return None
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    column = target.date_column
    return WrittenFile(
        path=str(path),
        rows=frame.height,
        bytes=path.stat().st_size,
        schema={name: str(dtype) for name, dtype in frame.schema.items()},
        date_min=frame[column].min() if column else None,
        date_max=frame[column].max() if column else None,
        sql=tuple(sql),
    )
