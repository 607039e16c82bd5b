"""The source table and its refresh sensor: exactly the changed partitions, in-place updates
seen through a checksum the database computes, versions kept as Dagster observations; on
real SQLite, DuckDB and PostgreSQL."""

import datetime as dt
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._core.definitions.observe import observe

import piot_dagster
from piot_dagster import SourceTable, time_partitions
from tests.databases import drop_postgres, write_postgres

DAYS = time_partitions("daily", "2024-01-01", end="2024-05-01")
QUERY = "SELECT ts, symbol, price FROM trades"


def trades() -> pl.DataFrame:
    """Every three hours from 2024-01-01 to 2024-04-30, two symbols."""
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 4, 30, 21), "3h", eager=True
    )
    frame = pl.DataFrame({"ts": stamps}).join(pl.DataFrame({"symbol": ["A", "B"]}), how="cross")
    return frame.with_columns(price=pl.int_range(pl.len()).cast(pl.Float64) / 8)


class Table:
    """A trades table in one database, and the statements that change it."""

    def __init__(self, dialect: str, tmp_path: Path, postgres_url: str | None) -> None:
        self.dialect = dialect
        frame = trades()
        if dialect == "sqlite":
            path = tmp_path / "trades.db"
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL)")
            conn.executemany(
                "INSERT INTO trades VALUES (?, ?, ?)",
                frame.with_columns(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S")).rows(),
            )
            conn.commit()
            conn.close()
            self.uri, self.name, self.path = f"sqlite:///{path}", "trades", path
        elif dialect == "duckdb":
            path = tmp_path / "trades.duckdb"
            conn = duckdb.connect(str(path))
            conn.register("frame", frame.to_arrow())
            conn.execute("CREATE TABLE trades AS SELECT * FROM frame")
            conn.close()
            self.uri, self.name, self.path = f"duckdb:///{path}", "trades", path
        else:
            assert postgres_url
            self.uri, self.path = postgres_url, None
            self.name = write_postgres(postgres_url, frame, prefix="piot_source", index="ts")

    def run(self, statement: str) -> None:
        statement = statement.replace("trades", f'"{self.name}"')
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.path)
            conn.execute(statement)
            conn.commit()
            conn.close()
        elif self.dialect == "duckdb":
            conn = duckdb.connect(str(self.path))
            conn.execute(statement)
            conn.close()
        else:
            import adbc_driver_postgresql.dbapi

            with adbc_driver_postgresql.dbapi.connect(self.uri) as conn, conn.cursor() as cur:
                cur.execute(statement)
                conn.commit()

    @property
    def settings(self) -> dict:
        """A SourceTable's settings for this table, daily."""
        query = f'SELECT ts, symbol, price FROM "{self.name}"'
        return {"connection": self.uri, "query": query, "date_column": "ts", "partitions_def": DAYS}


