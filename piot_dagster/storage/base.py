"""The storage interface: what differs between a local folder and an object store.

Keys are ``/``-separated paths relative to the location, such as
``trades/2024-01-05.parquet``; :meth:`Storage.key` builds them and refuses any part that
could escape the location. A ``put`` replaces a key atomically: a reader sees the old
bytes or the new ones, never a part.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from piot_dagster.storage.location import Location

__all__ = ["Listed", "Storage", "Stored", "check_part"]


@dataclass(frozen=True)
class Stored:
    """What a put stored, as a reader can recognise it: its size and version (a file's
    modification time in nanoseconds, an object's ETag)."""

    size: int
    version: str


@dataclass(frozen=True)
class Listed:
    """An entry of a listing."""

    key: str
    stored: Stored


def check_part(part: object, location: str) -> str:
    """``part`` if it can name a folder or file under ``location``: not empty, not ``.``
    or ``..``, no leading ``.`` (our temporary and probe names) and no separator."""
    if (
        not isinstance(part, str)
        or not part
        or part.startswith(".")
        or any(sep in part for sep in ("/", "\\", "\0"))
    ):
        raise ValueError(
            f"{part!r} cannot name a file under {location}: asset key parts and partition "
            f"keys must not be empty, start with '.', or contain '/', '\\\\' or '..'"
        )
    return part


class Storage(abc.ABC):
    """A location's files or objects. Picklable: a Ray task receives it and writes its own
    partition; clients (an object store's connection pool) are made in each process."""

    def __init__(self, location: Location) -> None:
        self.location = location

    def key(self, folders: Sequence[str], name: str, suffix: str = ".parquet") -> str:
        """``<folders...>/<name><suffix>``, each part checked by :func:`check_part`."""
        parts = [check_part(p, self.location.uri) for p in [*folders, name]]
        return "/".join(parts) + suffix

    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a person (and Polars) reads it."""
        return f"{self.location.uri}/{key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location.uri!r})"

    @abc.abstractmethod
    def check(self) -> None:
        """Raise a :class:`~piot_dagster.errors.StorageError` saying what to fix unless the
        location can be listed and written."""

    @abc.abstractmethod
    def put(
        self, key: str, data: bytes, *, token: str, proceed: Callable[[], bool]
    ) -> Stored | None:
        """Replace ``key`` with ``data`` atomically once ``proceed()`` says yes; None if it
        said no (the old content stays). ``token`` names what an unfinished put may leave
        behind, so :meth:`discard` can remove it."""

    @abc.abstractmethod
    def spool(self, key: str, token: str) -> Path:
        """A local file, named by ``token``, to write ``key``'s next content into before
        :meth:`put_file` stores it: beside ``key`` in a folder (the rename is then atomic),
        in the temporary folder of this machine for an object store."""

    @abc.abstractmethod
    def put_file(self, key: str, spooled: Path, *, proceed: Callable[[], bool]) -> Stored | None:
        """Replace ``key`` with the file ``spooled`` (from :meth:`spool`) atomically, once
        ``proceed()`` says yes, without holding it in memory; None if it said no (the old
        content stays). The spooled file is gone afterwards either way."""

    def discard(self, key: str, token: str) -> None:
        """Remove what an unfinished put of ``key`` with ``token`` left behind here: its
        spooled file."""
        self.spool(key, token).unlink(missing_ok=True)

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole content of ``key``, from one read: one version, never a mix."""

    @abc.abstractmethod
    def snapshot(self, key: str, version: str = "") -> BinaryIO:
        """An open file holding one version of ``key`` whole, which replacing ``key`` later
        does not change, made without holding it in memory: for a reader that decodes a
        large partition a batch at a time. ``version`` is the one a listing gave, if known.
        Nothing of it stays once it is closed."""

    @abc.abstractmethod
    def list(self, folders: Sequence[str], *, recursive: bool = False) -> dict[str, Listed]:
        """The entries directly inside ``folders`` (at any depth if ``recursive``), by key,
        from one listing. Names starting with ``.`` (ours, unfinished) are left out."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` at ``key`` unless something is there already: whether it stored
        it. Two writers racing for one key never both succeed where the storage keeps that
        promise (an object store honouring conditional PUT does)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    @abc.abstractmethod
    def read_schema(self, key: str) -> pl.Schema:
        """The schema of the Parquet file at ``key``, from its footer alone."""
