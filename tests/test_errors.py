"""One family of errors: every exception type of the package is a PiotError and keeps its
built-in base; context reaches an error as a note on it, never as a rebuilt copy; the date
column is checked by one function wherever it is checked; a missing optional driver names
the extra that installs it."""

import importlib
import pkgutil
import sqlite3
import sys
import tomllib
import traceback
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import piot_dagster
from piot_dagster import (
    RayParquetIOManager,
    RayResource,
    partitioned_query,
    scan_db,
    time_partitions,
)
from piot_dagster import errors as E
from piot_dagster.dagster.io_manager import _naming
from piot_dagster.extras import EXTRAS, import_extra
from piot_dagster.storage import open_storage

ROOT = Path(__file__).parents[1]


def package_exception_classes() -> list[type[BaseException]]:
    found = []
    for module in pkgutil.walk_packages(piot_dagster.__path__, "piot_dagster."):
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("piot_dagster")
            ):
                found.append(value)
    return found


def test_every_exception_type_of_the_package_is_a_piot_error_kept_in_errors_py():
    classes = set(package_exception_classes())
    assert E.DatabaseError in classes
    strays = [c for c in classes if c.__module__ != "piot_dagster.errors"]
    assert not strays, "every exception type lives in piot_dagster/errors.py"
    outside = [c for c in classes if not issubclass(c, E.PiotError)]
    assert not outside, "every exception type is a PiotError"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (E.UnboundedRangeError, ValueError),
        (E.RayNotInitializedError, RuntimeError),
        (E.PeriodExecutionError, RuntimeError),
        (E.StorageError, OSError),
        (E.DatabaseError, RuntimeError),
        (E.MissingExtraError, ImportError),
        (E.DateColumnError, ValueError),
        (E.DateColumnTypeError, TypeError),
        (E.DateColumnTypeError, ValueError),
        (E.ReplayMismatch, RuntimeError),
        (E.Unschedulable, RuntimeError),
    ],
)
def test_each_error_keeps_the_builtin_base_a_caller_already_catches(error, builtin):
    assert issubclass(error, E.PiotError)
    assert issubclass(error, builtin)


def test_the_errors_are_exported_where_they_were_and_from_the_package():
    from piot_dagster.sql import DatabaseError as from_sql
    from piot_dagster.sql.connection import DatabaseError as from_connection

    assert piot_dagster.DatabaseError is from_sql is from_connection is E.DatabaseError
    assert piot_dagster.PiotError is E.PiotError
    assert piot_dagster.MissingExtraError is E.MissingExtraError


# Context as a note -----------------------------------------------------------------------


