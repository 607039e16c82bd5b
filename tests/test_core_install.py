"""A venv holding only the core (``pip install piot-dagster``, no extra), as a SQLite user
makes one: the package imports, ``scan_db`` reads a real SQLite file, ``execute_on_ray``
runs on a local Ray, a ``mysql://`` connection asks for ``piot-dagster[mysql]``, and
tests/test_dagster_compat.py passes on the Dagster release a fresh install picks.

The venv is built once for the module, from pip's cache where it holds the wheels (a
minute or two; the first run downloads them)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CORE_CHECK = textwrap.dedent(
    """
    import datetime as dt
    import importlib.util
    import sqlite3
    import sys

    import polars as pl
    import ray

    import piot_dagster
    import piot_dagster.dagster  # the Dagster layer too: IO managers, component, checks
    from piot_dagster import MissingExtraError, PiotError, scan_db
    from piot_dagster.extras import EXTRAS

    assert "site-packages" in piot_dagster.__file__, piot_dagster.__file__
    absent = [m for m in EXTRAS if importlib.util.find_spec(m) is not None]
    assert not absent, f"the core install holds optional drivers: {absent}"

    path = sys.argv[1]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (d TEXT, v INTEGER)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?)",
            [(f"2024-01-{day:02d}", day) for day in range(1, 11)],
        )
    lf = scan_db("SELECT d, v FROM t", connection=f"sqlite:///{path}").with_columns(
        pl.col("d").str.to_date()
    )
    assert lf.filter(pl.col("v") > 7).collect()["v"].to_list() == [8, 9, 10]

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ranged = lf.filter(pl.col("d").is_between(dt.date(2024, 1, 2), dt.date(2024, 1, 4)))
        out = ranged.piot.execute_on_ray(date_column="d", time_unit="daily").collect()
        assert sorted(out["v"].to_list()) == [2, 3, 4], out
    finally:
        ray.shutdown()

    try:
        scan_db("SELECT d FROM t", connection="mysql://u@h/db")
    except MissingExtraError as exc:
        assert isinstance(exc, PiotError) and isinstance(exc, ImportError)
        assert "pip install 'piot-dagster[mysql]'" in str(exc), exc
        print("missing extra:", exc)
    else:
        raise AssertionError("a mysql:// connection worked without the [mysql] extra")
    print("core install ok")
    """
)


def run(*args: object, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """The python of a fresh venv where ``pip install <this checkout>`` put the core only."""
    base = tmp_path_factory.mktemp("core")
    # A copy of what the package builds from: building in the checkout would leave build/
    # and *.egg-info in it.
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "piot_dagster", source / "piot_dagster", ignore=_caches)
    run(sys.executable, "-m", "venv", base / "venv")
    python = base / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", source, env=_clean_env())
    return python


def _caches(_: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def _clean_env() -> dict[str, str]:
    """The environment without what would let the venv see this checkout's own sources."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    return env


def test_the_core_install_reads_sqlite_runs_on_ray_and_names_a_missing_extra(core_python, tmp_path):
    # -I: only the venv's site-packages, not the working directory or PYTHONPATH.
    result = run(
        core_python, "-I", "-c", CORE_CHECK, tmp_path / "trades.db", env=_clean_env(), cwd=tmp_path
    )
    assert "core install ok" in result.stdout
    assert "pip install 'piot-dagster[mysql]'" in result.stdout


def test_the_core_install_ships_py_typed(core_python):
    result = run(
        core_python, "-I", "-c", "import piot_dagster, pathlib; print(piot_dagster.__file__)"
    )
    assert (Path(result.stdout.strip()).parent / "py.typed").is_file()


def test_the_dagster_compat_module_works_on_the_dagster_a_fresh_install_picks(
    core_python, tmp_path
):
    run(core_python, "-m", "pip", "install", "-q", "pytest", env=_clean_env())
    # Outside the checkout, so the installed package is the one tested.
    shutil.copy(ROOT / "tests" / "test_dagster_compat.py", tmp_path)
    result = subprocess.run(
        [
            str(core_python), "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--noconftest", f"--rootdir={tmp_path}", str(tmp_path / "test_dagster_compat.py"),
        ],
        capture_output=True, text=True, timeout=900, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    version = run(core_python, "-I", "-c", "import dagster; print(dagster.__version__)")
    assert result.returncode == 0, (
        f"dagster {version.stdout.strip()}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    )
