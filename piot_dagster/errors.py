"""Exception types raised by piot_dagster.

Each subclasses the built-in exception a caller would already catch for that kind of
mistake, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "PeriodExecutionError",
    "RayNotInitializedError",
    "StorageError",
    "UnboundedRangeError",
    "listing",
]


class UnboundedRangeError(ValueError):
    """The filters on the date column do not bound the query on both sides."""


class RayNotInitializedError(RuntimeError):
    """Ray must be initialised before a query runs on it."""


class PeriodExecutionError(RuntimeError):
    """A period's Ray task failed; the worker's own error is chained as ``__cause__``.

    ``period`` is the first failed period, ``periods`` all of them (readable labels such
    as ``2024-02-01 → 2024-03-01``).
    """

    def __init__(self, message: str, *, period: str, periods: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.period = period
        self.periods = periods or (period,)


class StorageError(OSError):
    """The storage behind ``base_dir`` failed or refused a request: a missing bucket,
    refused credentials, an unreachable endpoint, files that the Dagster process cannot
    see. The message names the location and what to fix, never a secret."""


def listing(items: Sequence[str], limit: int = 20) -> str:
    """``a, b, c and 7 more``: the first ``limit`` items of a list an error message names."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
