"""Faults and races injected for real: killed workers, interrupted runs, concurrent writers
of one partition file, and the permissions of what is written."""

import datetime as dt
import itertools
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import ray
from deltalake import DeltaTable

from piot_dagster import RayParquetIOManager, RayResource, time_partitions
from piot_dagster.engine import ray_tasks
from piot_dagster.engine.periods import period_of_window, window_filter
from piot_dagster.storage import PartitionWriter, open_storage
from tests import slow_location
from tests.dagster_server import BIN, ROOT, dagster_dev, finished, reset_signals, submit, wait_for

SLOW_LOCATION = ROOT / "tests" / "slow_location.py"

WRITER = textwrap.dedent(
    """
    import sys
    import polars as pl
    from piot_dagster.storage import PartitionWriter, open_storage

    base_dir, key, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    frame = pl.DataFrame({"version": [rows] * rows})
    for _ in range(40):
        PartitionWriter(open_storage(base_dir), key, None).write(frame.lazy())
    """
)


def test_concurrent_writers_of_one_partition_never_expose_a_partial_file(tmp_path):
    path = tmp_path / "asset" / "2024-01-01.parquet"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), "asset/2024-01-01.parquet", str(rows)]
        )
        for rows in (50_000, 70_000)
    ]
    reads = 0
    while any(w.poll() is None for w in writers):
        if path.exists():
            # One open file is one version; a partial or mixed file would fail or mismatch.
            with open(path, "rb") as f:
                frame = pl.read_parquet(f)
            version = frame["version"][0]
            assert frame.height == version, "a file mixes or truncates versions"
            assert frame["version"].n_unique() == 1
            reads += 1
        time.sleep(0.001)
    assert all(w.returncode == 0 for w in writers)
    assert reads > 10
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary leftovers"


@pytest.mark.usefixtures("ray_cluster")
def test_written_files_and_folders_are_not_world_writable(tmp_path):
    @dg.asset(partitions_def=time_partitions("daily", "2024-01-01"), metadata={"date_column": "d"})
    def dated() -> pl.DataFrame:
        return pl.DataFrame(
            {"d": pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 1, 3), eager=True)}
        )

    base = tmp_path / "assets"
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(base))
    assert dg.materialize(
        [dated], partition_key="2024-01-02", resources={"io_manager": manager}
    ).success
    written = [base, *base.rglob("*")]
    assert any(p.suffix == ".parquet" for p in written)
    for path in written:
        assert not path.stat().st_mode & stat.S_IWOTH, f"{path} is world-writable"


def pid_then_wait(pid_file: Path, price_marker: float) -> pl.Expr:
    """Passes ``price`` through; the first task to see ``price_marker`` writes its worker's
    pid to ``pid_file`` and waits to be killed."""
    target = str(pid_file)

    def step(price: pl.Series) -> pl.Series:
        import os as _os
        import time as _time

        if price_marker in price.to_list() and not _os.path.exists(target):
            with open(target + ".tmp", "w") as f:
                f.write(str(_os.getpid()))
            _os.replace(target + ".tmp", target)
            _time.sleep(30)  # killed long before this ends
        return price

    return pl.col("price").map_batches(step, return_dtype=pl.Float64, is_elementwise=True)


def kill_when_ready(pid_file: Path) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def hourly(days: int) -> pl.DataFrame:
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1),
        dt.datetime(2024, 1, 1) + dt.timedelta(hours=24 * days - 1),
        "1h",
        eager=True,
    )
    return pl.DataFrame(
        {"ts": stamps, "price": pl.int_range(stamps.len(), eager=True).cast(pl.Float64)}
    )


@pytest.mark.usefixtures("ray_cluster")
def test_a_worker_killed_mid_collect_is_retried_without_losing_or_duplicating_rows(tmp_path):
    frame = hourly(6)
    lf = frame.lazy().with_columns(price=pid_then_wait(tmp_path / "pid", 60.0))  # day 3
    query = lf.filter(
        pl.col("ts").is_between(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 7), closed="left")
    )
    killer = kill_when_ready(tmp_path / "pid")
    got = query.piot.execute_on_ray(date_column="ts", time_unit="daily").collect()
    killer.join()
    assert got.equals(frame)


