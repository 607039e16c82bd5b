"""Dagster features in beta or preview that piot-dagster relies on by design."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import dagster as dg

__all__ = ["using_preview"]


@contextlib.contextmanager
def using_preview(feature: str) -> Iterator[None]:
    """Silence Dagster's beta or preview warning about ``feature`` (words of the warning's
    text), and only that one, around a call of ours that uses it on purpose: a user did
    not choose it, and a warning on every load of their code location teaches them
    nothing. Their own use of the feature still warns."""
    quoted = f".*{re.escape(feature)}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=quoted, category=dg.BetaWarning)
        warnings.filterwarnings("ignore", message=quoted, category=dg.PreviewWarning)
        yield
