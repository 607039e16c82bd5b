"""A run failing on bad input fails with a Dagster ``Failure`` whose description is the
reason, so the first lines a user reads say what to fix, not pages of our own frames."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from piot_dagster.errors import PiotError, described

__all__ = ["as_failure", "failure"]

_PACKAGE = Path(__file__).resolve().parents[1]
# Ours by where they were raised: a built-in error that our own code raised about its
# input (a setting, a column, a connection, a missing driver).
_BY_ORIGIN = (ValueError, TypeError, LookupError, ImportError, ConnectionError, OSError)


@contextlib.contextmanager
def as_failure() -> Iterator[None]:
    """Our errors about the run's input, raised inside the block, as ``dg.Failure`` with
    the error's message (and notes) as description; the original traceback goes into
    the failure's metadata. Anything else passes unchanged."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        if not _ours(exc):
            raise
        raise failure(exc) from None


def failure(exc: Exception) -> dg.Failure:
    """``exc`` as a ``dg.Failure`` whose description is its message and notes, and which
    is still an instance of ``exc``'s class with its attributes, so a caller's ``except
    ValueError`` (or ``except StorageError``) keeps working; its traceback goes into the
    failure's metadata."""
    kind = type(exc)
    if kind not in _CLASSES:
        # Neither class's __init__ runs: the attributes are set below.
        _CLASSES[kind] = type(
            "Failure",
            (dg.Failure, kind),
            {"__init__": lambda self, *args, **kwargs: None, "__module__": "dagster"},
        )
    made = _CLASSES[kind].__new__(_CLASSES[kind], str(exc))
    made.__dict__.update(vars(exc))  # its attributes, and its notes, printed after it
    made.description = described(exc)
    made.metadata = {
        "error": dg.MetadataValue.text(f"{kind.__module__}.{kind.__qualname__}"),
        "traceback": dg.MetadataValue.text("".join(traceback.format_exception(exc))),
    }
    made.allow_retries = True  # a retry policy the user set still applies
    made.args = (str(exc),)
    return made


_CLASSES: dict[type[Exception], type[dg.Failure]] = {}


def _ours(exc: BaseException) -> bool:
    if isinstance(exc, PiotError):
        return True
    if not isinstance(exc, _BY_ORIGIN):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)