@pytest.mark.usefixtures("ray_cluster")
def test_a_worker_killed_mid_backfill_is_retried_and_every_file_is_complete(tmp_path):
    frame = hourly(4)

    @dg.asset(
        partitions_def=time_partitions("daily", "2024-01-01"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts"},
    )
    def prices() -> pl.LazyFrame:
        return frame.lazy().with_columns(price=pid_then_wait(tmp_path / "pid", 30.0))  # day 2

    base = tmp_path / "assets"
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(base))
    tags = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-01-04",
    }
    killer = kill_when_ready(tmp_path / "pid")
    assert dg.materialize([prices], tags=tags, resources={"io_manager": manager}).success
    killer.join()
    stored = pl.concat([pl.read_parquet(p) for p in sorted((base / "prices").iterdir())])
    assert stored.equals(frame)
    assert not list(base.rglob("*.tmp"))


# Interrupted runs -------------------------------------------------------------------------


def count(events: Path, what: str) -> int:
    return events.read_text().split().count(what) if events.exists() else 0


def signal_after(events: Path, ends: int, send: Callable[[], None]) -> threading.Thread:
    """Calls ``send`` once ``ends`` tasks have finished, mid-way through the fan-out."""

    def wait_then_send() -> None:
        deadline = time.monotonic() + 120
        while count(events, "end") < ends and time.monotonic() < deadline:
            time.sleep(0.05)
        send()

    thread = threading.Thread(target=wait_then_send)
    thread.start()
    return thread


def assert_no_task_runs_on(events: Path) -> None:
    """No task starts or ends any more: none was left running."""
    before = events.read_text()
    time.sleep(4 * slow_location.TASK_SECONDS)
    assert events.read_text() == before, "tasks kept running after the interrupt"


# A user's script: a slow collect, Ctrl-C, then another query on the same Ray driver.
CTRL_C = textwrap.dedent(
    """
    import datetime as dt, sys, time
    import cloudpickle, polars as pl, ray
    import piot_dagster, tests
    from tests import slow_location

    cloudpickle.register_pickle_by_value(tests)
    ray.init(log_to_driver=False)
    window = pl.col("ts").is_between(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 21))
    prices = slow_location.prices(1).lazy()
    slow = prices.with_columns(version=slow_location.slowly(sys.argv[1])).filter(window)
    try:
        slow.piot.execute_on_ray(date_column="ts", time_unit="daily", max_concurrency=20).collect()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    time.sleep(3)  # the session goes on: tasks not stopped would run meanwhile
    print(prices.filter(window).piot.execute_on_ray(date_column="ts", time_unit="daily")
          .collect().height)
    """
)


def test_ctrl_c_during_a_collect_stops_the_tasks_in_flight(tmp_path, ray_cluster):
    events = tmp_path / "events"
    script = subprocess.Popen(
        [sys.executable, "-c", CTRL_C, str(events)],
        env={**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=reset_signals,
    )
    signal_after(events, 2, lambda: script.send_signal(signal.SIGINT)).join()
    output, _ = script.communicate(timeout=120)
    assert script.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert "interrupted" in lines, output[-3000:]
    assert any("stopped the Ray tasks of" in line for line in lines), output[-3000:]
    assert lines[-1] == str(slow_location.DAYS * 24), "the same driver runs the next query"
    # Two ended, two ran on, at most two more started before the stop; the other 14 of the
    # 20 submitted at once were skipped.
    assert count(events, "start") <= 6
    assert_no_task_runs_on(events)


def slow_run(events: Path) -> ray_tasks.Fanout:
    """A run of one-second daily tasks over the slow prices, at most four in flight."""
    plan = slow_location.prices(1).lazy().with_columns(version=slow_location.slowly(str(events)))
    dtype = pl.Datetime("us")
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    days = [start + dt.timedelta(days=n) for n in range(slow_location.DAYS + 1)]
    work = [
        (period, ray_tasks.PeriodTask(window_filter("ts", dtype, period), None, None, "arrow"))
        for period in (period_of_window(a, b, dtype) for a, b in itertools.pairwise(days))
    ]
    return ray_tasks.run(
        ray_tasks.ShippedPlan(plan),
        work,
        column="ts",
        schema=plan.collect_schema(),
        options=ray_tasks.check_remote_options(None),
        max_concurrency=4,
    )


def stop_levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.levelname for r in caplog.records if "stopped the Ray tasks of" in r.getMessage()]


