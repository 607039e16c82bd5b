"""``source_change_sensor``: refresh the time partitions whose source rows changed."""

import datetime as dt
import hashlib
import json

import dagster as dg
from sqlglot import exp

from piot_dagster.dagster.partitions import partition_unit
from piot_dagster.engine.periods import period_start
from piot_dagster.sql.connection import Connection, DatabaseError
from piot_dagster.sql.pushdown import as_subquery, parse_query

__all__ = ["source_change_sensor"]

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
Fingerprints = dict[str, list[object]]


def source_change_sensor(
    asset: dg.AssetsDefinition,
    *,
    connection: str,
    query: str,
    date_column: str,
    name: str | None = None,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that re-materializes the partitions of ``asset`` whose source rows changed.

    Each tick runs one aggregate query in the database, ``SELECT <day>, COUNT(*),
    MAX(<date_column>) FROM (<query>) GROUP BY <day>``, and folds the days into the
    asset's partitions: a partition's fingerprint is its row count and latest timestamp.
    Partitions whose fingerprint differs from the cursor's are requested, with run keys
    derived from the fingerprints (a retried tick requests nothing new): one partition as
    a partition run, several as one range run. The first tick records the fingerprints
    and requests nothing; backfills are for history. Days are the database's calendar
    days of ``date_column`` (UTC for tz-aware columns), so the asset's partitions should
    be in UTC too.

    Examples
    --------
    >>> sensor = source_change_sensor(
    ...     trades, connection="sqlite:///data/trades.db",
    ...     query="SELECT ts, symbol, price FROM trades", date_column="ts",
    ... )  # doctest: +SKIP
    """
    if not isinstance(asset, dg.AssetsDefinition):
        raise TypeError(
            f"source_change_sensor: asset must be an asset definition (a function decorated "
            f"with @dg.asset), not {type(asset).__name__}"
        )
    if not isinstance(date_column, str) or not date_column:
        raise TypeError(
            f"source_change_sensor: date_column must name a column of the query, "
            f"not {date_column!r}"
        )
    partitions_def = asset.partitions_def
    try:
        unit = partition_unit(partitions_def)
        if unit == "hourly":
            raise ValueError("the sensor compares days of rows: partitions must be days or longer")
    except (TypeError, ValueError) as exc:
        named = f"source_change_sensor: asset {asset.key.to_user_string()}: {exc}"
        raise type(exc)(named) from None
    source = Connection.parse(connection)
    statement = _daily_fingerprint_sql(
        parse_query(query, source.dialect), date_column, source.dialect
    )
    key = asset.key

    @dg.sensor(
        name=name or f"{key.to_python_identifier()}_source_changes",
        asset_selection=[key],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            days = _read(source, statement)
        except DatabaseError as exc:
            return dg.SkipReason(f"the source could not be read: {exc}")
        current = _by_partition(days, unit, partitions_def)  # type: ignore[arg-type]
        if context.cursor is None:
            return dg.SensorResult(run_requests=[], cursor=json.dumps(current))
        previous: Fingerprints = json.loads(context.cursor)
        changed = sorted(
            (k for k in current.keys() | previous.keys() if current.get(k) != previous.get(k)),
            key=lambda k: partitions_def.time_window_for_partition_key(k).start,  # type: ignore[union-attr]
        )
        return dg.SensorResult(
            run_requests=_requests(key, changed, current), cursor=json.dumps(current)
        )

    return _sensor


def _daily_fingerprint_sql(query: exp.Query, column: str, dialect: str) -> str:
    ts = exp.column(column, quoted=True)
    # SQLite keeps timestamps as ISO text: the day is its first ten characters.
    day = (
        exp.Substring(this=ts, start=exp.Literal.number(1), length=exp.Literal.number(10))
        if dialect == "sqlite"
        else exp.cast(ts, "DATE")
    )
    select = (
        exp.select(
            exp.alias_(day, "day"),
            exp.alias_(exp.Count(this=exp.Star()), "n"),
            exp.alias_(exp.Max(this=ts.copy()), "latest"),
        )
        .from_(as_subquery(query))
        .where(exp.not_(exp.Is(this=ts.copy(), expression=exp.Null())))
        .group_by(exp.Literal.number(1))
    )
    return select.sql(dialect=dialect)


def _read(source: Connection, statement: str) -> list[tuple[object, int, object]]:
    def fetch() -> list[tuple[object, int, object]]:
        with source.open() as conn:
            if source.dialect == "duckdb":
                return conn.sql(statement).fetchall()
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall()

    return source.call(f"the fingerprint query {statement!r} failed", fetch)


def _by_partition(
    days: list[tuple[object, int, object]],
    unit: str,
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> Fingerprints:
    valid = set(partitions_def.get_partition_keys())
    folded: Fingerprints = {}
    for day, count, latest in days:
        first = period_start(dt.date.fromisoformat(str(day)[:10]), unit)  # type: ignore[arg-type]
        key = first.strftime(partitions_def.fmt)
        if key not in valid:
            continue
        rows, newest = folded.get(key, [0, ""])
        folded[key] = [int(rows) + int(count), max(str(newest), str(latest))]  # type: ignore[call-overload]
    return folded


def _requests(key: dg.AssetKey, changed: list[str], current: Fingerprints) -> list[dg.RunRequest]:
    if not changed:
        return []
    digest = hashlib.sha256(
        json.dumps([[k, current.get(k)] for k in changed]).encode()
    ).hexdigest()[:16]
    if len(changed) == 1:
        return [
            dg.RunRequest(
                partition_key=changed[0], asset_selection=[key], run_key=f"{changed[0]}:{digest}"
            )
        ]
    return [
        dg.RunRequest(
            asset_selection=[key],
            tags={RANGE_START: changed[0], RANGE_END: changed[-1]},
            run_key=f"{changed[0]}...{changed[-1]}:{digest}",
        )
    ]
