"""What a pushdown may assume of each database's SQL.

A :class:`Dialect` names sqlglot's dialect for the SQL we generate and records the few
semantic facts the translation depends on. Where a fact is unknown, the conservative
choice is taken: a filter the database evaluates differently from Polars is never
pushed, or is pushed only in a form that returns a superset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DIALECTS", "GENERIC", "Dialect", "from_dbms_name"]


@dataclass(frozen=True)
class Dialect:
    """The SQL facts pushdown relies on, for one database."""

    #: Our name for it, shown in errors and ``explain()``.
    name: str
    #: sqlglot's dialect for the SQL we generate around the user's query.
    sqlglot: str
    #: Whether ``=`` on strings is Polars' equality. False where collations may ignore
    #: case, accents or trailing spaces (MySQL, SQL Server, SQLite's NOCASE): ``=`` is then
    #: a superset, and ``<>``, ``NOT`` and ordering on strings are never pushed.
    exact_strings: bool = False
    #: How dates and datetimes are written: typed casts (``CAST('…' AS DATE)``), Oracle's
    #: format-explicit ``TO_DATE``/``TO_TIMESTAMP`` (its casts follow NLS settings),
    #: SQLite's ISO text, or not at all.
    temporal: Literal["cast", "oracle", "sqlite-text", "none"] = "none"
    #: Whether a time-zone-aware literal is written as UTC wall-clock text: MySQL has no
    #: zoned literal, and its TIMESTAMP columns compare in the session zone, set to UTC.
    utc_text: bool = False
    #: Whether a column may drop a literal's fraction of a second before comparing
    #: (MySQL's DATETIME(0)): bounds are widened to whole seconds.
    whole_seconds: bool = False
    #: Whether TRUE and FALSE are literals (not in SQL Server or Oracle).
    booleans: bool = True
    #: Whether a LIMIT (or TOP, FETCH FIRST) is known; without, Polars truncates.
    limit: bool = True
    #: Whether a backslash in a string literal may be an escape character, depending on
    #: the server's settings (MySQL's NO_BACKSLASH_ESCAPES): values holding one, or a
    #: control character sqlglot would escape with one, are never written as literals,
    #: so no setting changes what a literal means.
    backslash_escapes: bool = False
    #: Whether ``''`` is NULL (Oracle): an empty string is never written as a literal.
    empty_string_is_null: bool = False
    #: Whether a non-ASCII string is written as a national literal (SQL Server's N'…').
    national_strings: bool = False
    #: Whether string literals are pushed at all.
    strings: bool = True
    #: The statement that makes a session show zoned times in UTC, run before each read
    #: where the driver does not already (MySQL's TIMESTAMP follows the session's zone).
    utc_session: str | None = None


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in [
        Dialect("sqlite", "sqlite", temporal="sqlite-text"),
        Dialect("duckdb", "duckdb", exact_strings=True, temporal="cast"),
        Dialect(
            "postgres",
            "postgres",
            exact_strings=True,
            temporal="cast",
            utc_session="SET TIME ZONE 'UTC'",
        ),
        Dialect(
            "mysql",
            "mysql",
            temporal="cast",
            utc_text=True,
            whole_seconds=True,
            backslash_escapes=True,
            utc_session="SET SESSION time_zone = '+00:00'",
        ),
        # Not run here: the SQL they are sent is tested (docs/scan_db.md).
        Dialect(
            "tsql",
            "tsql",
            temporal="cast",
            whole_seconds=True,
            booleans=False,
            national_strings=True,
        ),
        Dialect(
            "oracle",
            "oracle",
            temporal="oracle",
            whole_seconds=True,
            booleans=False,
            empty_string_is_null=True,
        ),
        Dialect("snowflake", "snowflake", temporal="cast", backslash_escapes=True),
    ]
}

#: A database no one has described: numbers and NULL tests are pushed, nothing else.
GENERIC = Dialect("generic", "", booleans=False, limit=False, strings=False)

# Substrings of ODBC's SQL_DBMS_NAME, as drivers report it, in the order they are tried.
_DBMS_NAMES = [
    ("postgres", "postgres"),
    ("mariadb", "mysql"),
    ("mysql", "mysql"),
    ("sqlite", "sqlite"),
    ("duckdb", "duckdb"),
    ("microsoft sql server", "tsql"),
    ("oracle", "oracle"),
    ("snowflake", "snowflake"),
]


def from_dbms_name(dbms: str) -> Dialect:
    """The dialect for an ODBC driver's ``SQL_DBMS_NAME`` (``'MariaDB'``,
    ``'PostgreSQL'``, ``'Microsoft SQL Server'``…), or :data:`GENERIC`.

    Examples
    --------
    >>> from_dbms_name("MariaDB").name
    'mysql'
    >>> from_dbms_name("Teradata").name
    'generic'
    """
    lowered = dbms.lower()
    for needle, name in _DBMS_NAMES:
        if needle in lowered:
            return DIALECTS[name]
    return GENERIC
