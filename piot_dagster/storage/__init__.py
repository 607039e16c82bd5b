"""Storage: where partition files live, and writing them atomically.

:func:`open_storage` gives a :class:`~piot_dagster.storage.base.Storage` for a
``base_dir``: a local or shared folder (a temporary file and a rename) or an object store
(one PUT per partition, through obstore). Parquet encoding lives apart, in
:mod:`~piot_dagster.storage.parquet`.
"""

from __future__ import annotations

from collections.abc import Mapping

from piot_dagster.storage.base import Listed, Storage, Stored
from piot_dagster.storage.local import LocalStorage
from piot_dagster.storage.location import SUPPORTED, Location, is_secret, parse_location, redact
from piot_dagster.storage.object_store import ObjectStorage
from piot_dagster.storage.partition_writer import PartitionWriter, WrittenFile, WrittenFiles

__all__ = [
    "SUPPORTED",
    "Listed",
    "Location",
    "PartitionWriter",
    "Storage",
    "Stored",
    "WrittenFile",
    "WrittenFiles",
    "is_secret",
    "open_storage",
    "redact",
]


def open_storage(base_dir: object, storage_options: Mapping[str, str] | None = None) -> Storage:
    """The storage at ``base_dir`` (a path or a URI), with Polars-style ``storage_options``.

    Examples
    --------
    >>> open_storage("s3://trades/daily", {"aws_region": "eu-west-1"})
    ObjectStorage('s3://trades/daily')
    """
    location = parse_location(base_dir, storage_options)
    if location.provider == "local":
        return LocalStorage(location)
    storage = ObjectStorage(location)
    storage.store  # noqa: B018  (made now, so unknown options fail here, not in a task)
    return storage
