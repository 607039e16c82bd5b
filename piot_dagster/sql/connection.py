"""Database connections: URIs and ODBC strings, parsing, redaction, and reading.

A :class:`Connection` is a plain picklable value: the driver connection is opened by
whichever process reads, so a plan that holds one runs in a Ray worker too. Its ``repr``
and every error it raises hide the password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from piot_dagster.errors import DatabaseError, MissingExtraError
from piot_dagster.extras import import_extra
from piot_dagster.sql import mysql, odbc
from piot_dagster.sql.dialects import DIALECTS, GENERIC, Dialect, from_dbms_name

__all__ = ["SCHEMES", "Connection", "DatabaseError"]

T = TypeVar("T")
Driver = Literal["sqlite", "duckdb", "postgres", "mysql", "odbc"]
SCHEMES: dict[str, Driver] = {
    "sqlite": "sqlite",
    "duckdb": "duckdb",
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class Connection:
    """A parsed connection: ``sqlite:///path``, ``duckdb:///path``,
    ``postgresql://user:password@host:port/db``, ``mysql://…`` (or ``mariadb://…``), or an
    ODBC connection string ``Driver={…};Server=…;Uid=…;Pwd=…;``.

    An ODBC string's dialect is the driver's database (:meth:`resolved` asks it); until
    then it is :data:`~piot_dagster.sql.dialects.GENERIC`.
    """

    uri: str = field(repr=False)
    driver: Driver
    dialect: Dialect
    path: str | None = None
    host: str | None = None
    port: int | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, uri: str) -> Connection:
        if not isinstance(uri, str):
            raise TypeError(
                f"connection must be a URI or an ODBC connection string, not {type(uri).__name__}"
            )
        if odbc.looks_like_odbc(uri):
            found = odbc.settings(uri)
            port = found.get("port")
            return cls(
                uri=uri,
                driver="odbc",
                dialect=GENERIC,
                path=found.get("database") or found.get("dsn"),
                host=found.get("server") or found.get("host"),
                port=int(port) if port and port.isdigit() else None,
                password=found.get("pwd") or found.get("password"),
            )
        scheme, sep, _ = uri.partition("://")
        driver = SCHEMES.get(scheme.lower()) if sep else None
        if driver is None:
            supported = ", ".join(f"{s}://" for s in SCHEMES)
            shown = scheme if sep else uri[:20]
            raise ValueError(
                f"connection: unsupported URI scheme {shown!r}; use one of {supported} "
                "(e.g. sqlite:///path/to/file.db), or an ODBC connection string "
                "(Driver={...};Server=...;)"
            )
        dialect = DIALECTS[driver]
        if driver in _DEFAULT_PORTS:
            parts = urlsplit(uri)
            try:
                port = parts.port or _DEFAULT_PORTS[driver]
            except ValueError:
                raise ValueError(
                    f"connection: the port in {_redact(uri)!r} is not a number"
                ) from None
            return cls(
                uri=uri,
                driver=driver,
                dialect=dialect,
                host=parts.hostname or "localhost",
                port=port,
                password=unquote(parts.password) if parts.password else None,
            )
        # As in SQLAlchemy: sqlite:///relative/path.db and sqlite:////absolute/path.db.
        rest = uri[len(scheme) + 3 :]
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(
                f"connection: {scheme}:// needs a file path after a third slash, e.g. "
                f"{scheme}:///data/trades.db (relative) or {scheme}:////srv/trades.db (absolute)"
            )
        return cls(uri=uri, driver=driver, dialect=dialect, path=rest[1:])

    def resolved(self) -> Connection:
        """This connection with its dialect known: an ODBC driver is asked which database
        it reaches (``SQL_DBMS_NAME``); an unknown one keeps the generic dialect."""
        if self.driver != "odbc":
            return self

        def ask() -> str:
            pyodbc = import_extra("pyodbc")

            connection = odbc.open_pyodbc(self.uri)
            try:
                return connection.getinfo(pyodbc.SQL_DBMS_NAME)
            finally:
                connection.close()

        return dataclasses.replace(
            self, dialect=from_dbms_name(self.call("could not connect", ask))
        )

    @property
    def redacted(self) -> str:
        """The URI with its password replaced by ``***``."""
        return odbc.redact(self.uri) if self.driver == "odbc" else _redact(self.uri)

    @property
    def where(self) -> str:
        """What errors say the database is: its driver and dialect, and host or file."""
        place = f"{self.host}:{self.port}" if self.host else self.path
        kind = self.driver
        if self.driver == "odbc" and self.dialect is not GENERIC:
            kind = f"odbc, {self.dialect.name}"
        return f"{kind} at {place}"

    def scrub(self, text: str) -> str:
        """``text`` with the password and the full URI removed."""
        text = text.replace(self.uri, self.redacted)
        if self.password:
            text = text.replace(self.password, "***")
        return text

    def error(self, what: str, exc: BaseException) -> DatabaseError:
        """A :class:`DatabaseError` about ``exc`` that holds no password."""
        return DatabaseError(f"{what} ({self.where}): {self.scrub(f'{type(exc).__name__}: {exc}')}")

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, its errors turned into a :class:`DatabaseError` about ``what``.

        The error is raised outside the ``except`` block, so the driver's own exception,
        which may quote the URI, is not even chained as its ``__context__``.
        """
        try:
            return fn()
        except (DatabaseError, MissingExtraError):  # already say what to do
            raise
        except Exception as exc:
            failure = self.error(what, exc)
        raise failure

    def stream(self, what: str, batches: Iterator[T]) -> Iterator[T]:
        """``batches`` with errors turned into a :class:`DatabaseError` as in :meth:`call`."""
        try:
            yield from batches
            return
        except (DatabaseError, MissingExtraError):
            raise
        except Exception as exc:
            failure = self.error(what, exc)
        raise failure

    def read(self, sql: str, schema: Any) -> Iterator[pa.RecordBatch]:
        """``sql``'s rows as Arrow batches. ``schema`` (a Polars schema) is what the
        database declared, for readers that need to be told (arrow-odbc)."""
        what = f"query {sql!r} failed"
        session = self.dialect.utc_session
        if self.driver == "mysql":
            yield from self.stream(what, mysql.read_batches(self.uri, session, sql))
        elif self.driver == "odbc":
            yield from self.stream(what, odbc.read_batches(self.uri, session, sql, schema))
        else:
            with self.open() as conn:
                yield from self.stream(what, _execute(conn, self.driver, sql))

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        """A DB-API connection: ADBC for SQLite and PostgreSQL, DuckDB's own (read-only),
        pyodbc for ODBC strings.

        In a Ray worker, connections are reused for up to ``IDLE_SECONDS`` after their
        last use: a burst of period tasks then opens the database once (opening a DuckDB
        file costs ~15 ms). Elsewhere (a sensor in the daemon, a plain collect) each is
        closed at once: an idle DuckDB connection would lock writers out of the file, and
        out of this very process, for nothing. A connection that saw an error is closed.
        """
        reuse = _in_ray_worker()
        connection = (reuse and _POOL.take(self.uri)) or self.call(
            "could not connect", self._connect
        )
        healthy = False
        try:
            yield connection
            healthy = True
        finally:
            if healthy and reuse:
                _POOL.give_back(self.uri, connection)
            else:
                connection.close()

    def _connect(self) -> Any:
        if self.driver == "odbc":
            return odbc.open_pyodbc(self.uri)
        if self.driver == "duckdb":
            import duckdb

            if not Path(self.path).exists():  # type: ignore[arg-type]
                raise FileNotFoundError(f"no DuckDB file at {self.path}")
            connection = duckdb.connect(self.path, read_only=True)
            # TIMESTAMPTZ values come back in UTC, whatever the machine's zone.
            connection.execute("SET TimeZone = 'UTC'")
            return connection
        if self.driver == "sqlite":
            import adbc_driver_sqlite.dbapi

            if not Path(self.path).exists():  # type: ignore[arg-type]
                raise FileNotFoundError(f"no SQLite file at {self.path}")
            # Autocommit: a pooled connection must not sit in a transaction that pins
            # a snapshot or holds locks between reads.
            return adbc_driver_sqlite.dbapi.connect(self.path, autocommit=True)
        if self.driver == "mysql":
            raise TypeError("mysql:// connections are read with read(), not open()")
        dbapi = import_extra("adbc_driver_postgresql.dbapi")
        return dbapi.connect(self.uri, autocommit=True)


