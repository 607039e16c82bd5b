"""The SQL statements a plan's sources send, recorded for a partition's metadata.

A source (such as ``scan_db``) logs each statement it runs, as the whole message, to the
``piot_dagster.sql`` logger at DEBUG; a writing task records them while it collects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["STATEMENT_LOGGER", "recorded_statements"]

STATEMENT_LOGGER = logging.getLogger("piot_dagster.sql")


@contextlib.contextmanager
def recorded_statements() -> Iterator[list[str]]:
    """The statements logged inside the block, in this process."""
    statements: list[str] = []

    class _Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            statements.append(record.getMessage())

    handler = _Record(level=logging.DEBUG)
    previous = STATEMENT_LOGGER.level
    STATEMENT_LOGGER.addHandler(handler)
    STATEMENT_LOGGER.setLevel(logging.DEBUG)
    try:
        yield statements
    finally:
        STATEMENT_LOGGER.removeHandler(handler)
        STATEMENT_LOGGER.setLevel(previous)