@pytest.fixture(params=["sqlite", "duckdb", "postgres"])
def table(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = Table(request.param, tmp_path, url)
    yield made
    if url:
        drop_postgres(url, made.name)


def refreshed(source: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(name="trades_daily", partitions_def=DAYS, deps=[source.asset])
    def trades_daily() -> None: ...

    return trades_daily


def tick(source: SourceTable, sensor: dg.SensorDefinition, instance: dg.DagsterInstance):
    """One tick as the daemon runs it: evaluated, and its observations recorded."""
    defs = dg.Definitions(assets=[source.asset, refreshed(source)], sensors=[sensor])
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def requested(result) -> list[object]:
    """Each run request as its partition key, or its (first, last) range."""
    return [
        r.partition_key
        or (
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests
    ]


def test_the_sensor_requests_exactly_the_days_appended_to_or_updated_in_place(table):
    source = SourceTable("trades_table", **table.settings)
    sensor = source.sensor(refreshed(source), name="trades_daily_source_changes")
    with dg.instance_for_test() as instance:
        first = tick(source, sensor, instance)
        assert first.run_requests == []
        assert len(source.recorded(instance)) == 121, "the first tick records every day"
        # An append on one day, and two months later an in-place update that keeps the
        # day's row count and latest timestamp.
        table.run("INSERT INTO trades VALUES ('2024-01-05 12:34:00', 'C', 1.5)")
        table.run(
            "UPDATE trades SET price = price + 1 WHERE symbol = 'A' AND ts = '2024-03-20 09:00:00'"
        )
        changed = tick(source, sensor, instance)
        quiet = tick(source, sensor, instance)

    assert requested(changed) == ["2024-01-05", "2024-03-20"], "nothing between them"
    assert quiet.run_requests == []
    assert quiet.skip_message.startswith("checked 121 partitions in ")
    assert quiet.skip_message.endswith(" s: no change")
    assert not changed.cursor, "the versions live in Dagster, not in the cursor"
    assert not quiet.cursor


def test_contiguous_changed_days_share_one_range_run_and_gaps_are_not_filled(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings)
    sensor = source.sensor(refreshed(source))
    with dg.instance_for_test() as instance:
        tick(source, sensor, instance)
        for day in ("2024-02-10", "2024-02-11", "2024-02-12", "2024-02-20"):
            table.run(f"INSERT INTO trades VALUES ('{day} 01:00:00', 'C', 2.0)")
        table.run("DELETE FROM trades WHERE ts LIKE '2024-04-01%'")
        result = tick(source, sensor, instance)

    assert requested(result) == [("2024-02-10", "2024-02-12"), "2024-02-20", "2024-04-01"]
    assert len({r.run_key for r in result.run_requests}) == 3


def test_observing_the_source_asset_records_every_partitions_version(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings)
    with dg.instance_for_test() as instance:
        assert observe([source.asset], instance=instance).success
        assert source.recorded(instance) == source.versions()
    assert len(source.versions()) == 121


def test_checksum_columns_choose_what_an_in_place_update_must_touch_to_be_seen(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings, checksum_columns=["ts", "symbol"])
    before = source.versions()
    table.run("UPDATE trades SET price = -1 WHERE ts LIKE '2024-01-03%'")
    assert source.versions() == before, "price is not a checksum column"
    table.run("UPDATE trades SET symbol = 'Z' WHERE ts LIKE '2024-01-03%'")
    assert {k for k in before if source.versions()[k] != before[k]} == {"2024-01-03"}


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"date_column": ""}, TypeError, "date_column must name a column"),
        (
            {"partitions_def": dg.HourlyPartitionsDefinition("2024-01-01-00:00")},
            ValueError,
            "days or longer",
        ),
        ({"query": "DROP TABLE trades"}, ValueError, "exactly one SELECT"),
    ],
)
def test_a_source_table_refuses_bad_settings_naming_itself(tmp_path, kwargs, error, names):
    settings = {
        "connection": f"sqlite:///{tmp_path / 'none.db'}",
        "query": QUERY,
        "date_column": "ts",
        "partitions_def": DAYS,
        **kwargs,
    }
    with pytest.raises(error, match=f"SourceTable 'trades_table': .*{names}"):
        SourceTable("trades_table", **settings)


def test_checksum_columns_the_query_lacks_fail_the_tick_naming_them(tmp_path):
    table = Table("sqlite", tmp_path, None)
    source = SourceTable("trades_table", **table.settings, checksum_columns=["price", "volume"])
    with pytest.raises(
        ValueError, match=r"not \['volume'\]; its columns are \['ts', 'symbol', 'price'\]"
    ):
        source.versions()


def test_days_fold_into_monthly_partitions(tmp_path):
    table = Table("sqlite", tmp_path, None)
    months = time_partitions("monthly", "2024-01-01", end="2024-05-01")
    source = SourceTable("trades_table", **{**table.settings, "partitions_def": months})
    assert sorted(source.versions()) == ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    before = source.versions()
    table.run("INSERT INTO trades VALUES ('2024-02-29 23:00:00', 'C', 1.0)")
    assert {k for k, v in source.versions().items() if v != before[k]} == {"2024-02-01"}


def test_a_tick_whose_source_cannot_be_read_is_skipped_saying_why(tmp_path):
    settings = {**Table("sqlite", tmp_path, None).settings}
    source = SourceTable("trades_table", **{**settings, "connection": "sqlite:///no/such.db"})
    with dg.instance_for_test() as instance:
        result = tick(source, source.sensor(refreshed(source)), instance)
    assert result.run_requests == []
    assert "the source could not be read" in result.skip_message


def test_source_change_sensor_is_the_one_call_form(tmp_path):
    table = Table("sqlite", tmp_path, None)
    asset = refreshed(SourceTable("trades_table", **table.settings))
    settings = {k: v for k, v in table.settings.items() if k != "partitions_def"}
    sensor = piot_dagster.source_change_sensor(asset, **settings)
    source = SourceTable("trades_daily_source", **table.settings)
    with dg.instance_for_test() as instance:
        tick(source, sensor, instance)
        table.run("INSERT INTO trades VALUES ('2024-04-02 01:00:00', 'C', 1.0)")
        assert requested(tick(source, sensor, instance)) == ["2024-04-02"]
    assert sensor.name == "trades_daily_source_changes"


def test_a_password_in_the_connection_shows_nowhere():
    table = SourceTable(
        "trades_table",
        connection="postgresql://reader:s3cret-pw@127.0.0.1:1/markets",
        query=QUERY,
        date_column="ts",
        partitions_def=DAYS,
    )
    with pytest.raises(piot_dagster.DatabaseError) as error:
        table.versions()
    shown = [repr(table), table.asset.description or "", str(error.value)]
    assert not [text for text in shown if "s3cret-pw" in text]
