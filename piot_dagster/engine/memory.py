"""Telling a task that ran out of memory from one that crashed otherwise.

Ray's memory monitor raises :class:`ray.exceptions.OutOfMemoryError`, whose message names
the node and its memory. A memory cap that the kernel enforces (a container's or a
cgroup's) kills the worker outright: Ray then reports only that the worker died
(:class:`ray.exceptions.WorkerCrashedError`). The evidence is left on the node: its
cgroup counts the processes its cap killed. So each alive node is asked, by a task that
needs no CPU, for its cap and that count; a crash is reported as out of memory only
where some cap has killed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["MemoryEvidence", "NodeMemory", "own_memory"]

ADVICE = (
    "give each task less to hold: smaller periods (a finer time_unit or partitions_def), "
    "fewer tasks at once on a node by reserving memory for each "
    '(remote_options={"memory": <bytes>}), or nodes with more memory'
)
# How long the nodes may take to answer; a node that does not is left out.
_PROBE_TIMEOUT_S = 15.0
# Ray's message, "... Memory on the node (IP: ..., ID: ...) was 9.5GB used / 10GB limit";
# older versions say where the task was in between.
_RAY_OOM = re.compile(
    r"Memory on the node \(IP: (?P<ip>[^,]+), ID: (?P<id>\w+)\)(?: where .*?)? was "
    r"(?P<used>[\d.]+\s*GB)(?: used)? / (?P<total>[\d.]+\s*GB)",
    re.DOTALL,
)


@dataclass(frozen=True)
class NodeMemory:
    """A node's memory cap (its cgroup's limit, else its RAM) and how many processes that
    cap has killed."""

    id: str
    ip: str
    cap_bytes: int
    oom_kills: int

    def __str__(self) -> str:
        return f"node {self.id[:12]} ({self.ip}), capped at {self.cap_bytes / 2**30:.1f} GiB"


def own_memory() -> tuple[int, int]:
    """This process's memory cap in bytes and how many processes its cgroup's cap has
    killed (cgroup v1 or v2; without a cgroup limit: the machine's RAM, and 0)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    files = _cgroup_files()
    if files is None:
        return ram, 0
    limit, counts = files
    try:
        text = limit.read_text().strip()
        fields = dict(line.split() for line in counts.read_text().splitlines())
    except OSError:
        return ram, 0
    cap = ram if text == "max" else min(ram, int(text))
    return cap, int(fields.get("oom_kill", 0))


def _cgroup_files() -> tuple[Path, Path] | None:
    """This process's memory cgroup's limit and event counts: v1's if it has one, else
    v2's (a hybrid host has both)."""
    unified = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return folder / "memory.limit_in_bytes", folder / "memory.oom_control"
        if not controllers:
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            unified = folder / "memory.max", folder / "memory.events"
    return unified


@ray.remote(num_cpus=0, max_retries=0)
def _probe() -> tuple[int, int]:
    return own_memory()


class MemoryEvidence:
    """What a failed fan-out's errors say about memory; the nodes are asked at most once."""

    def __init__(self) -> None:
        self._killed: list[NodeMemory] | None = None

    def explain(self, exc: BaseException) -> str | None:
        """Why ``exc`` is out of memory and what to do, or None without evidence of it."""
        if isinstance(exc, ray.exceptions.OutOfMemoryError):
            found = _RAY_OOM.search(str(exc))
            where = (
                f"Ray's memory monitor killed it on node {found['id'][:12]} ({found['ip']}), "
                f"which used {found['used']} of its {found['total']} limit"
                if found
                else "Ray's memory monitor killed it"
            )
            return f"out of memory: {where}; {ADVICE}"
        if isinstance(exc, ray.exceptions.WorkerCrashedError):
            killed = self.killed()
            if killed:
                nodes = "; ".join(f"{node} ({node.oom_kills} killed so far)" for node in killed)
                return (
                    f"out of memory: its worker died, and the memory cap killed processes "
                    f"on {nodes}; {ADVICE}"
                )
        return None

    def killed(self) -> list[NodeMemory]:
        """The alive nodes whose memory cap has killed some process."""
        if self._killed is None:
            self._killed = [node for node in _node_memory() if node.oom_kills]
        return self._killed


def _node_memory() -> list[NodeMemory]:
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    probes = {
        _probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote(): node
        for node in nodes
    }
    # A late probe is left to finish: ray.cancel racing a task's end aborts the driver
    # in Ray 2.60 (stop_flag.py).
    ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=_PROBE_TIMEOUT_S)
    found = []
    for ref in ready:
        try:
            cap, kills = ray.get(ref)
        except ray.exceptions.RayError:
            continue
        node = probes[ref]
        found.append(NodeMemory(node, nodes[node], cap, kills))
    return found
