"""A SQL table as an observable source asset, and the sensor that refreshes exactly the
partitions whose rows changed.

One aggregate query per tick, ``SELECT <day>, COUNT(*), MAX(<date>), <checksum> FROM
(<query>) GROUP BY <day>``, gives each day a fingerprint; the checksum is an
order-independent sum of a hash of each row's columns, computed by the database, so an
in-place update with the same row count and latest timestamp is seen too. Days fold into
the asset's partitions. Each partition's fingerprint is its data version, kept where
Dagster keeps data versions: as observations of the source asset, per partition (the
sensor's cursor holds nothing per partition).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import sqlite3
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dagster as dg
from sqlglot import exp

from piot_dagster.dagster._compat import DATA_VERSION_TAG, latest_data_versions
from piot_dagster.dagster.partitions import partition_unit
from piot_dagster.dagster.previews import using_preview
from piot_dagster.engine.periods import TimeUnit, period_start
from piot_dagster.sql.connection import Connection, DatabaseError
from piot_dagster.sql.dialects import Dialect
from piot_dagster.sql.pushdown import embed, parse_query
from piot_dagster.sql.schema import discover_schema

__all__ = ["SourceTable"]

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# The data version of a partition with no rows.
EMPTY = "empty"
# SQLite has no hash function: the sensor's read-only connection lends it one.
_SQLITE_HASH = "piot_row_hash"


@dataclass(frozen=True)
class SourceTable:
    """The rows of ``query`` on ``connection``, by the partitions of ``partitions_def``
    (days or longer, counted by the database's calendar day of ``date_column``; UTC for
    tz-aware columns).

    ``asset`` is an observable source asset: observing it records each partition's data
    version. :meth:`sensor` refreshes an asset that reads this table, exactly the
    partitions whose rows changed. ``checksum_columns`` are the columns whose values the
    fingerprint covers (default: every column of ``query``).

    Examples
    --------
    >>> trades_table = SourceTable(
    ...     "trades_table",
    ...     connection="sqlite:///data/trades.db",
    ...     query="SELECT ts, symbol, price FROM trades",
    ...     date_column="ts",
    ...     partitions_def=time_partitions("daily", "2022-01-01"),
    ... )  # doctest: +SKIP
    >>> @dg.asset(deps=[trades_table.asset], ...)  # doctest: +SKIP
    ... def trades_daily(): ...
    >>> refresh = trades_table.sensor(trades_daily)  # doctest: +SKIP
    """

    name: str
    connection: str = field(repr=False)  # it may hold a password
    query: str
    date_column: str
    partitions_def: dg.PartitionsDefinition
    checksum_columns: Sequence[str] | None = None
    _unit: TimeUnit = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Checked now, without the database: a code location loads before it is reachable.
        where = f"SourceTable {self.name!r}"
        if not isinstance(self.date_column, str) or not self.date_column:
            raise TypeError(
                f"{where}: date_column must name a column of the query, not {self.date_column!r}"
            )
        try:
            unit = partition_unit(self.partitions_def)
        except (TypeError, ValueError) as exc:
            exc.add_note(f"in {where}")
            raise
        if unit == "hourly":
            raise ValueError(
                f"{where}: it fingerprints days of rows: partitions must be days or longer"
            )
        object.__setattr__(self, "_unit", unit)
        try:
            source = Connection.parse(self.connection)
            # An ODBC string's dialect is known once its driver is asked, at first use.
            if source.driver != "odbc":
                parse_query(self.query, source.dialect)
        except ValueError as exc:
            exc.add_note(f"in {where}")
            raise

    @cached_property
    def _source(self) -> Connection:
        return Connection.parse(self.connection).resolved()

    @cached_property
    def statement(self) -> str:
        """The one aggregate query a fingerprint takes (its columns checked against the
        query's, which the database tells once)."""
        source = self._source
        parsed = parse_query(self.query, source.dialect)
        columns = source.call(
            f"query {self.query!r} failed", lambda: discover_schema(source, parsed)
        ).names()
        wanted = columns if self.checksum_columns is None else list(self.checksum_columns)
        unknown = [c for c in [self.date_column, *wanted] if c not in columns]
        if unknown or not wanted:
            raise ValueError(
                f"SourceTable {self.name!r}: date_column and checksum_columns must be columns "
                f"of the query, not {unknown or 'none'}; its columns are {columns}"
            )
        try:
            return _fingerprint_sql(parsed, self.date_column, wanted, source)
        except ValueError as exc:
            exc.add_note(f"in SourceTable {self.name!r}")
            raise

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.name)

    def versions(self) -> dict[str, str]:
        """Each partition's data version now: ``<rows>:<latest>:<checksum>``, hashed."""
        folded: dict[str, list[Any]] = {}
        valid = set(self.partitions_def.get_partition_keys())
        for day, count, latest, checksum in _read(self._source, self.statement):
            first = period_start(_day(day), self._unit)
            key = first.strftime(self.partitions_def.fmt)  # type: ignore[attr-defined]
            if key not in valid:
                continue
            rows, newest, total = folded.get(key, [0, "", 0])
            folded[key] = [rows + int(count), max(newest, str(latest)), total + int(checksum)]
        return {
            key: hashlib.sha256(":".join(map(str, value)).encode()).hexdigest()[:16]
            for key, value in folded.items()
        }

    @cached_property
    def asset(self) -> dg.AssetsDefinition:
        """The table as an observable source asset, partitioned like the assets that read
        it; observing it records every partition's data version."""
        table = self

        def _observe() -> dg.DataVersionsByPartition:
            return dg.DataVersionsByPartition(
                {k: dg.DataVersion(v) for k, v in table.versions().items()}
            )

        with using_preview("`observable_source_asset`"):
            return dg.observable_source_asset(
                name=self.name,
                partitions_def=self.partitions_def,
                # Parsed, not resolved: loading a code location never connects.
                description=f"The rows of `{self.query}` on "
                f"{Connection.parse(self.connection).redacted}.",
                group_name="sources",
            )(_observe)

    def sensor(
        self,
        asset: dg.AssetsDefinition,
        *,
        name: str | None = None,
        minimum_interval_seconds: int = 60,
        default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    ) -> dg.SensorDefinition:
        """A sensor that re-materializes exactly the partitions of ``asset`` whose rows
        changed in this table: each tick is one aggregate query; changed partitions get a
        new data version (an observation of :attr:`asset`) and a run, contiguous ones one
        range run, never a gap filled. The first tick records the versions and requests
        nothing: backfills are for history."""
        if not isinstance(asset, dg.AssetsDefinition):
            raise TypeError(
                f"SourceTable {self.name!r}: sensor() takes an asset definition (a function "
                f"decorated with @dg.asset), not {type(asset).__name__}"
            )
        if asset.partitions_def != self.partitions_def:
            raise ValueError(
                f"SourceTable {self.name!r}: asset {asset.key.to_user_string()} is "
                f"partitioned differently from the table; give both the same partitions"
            )
        table, target = self, asset.key

        @dg.sensor(
            name=name or f"{target.to_python_identifier()}_source_changes",
            asset_selection=[target],
            minimum_interval_seconds=minimum_interval_seconds,
            default_status=default_status,
        )
        def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
            started = time.perf_counter()
            try:
                current = table.versions()
            except DatabaseError as exc:
                return dg.SensorResult(skip_reason=f"the source could not be read: {exc}")
            known = table.recorded(context.instance)
            keys = table.partitions_def.get_partition_keys()
            changed = [k for k in keys if current.get(k, EMPTY) != known.get(k, EMPTY)]
            seconds = time.perf_counter() - started
            checked = f"checked {len(keys):,} partitions in {seconds:.2f} s"
            if not changed:
                return dg.SensorResult(skip_reason=f"{checked}: no change")
            observations = [
                dg.AssetObservation(
                    table.key, partition=k, tags={DATA_VERSION_TAG: current.get(k, EMPTY)}
                )
                for k in changed
            ]
            if not known:
                return dg.SensorResult(
                    asset_events=observations,
                    skip_reason=f"{checked}: recorded their versions (the first tick runs nothing)",
                )
            return dg.SensorResult(
                run_requests=_requests(target, changed, keys, current), asset_events=observations
            )

        return _sensor

    def recorded(self, instance: dg.DagsterInstance) -> dict[str, str]:
        """Each partition's latest recorded data version, from one query of the instance."""
        return latest_data_versions(instance, self.key)


