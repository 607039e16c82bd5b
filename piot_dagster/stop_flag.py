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
import uuid
from collections.abc import Sequence

import ray
from ray.experimental import internal_kv

__all__ = ["StopFlag"]

_NAMESPACE = "piot_dagster"


class StopFlag:
    """One fan-out's flag: picklable, so every task of the fan-out carries it."""

    def __init__(self) -> None:
        self.key = f"stop:{uuid.uuid4().hex}".encode()

    def is_set(self) -> bool:
        # ~0.6 ms from a worker: one GCS lookup per task, next to a query of many ms.
        return bool(internal_kv._internal_kv_exists(self.key, namespace=_NAMESPACE))

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
