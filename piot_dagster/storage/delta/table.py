"""A Delta table of partitions, on the Dagster side: opened, checked, committed to once per
run, and read back, through delta-rs.

**One commit per run.** The Ray tasks have written their data files; one transaction
adds them and removes every file of the run's partitions, which delta-rs derives from the
partition filter (``dagster_partition IN (...)``). Rows of other partitions are untouched.

**Concurrent writers.** delta-rs's conflict checker lets two overwrites of a partition
that has no file yet both commit, and the partition then holds both runs' rows (it
resolves the second commit against the first without seeing the first's files). So each
attempt is made against the newest version, with delta-rs's own retries off: the commit
succeeds as exactly the next version (the store's conditional PUT guarantees that), or
fails because another writer committed first, and then it is made again against that
writer's version. Each attempt derives its removals and its schema from the version it
commits on top of, so it never removes a file it has not seen, and two runs of one
partition leave the rows of the one that committed last.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from piot_dagster.errors import StorageError, listing
from piot_dagster.extras import import_extra
from piot_dagster.storage.base import Storage
from piot_dagster.storage.delta.types import (
    PARTITION_COLUMN,
    Column,
    arrow_schema,
    logical_schema,
)
from piot_dagster.storage.delta.writer import DeltaFile
from piot_dagster.storage.location import redact
from piot_dagster.storage.object_store import store_options

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["SCHEMA_MODES", "DeltaTarget"]

SCHEMA_MODES = (None, "merge")
# Attempts before a commit that other writers keep overtaking fails; waits between them
# grow from 50 ms to 2 s, with jitter so two writers do not retry in step.
_ATTEMPTS = 30
_WAIT_S = (0.05, 2.0)
_safe_locations: set[str] = set()


class DeltaTarget:
    """The Delta table at ``key`` of ``storage``; ``partitioned`` tables are partitioned by
    :data:`PARTITION_COLUMN`."""

    def __init__(self, storage: Storage, key: str, *, partitioned: bool) -> None:
        self.storage = storage
        self.key = key
        self.partitioned = partitioned
        self.uri = storage.uri(key)

    @property
    def _options(self) -> dict[str, str]:
        location = self.storage.location
        return {} if location.provider == "local" else store_options(location)

    # -- opening and checking ---------------------------------------------------------

    def open(self) -> DeltaTable | None:
        """The table's newest version, or None if there is no table yet."""
        DeltaTable = import_extra("deltalake").DeltaTable

        try:
            if not DeltaTable.is_deltatable(self.uri, self._options):
                return None
            table = DeltaTable(self.uri, storage_options=self._options)
        except Exception as exc:
            raise self._error(exc, "open") from None
        self._check_layout(table)
        return table

    def open_for_writing(self) -> DeltaTable | None:
        """:meth:`open`, before a run writes its files: a folder already holding files but
        no Delta log is an error, since it holds something else."""
        table = self.open()
        if table is not None:
            return table
        found = self.storage.list(self.key.split("/"), recursive=True)
        if found:
            raise StorageError(
                f"{self.uri} holds {len(found)} file(s) ({listing(sorted(found), limit=3)}) "
                f"but no Delta table (no _delta_log): choose another base_dir, or move "
                f"those files away"
            )
        return None

    def _check_layout(self, table: DeltaTable) -> None:
        wanted = [PARTITION_COLUMN] if self.partitioned else []
        found = list(table.metadata().partition_columns)
        if found != wanted:
            have = f"partitioned by {found}" if found else "not partitioned"
            need = f"partitioned by {wanted}" if wanted else "not partitioned"
            raise StorageError(
                f"the Delta table at {self.uri} is {have}, but this asset needs it {need}: it "
                f"was written by something else; choose another base_dir"
            )

    def check_commit_safety(self) -> None:
        """Refuse an object store that could let two commits of one version both land
        (delta-rs relies on conditional PUT): one probe per location and process."""
        location = self.storage.location
        if location.provider == "local" or location.uri in _safe_locations:
            return
        for key, value in location.options.items():
            if key.lower().removeprefix("aws_") == "conditional_put" and value == "disabled":
                raise StorageError(
                    f"storage_options for {location.uri} set {key}='disabled': Delta commits "
                    f"need conditional PUT to be safe with concurrent writers; remove it"
                )
        probe = f".piot-commit-probe-{uuid.uuid4().hex}"
        try:
            first, second = self.storage.create(probe, b""), self.storage.create(probe, b"")
        finally:
            self.storage.delete(probe)
        if not (first and not second):
            raise StorageError(
                f"the {location.provider} store behind {location.uri} does not honour "
                f"conditional writes (If-None-Match: *), which Delta commits rely on: two "
                f"runs committing at once could overwrite each other's commit. Use a store "
                f"that does (AWS S3, GCS, Azure, MinIO since 2024-11, Cloudflare R2), or keep "
                f"this table on a local or shared folder"
            )
        _safe_locations.add(location.uri)

    def schema(
        self, table: DeltaTable | None, columns: Sequence[Column], schema_mode: str | None
    ) -> pa.Schema:
        """The table schema a commit of ``columns`` gives: a new table's own, the table's
        as it is, or with the new columns added (``schema_mode="merge"``). A column whose
        dtype differs, or new or missing columns without ``merge``, is a ``ValueError``
        that names them."""
        every = list(columns)
        if self.partitioned:
            every.append(Column(PARTITION_COLUMN, pl.String(), pl.String(), {}))
        if table is None:
            return arrow_schema(every)
        current = pa.schema(table.schema().to_arrow())
        existing = logical_schema(current)
        changed = [c for c in every if c.name in existing and existing[c.name] != c.dtype]
        if changed:
            raise ValueError(
                "; ".join(_difference(c, existing[c.name]) for c in changed)
                + f" (Delta table at {self.uri}): cast the frame's columns to the table's types"
            )
        new = [c for c in every if c.name not in existing]
        missing = [name for name in existing if name not in {c.name for c in every}]
        if (new or missing) and schema_mode != "merge":
            parts = []
            if new:
                parts.append(f"has column(s) {[c.name for c in new]} that the table lacks")
            if missing:
                parts.append(f"lacks column(s) {missing} that the table has")
            raise ValueError(
                f"its frame {' and '.join(parts)} (Delta table at {self.uri}): set "
                f"metadata={{'schema_mode': 'merge'}} on the asset to change the table's "
                f"schema (missing columns are then null in these partitions), or return "
                f"the table's columns"
            )
        return pa.schema([*current, *arrow_schema(new)]) if new else current

    # -- committing -------------------------------------------------------------------

    def commit(
        self,
        files: Sequence[DeltaFile],
        columns: Sequence[Column],
        *,
        schema_mode: str | None,
        partitions: Sequence[str],
        properties: Mapping[str, Any],
    ) -> int:
        """Replace the rows of ``partitions`` (every row, for a table without partitions)
        with ``files`` in one transaction, whose commit carries ``properties``: the
        version committed."""
        deltalake = import_extra("deltalake")
        transaction = import_extra("deltalake.transaction")
        CommitFailedError = import_extra("deltalake.exceptions").CommitFailedError

        adds = [
            transaction.AddAction(
                f.path, f.bytes, dict(f.partition_values), f.modified_ms, True, f.stats
            )
            for f in files
        ]
        partition_by = [PARTITION_COLUMN] if self.partitioned else None
        last: Exception | None = None
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, min(_WAIT_S[1], _WAIT_S[0] * 2**attempt)))
            table = self.open()
            schema = self.schema(table, columns, schema_mode)
            try:
                if table is None:
                    transaction.create_table_with_add_actions(
                        self.uri,
                        deltalake.Schema.from_arrow(schema),
                        adds,
                        mode="error",
                        partition_by=partition_by,
                        storage_options=self._options,
                        commit_properties=transaction.CommitProperties(
                            custom_metadata=dict(properties)
                        ),
                    )
                    return 0
                table.create_write_transaction(
                    adds,
                    mode="overwrite",
                    schema=schema,
                    partition_by=partition_by,
                    partition_filters=(
                        [(PARTITION_COLUMN, "in", list(partitions))] if self.partitioned else None
                    ),
                    # One attempt at exactly the next version: see the module's docstring.
                    commit_properties=transaction.CommitProperties(
                        custom_metadata=dict(properties), max_commit_retries=0
                    ),
                )
                return table.version() + 1
            except CommitFailedError as exc:
                last = exc
            except Exception as exc:
                if table is None and "already exists" in str(exc):
                    last = exc  # another writer created it first: commit on top of it
                    continue
                raise self._error(exc, "commit to") from None
        raise StorageError(
            f"could not commit to the Delta table at {self.uri}: other writers committed "
            f"first {_ATTEMPTS} times in a row (last: {redact(str(last), self._options)}); "
            f"run it again"
        )

    # -- reading ----------------------------------------------------------------------

    def partitions(self, table: DeltaTable) -> set[str]:
        """The partition keys the table holds rows (or an empty file) of."""
        return {p[PARTITION_COLUMN] for p in table.partitions()}

    def _error(self, exc: Exception, doing: str) -> StorageError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageError(
            redact(f"cannot {doing} the Delta table at {self.uri}: {first}", self._options)
        )


def _difference(column: Column, table_dtype: pl.DataType) -> str:
    text = f"column {column.name!r} is {column.dtype} in the frame but {table_dtype} in the table"
    frame_dtype = column.dtype
    if (
        isinstance(frame_dtype, pl.Datetime)
        and isinstance(table_dtype, pl.Datetime)
        and frame_dtype.time_unit == table_dtype.time_unit
        and None not in (frame_dtype.time_zone, table_dtype.time_zone)
    ):
        text += f" (convert it with .dt.convert_time_zone({table_dtype.time_zone!r}))"
    return text