# Rows per Arrow batch read from the database; Polars' smaller batch_size is served by
# zero-copy slices, since converting and filtering a batch has a fixed cost.
_READ_BATCH_ROWS = 1_000_000


def _execute(conn: Any, driver: str, sql: str) -> Iterator[pa.RecordBatch]:
    if driver == "duckdb":
        yield from conn.sql(sql).to_arrow_reader(_READ_BATCH_ROWS)
        return
    # The cursor owns the stream: keep it open until the last batch is read.
    with conn.cursor() as cursor:
        if driver == "sqlite":
            # ADBC's SQLite driver reads 1,024 rows a batch by default.
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(_READ_BATCH_ROWS)}
            )
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()


class _Pool:
    """Idle connections by URI, each handed to one user at a time and closed by a daemon
    thread once idle for ``IDLE_SECONDS``, so a DuckDB writer is never locked out long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, list[tuple[Any, float]]] = {}
        self._reaper: threading.Thread | None = None

    def take(self, key: str) -> Any | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop()[0] if idle else None

    def give_back(self, key: str, connection: Any) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append((connection, time.monotonic()))
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, daemon=True, name="piot-pool")
                self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(IDLE_SECONDS / 4)
            expired = []
            with self._lock:
                cutoff = time.monotonic() - IDLE_SECONDS
                for key, idle in list(self._idle.items()):
                    expired += [c for c, used in idle if used < cutoff]
                    self._idle[key] = [(c, used) for c, used in idle if used >= cutoff]
                    if not self._idle[key]:
                        del self._idle[key]
                if not self._idle:
                    self._reaper = None
            for connection in expired:
                with contextlib.suppress(Exception):
                    connection.close()
            if self._reaper is None:
                return


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")  # never imported for it: a process without Ray is no worker
    return (
        ray is not None
        and ray.is_initialized()
        and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    )


IDLE_SECONDS = 1.0
_POOL = _Pool()


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