def assert_stopped(events: Path) -> None:
    """The tasks running at the stop finish their query; none of the rest starts."""
    time.sleep(2 * slow_location.TASK_SECONDS)
    assert_no_task_runs_on(events)
    assert count(events, "start") <= 6, "the tasks not yet started were skipped"


def test_a_run_whose_reader_has_enough_rows_stops_its_tasks_quietly(tmp_path, ray_cluster, caplog):
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    with slow_run(tmp_path / "events") as results:
        next(results)
    assert stop_levels(caplog) == ["DEBUG"]
    assert_stopped(tmp_path / "events")


def interrupted_in_the_block(events: Path) -> None:
    with slow_run(events) as results:
        next(results)
        raise KeyboardInterrupt


def interrupted_before_the_block(events: Path) -> None:
    results = slow_run(events)
    next(results)
    raise KeyboardInterrupt


@pytest.mark.parametrize("reader", [interrupted_in_the_block, interrupted_before_the_block])
def test_an_interrupt_wherever_it_lands_stops_the_tasks_and_warns(
    tmp_path, ray_cluster, caplog, reader
):
    # Polars raises Ctrl-C in whatever Python code its source thread runs: in the reader's
    # own lines between two results, or in a frame cut short before its with block could
    # end the run, which the garbage collector then closes.
    caplog.set_level(logging.DEBUG, logger="piot_dagster")
    with pytest.raises(KeyboardInterrupt):
        reader(tmp_path / "events")
    assert stop_levels(caplog) == ["WARNING"]
    assert_stopped(tmp_path / "events")


@pytest.fixture
def slow_env(tmp_path: Path, ray_cluster: None) -> dict[str, str]:
    """A process loading tests/slow_location.py: a fresh Dagster home and asset folder, the
    tests' Ray cluster, and partitions already stored by an earlier run (version 1)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    earlier = slow_location.prices(1)
    for (day,), rows in earlier.group_by(pl.col("ts").dt.date()):
        key = f"slow_prices/{day}.parquet"
        PartitionWriter(open_storage(tmp_path / "assets"), key, "ts").write(rows.lazy())
    return {
        **os.environ,
        "PIOT_ASSET_DIR": str(tmp_path / "assets"),
        "PIOT_TEST_EVENTS": str(tmp_path / "events"),
        "PIOT_TEST_VERSION": "2",
        "DAGSTER_HOME": str(home),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }


def partition_file(tmp_path: Path, day: dt.date) -> Path:
    return tmp_path / "assets" / "slow_prices" / f"{day}.parquet"


def assert_every_partition_whole(tmp_path: Path) -> list[int]:
    """Each partition holds exactly one complete version, the earlier run's or a later
    one's, and nothing else is in the folder; the version of each day, in order."""
    folder = tmp_path / "assets" / "slow_prices"
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(slow_location.DAYS)]
    assert sorted(folder.iterdir()) == [partition_file(tmp_path, day) for day in days]
    return [whole_version(partition_file(tmp_path, day), day) for day in days]


def whole_version(path: Path, day: dt.date) -> int:
    """The one version a partition file holds, read as a reader would (one open handle)."""
    with open(path, "rb") as handle:
        stored = pl.read_parquet(handle)
    version = stored["version"][0]
    expected = slow_location.prices(version).filter(pl.col("ts").dt.date() == day)
    assert stored.equals(expected), f"partition {day} is not one whole version"
    return version