class Refusal(ValueError):
    """An exception whose constructor takes other arguments than a message, as drivers'
    and libraries' own exceptions often do."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def refuse() -> None:
    raise Refusal(7, "the server refused")


def test_an_exception_with_its_own_constructor_passes_through_with_its_note():
    # What the old rebuild did fails on such an exception, with a TypeError of its own:
    with pytest.raises(TypeError):
        Refusal("asset prices: 7: the server refused")  # type: ignore[call-arg]

    with pytest.raises(Refusal) as info, _naming("prices"):
        refuse()

    assert info.value.code == 7
    assert info.value.__notes__ == ["in asset prices"]
    assert E.described(info.value) == "7: the server refused\nin asset prices"
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "refuse", "the traceback still reaches where it was raised"


# The date column -------------------------------------------------------------------------


@pytest.fixture
def text_dates(tmp_path) -> str:
    """A SQLite table whose date column holds text: Polars reads it as String."""
    path = tmp_path / "texts.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (day TEXT, v INTEGER)")
        db.execute("INSERT INTO t VALUES ('2024-01-01', 1)")
    return f"sqlite:///{path}"


def refused(call) -> tuple[type[BaseException], str]:
    with pytest.raises(E.DateColumnError) as info:
        call()
    # Through Dagster it is a dagster.Failure that is still the error (failures.py): its
    # own class is the first of ours among its bases.
    ours = next(k for k in type(info.value).__mro__ if k.__module__ == E.__name__)
    return ours, str(info.value)


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize(
    ("column", "error"),
    [
        ("day", E.DateColumnTypeError),
        ("when", None),
    ],
)
def test_the_date_column_is_refused_in_the_same_words_by_every_entry_point(
    tmp_path, text_dates, column, error
):
    query = "SELECT day, v FROM t"
    days = time_partitions("daily", "2024-01-01")
    manager = RayParquetIOManager(ray=RayResource(), base_dir=str(tmp_path / "store"))

    def engine() -> None:
        scan_db(query, connection=text_dates).piot.execute_on_ray(
            date_column=column, time_unit="daily"
        ).collect()

    @dg.asset(name="texts", partitions_def=days, metadata={"date_column": column})
    def texts() -> pl.LazyFrame:
        return scan_db(query, connection=text_dates)

    def io_manager() -> None:
        dg.materialize([texts], partition_key="2024-01-01", resources={"io_manager": manager})

    def python_definitions() -> None:
        defs = partitioned_query(
            "texts",
            query=query,
            connection=text_dates,
            date_column=column,
            partitions_def=days,
            base_dir=str(tmp_path / "store"),
        )
        # The asset comes with the IO manager partitioned_query binds to it.
        dg.materialize([defs.resolve_assets_def("texts")], partition_key="2024-01-01")

    found = {refused(engine), refused(io_manager), refused(python_definitions)}

    assert len(found) == 1, found
    ((kind, message),) = found
    assert kind is (error or E.DateColumnError)
    if error is None:
        assert message.startswith("date_column 'when' is not a column of the query")
    else:
        assert message.startswith("date_column 'day' is String; it must be a Date or Datetime")


def test_the_date_column_check_takes_a_query_s_names_alone():
    from piot_dagster.engine.date_column import check_date_column

    assert check_date_column(["day", "v"], "day") is None
    assert check_date_column({"day": pl.Date, "v": pl.Int64}, "day") == pl.Date
    with pytest.raises(E.DateColumnError, match="'when' is not a column of the query"):
        check_date_column(["day", "v"], "when")
    with pytest.raises(E.DateColumnTypeError, match="time_unit 'hourly' needs a Datetime"):
        check_date_column({"day": pl.Date}, "day", time_unit="hourly")
    assert check_date_column({"ts": pl.Datetime("us")}, "ts", time_unit="hourly")


# Missing extras --------------------------------------------------------------------------


def hidden(monkeypatch, *modules: str) -> None:
    """Make ``modules`` impossible to import, as in an install without their extra (a
    submodule an earlier test imported is hidden by name too)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize(
    ("connection", "modules", "extra"),
    [
        ("mysql://u:secret@h/db", ["pymysql", "connectorx"], "mysql"),
        ("mariadb://u:secret@h/db", ["pymysql", "connectorx"], "mysql"),
        (
            "postgresql://u:secret@127.0.0.1:1/db",
            ["adbc_driver_postgresql", "adbc_driver_postgresql.dbapi"],
            "postgres",
        ),
        ("Driver={X};Server=h;Uid=u;Pwd=secret;", ["pyodbc", "arrow_odbc"], "odbc"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(monkeypatch, connection, modules, extra):
    hidden(monkeypatch, *modules)
    with pytest.raises(E.MissingExtraError, match=rf"pip install 'piot-dagster\[{extra}\]'") as e:
        scan_db("SELECT d FROM t", connection=connection)
    assert e.value.extra == extra
    assert "secret" not in E.described(e.value)


def test_object_storage_without_obstore_names_the_cloud_extra(monkeypatch):
    hidden(monkeypatch, "obstore", "obstore.store")
    with pytest.raises(E.MissingExtraError, match=r"pip install 'piot-dagster\[cloud\]'"):
        open_storage("s3://lake/assets")


def test_delta_without_deltalake_names_the_delta_extra(monkeypatch, tmp_path):
    from piot_dagster.storage.delta import DeltaTarget

    hidden(monkeypatch, "deltalake")
    target = DeltaTarget(open_storage(str(tmp_path)), "prices", partitioned=True)
    with pytest.raises(E.MissingExtraError, match=r"pip install 'piot-dagster\[delta\]'"):
        target.open()


def test_a_missing_extra_error_survives_pickling_as_a_ray_worker_sends_it():
    import pickle

    error = E.MissingExtraError("needs it", extra="mysql", name="pymysql")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.extra, copy.name) == (
        E.MissingExtraError,
        "needs it",
        "mysql",
        "pymysql",
    )


def test_an_installed_driver_that_fails_to_load_says_why_not_which_extra(monkeypatch, tmp_path):
    # A driver whose own dependency is missing is not a missing extra: installing the extra
    # again would not help, and its own error names what is missing.
    (tmp_path / "connectorx.py").write_text("import piot_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "connectorx", raising=False)
    with pytest.raises(ModuleNotFoundError, match="piot_no_such_dependency") as info:
        import_extra("connectorx")
    assert not isinstance(info.value, E.MissingExtraError)


def test_the_extras_table_matches_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def names(requirements: list[str]) -> set[str]:
        return {r.split("[")[0].split(">")[0].split("=")[0].lower() for r in requirements}

    for module, extra in EXTRAS.items():
        assert extra.package.lower() in names(extras[extra.name]), (module, extra)
    drivers = {extra.name for extra in EXTRAS.values()}
    (everything,) = extras["all"]
    assert drivers <= set(everything.split("[")[1].rstrip("]").split(","))
    assert "piot-dagster[all]" in extras["test"]
