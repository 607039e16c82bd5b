"""Optional drivers, imported where they are used: the core install (SQLite, DuckDB, local
storage) holds none of them, and a missing one is a :class:`MissingExtraError` that names
the ``pip install`` to run.

:data:`EXTRAS` is the one table of which extra installs which module; pyproject.toml's
extras list the same packages (a test holds the two together).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, NamedTuple

from piot_dagster.errors import MissingExtraError

__all__ = ["EXTRAS", "LazyModule", "import_extra"]


class Extra(NamedTuple):
    name: str  # piot-dagster[name]
    package: str  # what pip installs
    needed_for: str  # what the user asked for that needs it


EXTRAS: dict[str, Extra] = {
    "adbc_driver_postgresql": Extra(
        "postgres", "adbc-driver-postgresql", "postgresql:// connections"
    ),
    "connectorx": Extra("mysql", "connectorx", "mysql:// and mariadb:// connections"),
    "pymysql": Extra("mysql", "PyMySQL", "mysql:// and mariadb:// connections"),
    "arrow_odbc": Extra("odbc", "arrow-odbc", "ODBC connection strings"),
    "pyodbc": Extra("odbc", "pyodbc", "ODBC connection strings"),
    "deltalake": Extra("delta", "deltalake", "Delta tables (RayDeltaIOManager)"),
    "obstore": Extra("cloud", "obstore", "object storage (s3://, gs://, az://)"),
}


def import_extra(module: str) -> Any:
    """``importlib.import_module(module)`` for a module of an optional driver (a dotted
    name such as ``deltalake.transaction`` too), or a :class:`MissingExtraError` naming
    the extra that installs it.

    Only the driver's own absence is turned into that error: an installed driver that
    fails to load (pyodbc without unixODBC's shared library, a missing dependency of its
    own) raises its own ``ImportError``, which says what is really missing.
    """
    top = module.partition(".")[0]
    extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise
        missing = MissingExtraError(
            f"{extra.needed_for} need {extra.package}, which is not installed: "
            f"pip install 'piot-dagster[{extra.name}]'",
            extra=extra.name,
            name=top,
        )
    # Raised outside the except block: the ModuleNotFoundError says nothing more.
    raise missing


class LazyModule(ModuleType):
    """A module-level stand-in for an optional driver, imported (by :func:`import_extra`)
    on the first attribute read: ``obstore = LazyModule("obstore")`` keeps a module's code
    as written while importing it costs nothing, and needs nothing, until it is used."""

    def __init__(self, module: str) -> None:
        if module.partition(".")[0] not in EXTRAS:  # checked at once, not on first use
            raise KeyError(f"{module} is not an optional driver piot_dagster knows")
        super().__init__(module)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(import_extra(self.__name__), attribute)