def materialize_slow(
    env: dict[str, str], partitions: str, asset: str = "slow_prices"
) -> subprocess.Popen:
    """`dagster asset materialize` of ``asset`` over ``partitions`` (``a...b``)."""
    return subprocess.Popen(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-f",
            str(SLOW_LOCATION),
            "--select",
            asset,
            "--partition-range",
            partitions,
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=reset_signals,
    )


def test_sigterm_to_a_backfill_run_stops_its_tasks_and_leaves_every_file_whole(slow_env, tmp_path):
    events = tmp_path / "events"
    run = materialize_slow(slow_env, "2024-01-01...2024-01-20")
    signal_after(events, 4, run.terminate).join()
    output, _ = run.communicate(timeout=120)
    assert run.returncode != 0, output[:8000]
    assert "stopped the Ray tasks of" in output, output[-3000:]
    assert_no_task_runs_on(events)
    versions = assert_every_partition_whole(tmp_path)
    assert set(versions) == {1, 2}, "interrupted mid-way"
    with dg.DagsterInstance.from_config(slow_env["DAGSTER_HOME"]) as instance:
        (stopped,) = instance.get_runs()
        recorded = instance.get_materialized_partitions(dg.AssetKey("slow_prices"))
    assert stopped.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    rewritten = {f"2024-01-{n + 1:02d}" for n, version in enumerate(versions) if version == 2}
    # Dagster records what the run wrote before it stopped (but a partition whose task
    # finished while the run stopped holds the new version unrecorded).
    assert recorded
    assert recorded <= rewritten


def test_sigterm_to_a_delta_backfill_commits_nothing_and_removes_its_files(slow_env, tmp_path):
    table = tmp_path / "assets" / "slow_prices_delta"
    first = materialize_slow(slow_env, "2024-01-01...2024-01-20", "slow_prices_delta")
    assert first.wait(timeout=300) == 0, first.communicate()[0][-3000:]
    before = DeltaTable(str(table))
    events = tmp_path / "events"
    events.unlink()

    run = materialize_slow(
        {**slow_env, "PIOT_TEST_VERSION": "3"}, "2024-01-01...2024-01-20", "slow_prices_delta"
    )
    signal_after(events, 4, run.terminate).join()
    output, _ = run.communicate(timeout=120)

    assert run.returncode != 0, output[:8000]
    assert_no_task_runs_on(events)
    after = DeltaTable(str(table))
    assert after.version() == before.version() == 0, "an interrupted run commits nothing"
    assert set(pl.read_delta(str(table))["version"]) == {2}
    referenced = {Path(uri) for uri in after.file_uris()}
    # Files of tasks that finished before the stop are removed; one a task was killed
    # writing would stay unreferenced for vacuum (none here: tasks stop before writing).
    assert set(table.rglob("*.parquet")) == referenced


def test_two_runs_materializing_the_same_partitions_at_once_leave_one_whole_version(
    slow_env, tmp_path
):
    # The instance's storage is created once, as a deployment's is: two processes creating
    # it at once race in Dagster's own schema migration.
    dg.DagsterInstance.from_config(slow_env["DAGSTER_HOME"]).dispose()
    runs = [
        materialize_slow({**slow_env, "PIOT_TEST_VERSION": str(version)}, "2024-01-01...2024-01-06")
        for version in (2, 3)
    ]
    reads = 0
    while any(run.poll() is None for run in runs):
        for path in (tmp_path / "assets" / "slow_prices").glob("*.parquet"):
            whole_version(path, dt.date.fromisoformat(path.stem))
            reads += 1
    for run in runs:
        output, _ = run.communicate()
        assert run.returncode == 0, output[-3000:]
    assert reads > 20
    versions = assert_every_partition_whole(tmp_path)
    assert set(versions[:6]) <= {2, 3}, "each of the six holds one run's version"
    assert set(versions[6:]) == {1}, "partitions outside the runs are untouched"


