"""The SQL source: ``scan_db``, a lazy Polars source over a SQL query with sound pushdown."""

from piot_dagster.errors import DatabaseError
from piot_dagster.sql.scan import scan_db

__all__ = ["DatabaseError", "scan_db"]
