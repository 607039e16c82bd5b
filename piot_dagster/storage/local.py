"""A folder on a local or shared filesystem: a temporary file and an atomic rename."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl

from piot_dagster.errors import StorageError
from piot_dagster.storage.base import Listed, Storage, Stored

__all__ = ["LocalStorage"]


class LocalStorage(Storage):
    """Files under a folder; every Ray node must mount the same folder (NFS, a shared
    disk) for the Dagster process to see what workers write."""

    @property
    def root(self) -> Path:
        return Path(self.location.prefix)

    def path(self, key: str) -> Path:
        path = self.root.joinpath(*key.split("/"))
        # A symlink inside the folder could still lead out of it.
        if self.root.resolve() not in path.resolve().parents:
            raise ValueError(f"{path} would escape base_dir {self.root}")
        return path

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise StorageError(f"cannot create base_dir {self.root}: {exc}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"base_dir {self.root} is not writable; choose another base_dir")

    def spool(self, key: str, token: str) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return path.with_name(f".{path.name}.{token}.tmp")

    def put(
        self, key: str, data: bytes, *, token: str, proceed: Callable[[], bool]
    ) -> Stored | None:
        spooled = self.spool(key, token)
        spooled.write_bytes(data)
        return self.put_file(key, spooled, proceed=proceed)

    def put_file(self, key: str, spooled: Path, *, proceed: Callable[[], bool]) -> Stored | None:
        try:
            os.chmod(spooled, 0o644)
            # The rename keeps the inode and its modification time: this is what a reader
            # will find, unless another writer replaces it later.
            stat = spooled.stat()
            if not proceed():
                return None
            os.replace(spooled, self.path(key))
        finally:
            spooled.unlink(missing_ok=True)
        return Stored(stat.st_size, str(stat.st_mtime_ns))

    def get(self, key: str) -> bytes:
        # One open handle: a rename replacing the file meanwhile is not seen.
        return self.path(key).read_bytes()

    def snapshot(self, key: str, version: str = "") -> BinaryIO:
        # An open file keeps the inode it opened: a rename replacing it is not seen.
        return open(self.path(key), "rb")

    def list(self, folders: Sequence[str], *, recursive: bool = False) -> dict[str, Listed]:
        listed = {}
        pending = ["/".join(folders)]
        while pending:
            prefix = pending.pop()
            try:
                entries = list(os.scandir(self.root.joinpath(*prefix.split("/"))))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = f"{prefix}/{entry.name}" if prefix else entry.name
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    if recursive:
                        pending.append(key)
                elif entry.is_file():
                    stat = entry.stat()
                    listed[key] = Listed(key, Stored(stat.st_size, str(stat.st_mtime_ns)))
        return listed

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            with open(path, "xb") as file:
                file.write(data)
        except FileExistsError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def read_schema(self, key: str) -> pl.Schema:
        return pl.read_parquet_schema(self.path(key))  # type: ignore[return-value]
