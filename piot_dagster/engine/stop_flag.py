"""Stopping a fan-out's Ray tasks without ``ray.cancel``.

In Ray 2.60, ``ray.cancel`` racing a task's completion aborts the driver ("Tried to
complete task that was not pending", ray-project/ray#54846), soft or forced: fuzzing hit
it with soft cancels, and about one interrupted backfill in seven with forced ones. So a
fan-out is stopped cooperatively instead: the driver sets a flag in the cluster's
key-value store (the GCS), each task reads it when it starts, and a writing task reads it
again before renaming its file into place. A task already running its query finishes it;
what it made is dropped.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Sequence

import ray
from ray.experimental import internal_kv

__all__ = ["StopFlag"]

_NAMESPACE = "piot_dagster"
_TRUST_S = 0.05
# In each worker process: when a flag was last read as unset.
_unset_at: dict[bytes, float] = {}


class StopFlag:
    """One fan-out's flag: picklable, so every task of the fan-out carries it."""

    def __init__(self) -> None:
        self.key = f"stop:{uuid.uuid4().hex}".encode()

    def is_set(self, *, fresh: bool = False) -> bool:
        """Whether the fan-out was stopped. A lookup costs ~0.6 ms (one per task slowed a
        365-task daily collect by ~15%), so a worker process trusts an "unset" answer for
        ``_TRUST_S`` unless ``fresh`` is asked; a task may then start that late after a
        stop."""
        now = time.monotonic()
        if not fresh and now - _unset_at.get(self.key, float("-inf")) < _TRUST_S:
            return False
        if internal_kv._internal_kv_exists(self.key, namespace=_NAMESPACE):
            return True
        if len(_unset_at) > 64:
            _unset_at.clear()
        _unset_at[self.key] = now
        return False

    def set(self) -> None:
        # A Ray Client driver (ray://) has no GCS connection: its tasks then run on.
        if internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_put(self.key, b"1", namespace=_NAMESPACE)

    def clear_after(self, refs: Sequence[ray.ObjectRef]) -> None:
        """Delete the flag once every task in ``refs`` has ended, from a daemon thread."""

        def clear() -> None:
            with contextlib.suppress(Exception):  # the driver may be shutting Ray down
                ray.wait(list(refs), num_returns=len(refs))
                internal_kv._internal_kv_del(self.key, namespace=_NAMESPACE)

        threading.Thread(target=clear, daemon=True, name="piot-stop-flag").start()