def _day(value: object) -> dt.date:
    return dt.date.fromisoformat(str(value)[:10])


def _fingerprint_sql(query: str, date_column: str, columns: list[str], source: Connection) -> str:
    ts = exp.column(date_column, quoted=True)
    fields = [exp.column(c, quoted=True) for c in columns]
    dialect: Dialect = source.dialect
    if dialect.name == "sqlite" and source.driver != "sqlite":
        raise ValueError(
            "SQLite has no hash function to fingerprint rows with, and only a sqlite:/// "
            "connection can lend it one: use connection='sqlite:///<path>' here"
        )
    if dialect.name == "sqlite":
        # SQLite keeps timestamps as ISO text: the day is its first ten characters.
        day: exp.Expression = exp.Substring(
            this=ts, start=exp.Literal.number(1), length=exp.Literal.number(10)
        )
        row_hash: exp.Expression = exp.Anonymous(this=_SQLITE_HASH, expressions=fields)
    elif dialect.name == "duckdb":
        day = exp.cast(ts, "DATE")
        row_hash = exp.Anonymous(this="hash", expressions=fields)
    elif dialect.name == "mysql":
        # The first 60 bits of the MD5 of the row's quoted values (QUOTE(NULL) is NULL
        # unquoted), as a number; the day in the session's zone, UTC.
        day = exp.cast(ts, "DATE")
        quoted = [exp.Anonymous(this="QUOTE", expressions=[f]) for f in fields]
        text = exp.Anonymous(this="CONCAT_WS", expressions=[exp.Literal.string("|"), *quoted])
        digits = exp.Anonymous(
            this="SUBSTR",
            expressions=[
                exp.Anonymous(this="MD5", expressions=[text]),
                exp.Literal.number(1),
                exp.Literal.number(15),
            ],
        )
        number = exp.Anonymous(
            this="CONV", expressions=[digits, exp.Literal.number(16), exp.Literal.number(10)]
        )
        row_hash = exp.cast(number, exp.DataType.build("UNSIGNED", dialect="mysql"))
    elif dialect.name == "postgres":
        day = exp.cast(ts, "DATE")
        # The first 60 bits of the MD5 of the row's text, as a number.
        row = exp.cast(exp.Tuple(expressions=fields), "TEXT").sql(dialect="postgres")
        row_hash = exp.maybe_parse(
            f"('x' || SUBSTR(MD5({row}), 1, 15))::BIT(60)::BIGINT", dialect="postgres"
        )
    else:
        raise ValueError(
            f"rows cannot be fingerprinted on {dialect.name} yet (SQLite, DuckDB, PostgreSQL "
            "and MySQL/MariaDB can); observe this table from one of those"
        )
    select = (
        exp.select(
            exp.alias_(day, "day"),
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Max(this=ts.copy()), "latest"),
            exp.alias_(exp.cast(exp.Sum(this=row_hash), "TEXT"), "checksum"),
        )
        .where(exp.Not(this=exp.Paren(this=exp.Is(this=ts.copy(), expression=exp.Null()))))
        .group_by(exp.Literal.number(1))
    )
    return embed(select, query, dialect)