def test_terminating_a_run_from_the_ui_stops_its_tasks_and_leaves_every_file_whole(
    slow_env, tmp_path
):
    from dagster_graphql import DagsterGraphQLClient

    events = tmp_path / "events"
    with dagster_dev(SLOW_LOCATION, slow_env, tmp_path / "dagster-dev.log") as port:
        run_id = submit(
            port,
            "slow_job",
            {
                "dagster/asset_partition_range_start": "2024-01-01",
                "dagster/asset_partition_range_end": "2024-01-20",
            },
        )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        signal_after(events, 4, lambda: client.terminate_run(run_id)).join()
        wait_for(lambda: finished(port, run_id), "the terminated run")
        assert client.get_run_status(run_id) == dg.DagsterRunStatus.CANCELED
    assert_no_task_runs_on(events)
    assert set(assert_every_partition_whole(tmp_path)) == {1, 2}, "interrupted mid-way"
    with dg.DagsterInstance.from_config(slow_env["DAGSTER_HOME"]) as instance:
        messages = [record.message for record in instance.all_logs(run_id)]
    assert any("stopped the Ray tasks of" in m for m in messages), messages


# The database going away ------------------------------------------------------------------


def postgres_control() -> Callable[[str], None]:
    """Stops or starts the local PostgreSQL cluster, as an operator restarting it would.
    Checked here, in the test's own thread, not in the thread that will stop it."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        message = "stopping PostgreSQL needs the local cluster and pg_ctlcluster"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)

    def control(action: str) -> None:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", action]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    return control


def wait_for_postgres(url: str) -> None:
    import adbc_driver_postgresql.dbapi

    deadline = time.monotonic() + 60
    while True:
        try:
            adbc_driver_postgresql.dbapi.connect(url).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.usefixtures("ray_cluster")
def test_postgres_stopping_mid_backfill_fails_clearly_and_writes_nothing_partial(
    postgres_url, tmp_path
):
    import adbc_driver_postgresql.dbapi

    from piot_dagster import PeriodExecutionError, scan_db

    postgres_server = postgres_control()
    table = "piot_outage_" + os.urandom(4).hex()
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, slow_location.prices(1).to_arrow(), mode="create")
        conn.commit()
    events = tmp_path / "events"

    @dg.asset(
        partitions_def=time_partitions("daily", "2024-01-01", end="2024-01-21"),
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"date_column": "ts", "max_concurrency": 4},
    )
    def outage_prices() -> pl.LazyFrame:
        source = scan_db(f"SELECT ts, version FROM {table}", connection=postgres_url)
        return source.with_columns(version=slow_location.slowly(str(events)))

    resources = {"io_manager": RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))}
    folder = tmp_path / "outage_prices"

    def backfill(start: str, end: str) -> dg.ExecuteInProcessResult:
        tags = {
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
        }
        return dg.materialize([outage_prices], tags=tags, resources=resources)

    try:
        stopper = signal_after(events, 4, lambda: postgres_server("stop"))
        with pytest.raises(PeriodExecutionError) as info:
            backfill("2024-01-01", "2024-01-20")
        stopper.join()
        message = str(info.value)
        assert "asset outage_prices: partition(s) 2024-01-" in message
        assert "could not connect (postgres at 127.0.0.1:5432)" in message, message
        written = sorted(folder.iterdir())
        assert 4 <= len(written) < slow_location.DAYS
        assert not list(tmp_path.rglob("*.tmp"))
        for path in written:
            day = dt.date.fromisoformat(path.stem)
            expected = slow_location.prices(1).filter(pl.col("ts").dt.date() == day)
            assert pl.read_parquet(path).sort("ts").equals(expected), f"{path.name} is partial"
    finally:
        postgres_server("start")
        wait_for_postgres(postgres_url)
    try:
        days = [dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(slow_location.DAYS)]
        missing = [str(day) for day in days if not (folder / f"{day}.parquet").exists()]
        assert backfill(missing[0], missing[-1]).success, "it works again once the server is back"
        stored = pl.concat([pl.read_parquet(p) for p in sorted(folder.iterdir())])
        assert stored.sort("ts").equals(slow_location.prices(1)), "no row lost or duplicated"
    finally:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.commit()


@pytest.mark.usefixtures("ray_cluster")
def test_schema_drift_between_partitions_is_reconciled_by_column_name(tmp_path):
    @dg.asset(
        partitions_def=time_partitions("daily", "2024-01-01", end="2024-01-03"),
        metadata={"date_column": "d"},
    )
    def drifting(context: dg.AssetExecutionContext) -> pl.DataFrame:
        day = dt.date.fromisoformat(context.partition_key)
        frame = pl.DataFrame({"d": [day], "v": pl.Series([1], dtype=pl.Int32)})
        if context.partition_key == "2024-01-02":  # a later day: a new column, a wider dtype
            frame = frame.with_columns(pl.col("v").cast(pl.Int64), extra=pl.lit("new"))
        return frame

    @dg.asset
    def combined(drifting: pl.DataFrame) -> pl.DataFrame:
        return drifting

    resources = {"io_manager": RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path))}
    for key in ("2024-01-01", "2024-01-02"):
        assert dg.materialize([drifting], partition_key=key, resources=resources).success
    result = dg.materialize([drifting, combined], selection=[combined], resources=resources)
    out = result.output_for_node("combined")
    assert out.schema == pl.Schema({"d": pl.Date, "v": pl.Int64, "extra": pl.String})
    assert out["extra"].to_list() == [None, "new"]


# Security -------------------------------------------------------------------------------


def test_injection_through_column_names_has_no_side_effect_on_postgres(postgres_url):
    import adbc_driver_postgresql.dbapi

    from piot_dagster import scan_db

    table = "piot_inject_" + os.urandom(4).hex()
    evil = ['a"b', "x; DROP TABLE " + table + "; --", "select", "it's"]
    frame = pl.DataFrame({name: [1, 2, 3] for name in evil}).with_columns(
        pl.Series("when", [dt.date(2024, 1, d) for d in (1, 2, 3)])
    )
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, frame.to_arrow(), mode="create")
        conn.commit()
    try:
        lf = scan_db(f'SELECT * FROM "{table}"', connection=postgres_url)
        for name in evil:
            got = lf.filter((pl.col(name) >= 2) & pl.col(name).is_in([2, 3])).select(name).collect()
            assert got[name].to_list() == [2, 3]
        assert lf.collect().height == 3, "the table is intact"
    finally:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.commit()


class Source(dg.ConfigurableResource):
    uri: str


@pytest.mark.usefixtures("ray_cluster")
def test_a_password_given_through_envvar_reaches_no_log_event_or_metadata(
    postgres_url, tmp_path, monkeypatch
):
    import adbc_driver_postgresql.dbapi

    from piot_dagster import scan_db

    secret = "envvar-secret-" + os.urandom(4).hex()
    monkeypatch.setenv("PIOT_TEST_SOURCE", postgres_url.replace("postgres@", f"postgres:{secret}@"))
    table = "piot_secret_" + os.urandom(4).hex()
    frame = pl.DataFrame({"d": [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], "v": [1, 2]})
    with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, frame.to_arrow(), mode="create")
        conn.commit()

    @dg.asset(partitions_def=time_partitions("daily", "2024-01-01"), metadata={"date_column": "d"})
    def guarded(source: Source) -> pl.LazyFrame:
        return scan_db(f"SELECT d, v FROM {table}", connection=source.uri)

    @dg.asset
    def broken(source: Source) -> pl.LazyFrame:
        return scan_db("SELECT d FROM no_such_table", connection=source.uri)

    resources = {
        "source": Source(uri=dg.EnvVar("PIOT_TEST_SOURCE")),
        "io_manager": RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path)),
    }
    try:
        with dg.instance_for_test() as instance:
            ok = dg.materialize(
                [guarded], partition_key="2024-01-02", instance=instance, resources=resources
            )
            assert ok.success
            failed = dg.materialize(
                [broken], instance=instance, resources=resources, raise_on_error=False
            )
            assert not failed.success
            records = [
                *instance.all_logs(ok.run_id),
                *instance.all_logs(failed.run_id),
            ]
            text = "\n".join(repr(r) for r in records)
            assert "no_such_table" in text, "the failure is in the event log"
            assert secret not in text
    finally:
        with adbc_driver_postgresql.dbapi.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.commit()
