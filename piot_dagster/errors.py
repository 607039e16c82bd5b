"""Exception types raised by piot_dagster.

Every one subclasses :class:`PiotError`, so ``except PiotError`` catches whatever this
package raised about its own inputs, storage or databases, and also the built-in exception
a caller would already catch for that kind of mistake, so ``except ValueError`` keeps
working.

Context (the asset, the sensor, the setting) is added to an exception on its way out with
``exc.add_note(...)``, never by building a new one of ``type(exc)``: that loses the
traceback, and raises a ``TypeError`` instead for an exception whose constructor takes
other arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DatabaseError",
    "DateColumnError",
    "DateColumnTypeError",
    "MissingExtraError",
    "PeriodExecutionError",
    "PiotError",
    "RayNotInitializedError",
    "ReplayMismatch",
    "StorageError",
    "UnboundedRangeError",
    "Unschedulable",
    "UnsupportedPlan",
    "UploadAbandoned",
    "described",
    "listing",
]


class PiotError(Exception):
    """The base of every exception piot_dagster raises itself."""


class UnboundedRangeError(PiotError, ValueError):
    """The filters on the date column do not bound the query on both sides."""


class DateColumnError(PiotError, ValueError):
    """``date_column`` is not a column of the query (or the asset's frame)."""


class DateColumnTypeError(DateColumnError, TypeError):
    """``date_column`` is a column of another dtype than Date or Datetime (or a Date where
    hours are asked for). A ``TypeError``, and a ``ValueError`` as every
    :class:`DateColumnError` is."""


class RayNotInitializedError(PiotError, RuntimeError):
    """Ray must be initialised before a query runs on it."""


class PeriodExecutionError(PiotError, RuntimeError):
    """A period's Ray task failed; the worker's own error is chained as ``__cause__``.

    ``period`` is the first failed period, ``periods`` all of them (readable labels such
    as ``2024-02-01 → 2024-03-01``).
    """

    def __init__(self, message: str, *, period: str, periods: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.period = period
        self.periods = periods or (period,)


class StorageError(PiotError, OSError):
    """The storage behind ``base_dir`` failed or refused a request: a missing bucket,
    refused credentials, an unreachable endpoint, files that the Dagster process cannot
    see. The message names the location and what to fix, never a secret."""


class DatabaseError(PiotError, RuntimeError):
    """The database refused a query or could not be reached. The message never holds a
    password."""


class MissingExtraError(PiotError, ImportError):
    """A feature needs a package that an extra of piot-dagster installs, and it is not
    installed. The message names the ``pip install`` to run; ``extra`` is the extra's name
    and ``name`` (as for any ``ImportError``) the missing module."""

    def __init__(self, message: str, *, extra: str, name: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: rebuilt as a plain exception would not be, so that it
        # crosses a process (a Ray worker's error) intact.
        return (_missing_extra, (str(self), self.extra, self.name))


def _missing_extra(message: str, extra: str, name: str) -> MissingExtraError:
    return MissingExtraError(message, extra=extra, name=name)


class ReplayMismatch(PiotError, RuntimeError):
    """A retried task's first rows differ from those its failed attempt handed on."""


class Unschedulable(PiotError, RuntimeError):
    """No alive node offers what the fan-out's tasks ask for, for too long."""


class UnsupportedPlan(PiotError, NotImplementedError):
    """A part of a plan that ``piot_dagster.engine.rebuild`` does not rebuild (the plan is
    then shipped whole; never raised to a caller)."""


class UploadAbandoned(PiotError):
    """Raised inside an upload to abort it: the stop flag said no (never raised to a
    caller)."""


def described(exc: BaseException) -> str:
    """``exc``'s message and then its notes, one a line, as the end of its traceback shows
    them: what to put where a message alone would drop the notes that name the asset or
    setting (a Dagster ``Failure``'s description, a log line)."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", ())])


def listing(items: Sequence[str], limit: int = 20) -> str:
    """``a, b, c and 7 more``: the first ``limit`` items of a list an error message names."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