def _row_hash(*values: object) -> int:
    """A stable 32-bit hash of a row's values, for SQLite (Python's hash() is salted)."""
    return zlib.crc32(repr(values).encode())


@contextlib.contextmanager
def _sqlite(source: Connection) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
    conn.create_function(_SQLITE_HASH, -1, _row_hash, deterministic=True)
    try:
        yield conn
    finally:
        conn.close()


def _read(source: Connection, statement: str) -> list[tuple[Any, ...]]:
    def fetch() -> list[tuple[Any, ...]]:
        if source.driver == "sqlite":
            with _sqlite(source) as conn:
                return conn.execute(statement).fetchall()
        if source.driver == "mysql":
            return [
                tuple(row.values()) for b in source.read(statement, None) for row in b.to_pylist()
            ]
        with source.open() as conn:
            if source.driver == "duckdb":
                return conn.sql(statement).fetchall()
            if source.driver == "odbc":
                if source.dialect.utc_session:
                    conn.execute(source.dialect.utc_session)
                return [tuple(row) for row in conn.execute(statement).fetchall()]
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall()

    return source.call(f"the fingerprint query {statement!r} failed", fetch)


def _requests(
    target: dg.AssetKey, changed: list[str], keys: list[str], current: dict[str, str]
) -> list[dg.RunRequest]:
    """One run per stretch of adjacent changed partitions: never a gap filled."""
    position = {k: i for i, k in enumerate(keys)}
    stretches: list[list[str]] = []
    for key in changed:
        if stretches and position[key] == position[stretches[-1][-1]] + 1:
            stretches[-1].append(key)
        else:
            stretches.append([key])
    requests = []
    for stretch in stretches:
        digest = hashlib.sha256(
            "|".join(f"{k}={current.get(k, EMPTY)}" for k in stretch).encode()
        ).hexdigest()[:16]
        first, last = stretch[0], stretch[-1]
        if first == last:
            requests.append(
                dg.RunRequest(
                    partition_key=first, asset_selection=[target], run_key=f"{first}:{digest}"
                )
            )
        else:
            requests.append(
                dg.RunRequest(
                    asset_selection=[target],
                    tags={RANGE_START: first, RANGE_END: last},
                    run_key=f"{first}...{last}:{digest}",
                )
            )
    return requests
