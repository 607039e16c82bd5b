"""Whether the Dagster process sees what Ray workers wrote.

A worker on another machine that writes to a local ``base_dir`` writes to its own disk:
the run would report partitions that the Dagster process (and every downstream asset)
cannot read. After a fan-out, each written file is looked up in one listing and must be
there as the worker stored it. A file missing or different may have been
replaced by a concurrent writer since; the node that wrote it is then probed: the
Dagster process stores a token and a task pinned to that node reads it back. A node
that cannot read it does not share the storage, and its partitions are reported unseen.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from piot_dagster.engine.ray_tasks import Node, PeriodResult
from piot_dagster.storage import Storage, Stored

__all__ = ["seen", "unseen"]

# A probe reads a few bytes: it must not wait for a CPU behind a busy fan-out.
_PROBE_OPTIONS = {"num_cpus": 0, "max_retries": 0}
_PROBE_TIMEOUT_S = 60


def unseen(storage: Storage, results: Sequence[PeriodResult]) -> list[PeriodResult]:
    """The results whose files this process cannot see, as written or replaced since."""
    folders = {posixpath.dirname(f.key) for r in results for f in r.written.files}
    # One listing: the folder itself, or the folder above them all (a Delta table's
    # partition folders, a symbol's folders), listed at every depth.
    common = posixpath.commonpath(folders) if folders and "" not in folders else ""
    found = storage.list(common.split("/") if common else [], recursive=len(folders) > 1)
    listed: dict[str, Stored] = {k: v.stored for k, v in found.items()}
    suspects = [r for r in results if any(listed.get(f.key) != f.stored for f in r.written.files)]
    if not suspects:
        return []
    sharing = {node: _shares_storage(storage, node) for node in {r.node for r in suspects}}
    return [r for r in suspects if not sharing[r.node]]


def seen(storage: Storage, results: Sequence[PeriodResult]) -> list[PeriodResult]:
    """The results whose files this process sees; none if that cannot be checked now (a
    run failing or interrupted records only what it can vouch for)."""
    try:
        lost = {id(r) for r in unseen(storage, results)}
    except Exception:
        return []
    return [r for r in results if id(r) not in lost]


def _shares_storage(storage: Storage, node: Node) -> bool:
    """Whether a task on ``node`` reads what this process stores."""
    token = uuid.uuid4().hex
    key = f".piot-probe-{token}"
    storage.put(key, token.encode(), token=token, proceed=lambda: True)
    try:
        probe = _read_probe.options(
            **_PROBE_OPTIONS,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
        ).remote(storage, key)
        seen = ray.get(probe, timeout=_PROBE_TIMEOUT_S)
    except (ray.exceptions.RayError, TimeoutError):
        # The node died or cannot be reached: nothing it wrote can be confirmed.
        return False
    finally:
        storage.delete(key)
    return seen == token.encode()


@ray.remote
def _read_probe(storage: Storage, key: str) -> bytes | None:
    try:
        return storage.get(key)
    except FileNotFoundError:
        return None
