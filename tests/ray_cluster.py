"""A real multi-node Ray cluster on this machine, as shared/notes/cluster-and-storage.md
describes it: ``ray start --head``, plus nodes started with ``ray start --address`` in a
private mount namespace (``unshare -m``) with a tmpfs of their own over a folder, so what
they write there is invisible to every other process, as on a second machine.

Torn down by PID, never with ``ray stop``: the processes of this cluster alone (those
whose command line holds its temp dir, their descendants, the nodes' ``ray start``
processes and the head's client server), second nodes first, the GCS last.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ray

from tests.dagster_server import BIN, free_port, reset_signals
from tests.servers import unavailable

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
# Lost nodes are noticed in about 2 s instead of about 14 s.
FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}


@dataclass
class Node:
    """A second node: its ``ray start --block`` process and the folder private to it, or
    the memory cgroup that caps it."""

    process: subprocess.Popen
    private: Path | None
    resources: dict[str, float]
    cgroup: Path | None = None

    def oom_kills(self) -> int:
        """How many of the node's processes its memory cap has killed."""
        assert self.cgroup is not None
        control = (self.cgroup / "memory.oom_control").read_text()
        return int(dict(line.split() for line in control.splitlines()).get("oom_kill", 0))

    def peak_bytes(self) -> int:
        """The most memory the node's processes held at once."""
        assert self.cgroup is not None
        return int((self.cgroup / "memory.max_usage_in_bytes").read_text())

    def reset_peak(self) -> None:
        """Start :meth:`peak_bytes` over from what the node holds now."""
        assert self.cgroup is not None
        (self.cgroup / "memory.max_usage_in_bytes").write_text("0")

    def raylet_pid(self) -> int:
        for pid in _descendants({self.process.pid}):
            if "raylet/raylet" in cmdline(pid):
                return pid
        raise AssertionError("the node has no raylet")


@dataclass
class Cluster:
    temp_dir: Path
    port: int
    client_port: int
    log: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The GCS address, as `ray start --address` and ray.init take it."""
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def add_private_node(self, private: Path, resources: dict[str, float]) -> Node:
        """A node whose tmpfs over ``private`` only its own processes see."""
        if shutil.which("unshare") is None or os.geteuid() != 0:
            unavailable("a second node needs unshare -m and tmpfs mounts, run as root")
        private.mkdir(parents=True, exist_ok=True)
        start = self._start_node_command(resources)
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c"]
        return self._add_node(
            [*command, f"mount -t tmpfs tmpfs {private} && {start}"], resources, private=private
        )

    def add_capped_node(self, cap_bytes: int, resources: dict[str, float]) -> Node:
        """A node inside a memory cgroup of its own, capped at ``cap_bytes``: a child of
        this process's memory cgroup (cgroup v1), so nothing leaves it. A process of the
        node over the cap is killed."""
        cgroup = _memory_cgroup() / f"piot_capped_{os.getpid()}_{len(self.nodes)}"
        try:
            cgroup.mkdir()
            (cgroup / "memory.limit_in_bytes").write_text(str(cap_bytes))
            (cgroup / "memory.swappiness").write_text("0")
        except OSError as exc:
            unavailable(f"a memory-capped node needs a writable cgroup v1 memory hierarchy: {exc}")
        start = self._start_node_command(resources)
        return self._add_node(
            ["sh", "-c", f"echo $$ > {cgroup / 'cgroup.procs'} && {start}"],
            resources,
            cgroup=cgroup,
        )

    def _start_node_command(self, resources: dict[str, float]) -> str:
        """The shell command that makes its process a node of this cluster."""
        return " ".join(
            [
                f"exec {BIN / 'ray'} start --address={self.address} --num-cpus=1",
                f"--resources='{json.dumps(resources)}' --object-store-memory=200000000",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                "--disable-usage-stats --block",
            ]
        )

    def _add_node(
        self,
        command: list[str],
        resources: dict[str, float],
        *,
        private: Path | None = None,
        cgroup: Path | None = None,
    ) -> Node:
        """The node ``command`` starts, once the cluster has it."""
        with open(self.log, "a") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
                preexec_fn=reset_signals,
            )
        node = Node(process, private, resources, cgroup)
        self.nodes.append(node)
        _wait_for_nodes(self.address, len(self.nodes) + 1)
        return node

    def remove(self, node: Node) -> None:
        """Stop ``node`` (whatever is left of it) by PID, and remove its cgroup."""
        _terminate(_descendants({node.process.pid}))
        node.process.wait(timeout=30)
        self.nodes.remove(node)
        if node.cgroup is not None:
            # Emptied by the kills above; the kernel frees it a moment later.
            deadline = time.monotonic() + 20
            while node.cgroup.exists() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    node.cgroup.rmdir()
                time.sleep(0.2)

    def pids(self) -> set[int]:
        """Every process of this cluster."""
        ours = {pid for pid in _all_pids() if str(self.temp_dir) in cmdline(pid)}
        ours |= {n.process.pid for n in self.nodes}
        ours |= {
            pid
            for pid in _all_pids()
            if "ray.util.client.server" in cmdline(pid) and f":{self.port} " in cmdline(pid)
        }
        return _descendants(ours)

    def teardown(self) -> None:
        for node in list(self.nodes):
            self.remove(node)
        rest = self.pids()
        gcs = {pid for pid in rest if "gcs_server" in cmdline(pid)}
        _terminate(rest - gcs)
        _terminate(gcs)
        _terminate(self.pids(), signal.SIGKILL)


@contextlib.contextmanager
def ray_cluster(temp_dir: Path) -> Iterator[Cluster]:
    """A head node (1 CPU, resource ``head``) with a Ray Client server, torn down by PID
    when the block ends. Its ``system-config`` notices a lost node within about 2 s."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(temp_dir, free_port(), free_port(), temp_dir / "ray.log")
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={cluster.port}",
        f"--ray-client-server-port={cluster.client_port}",
        "--num-cpus=1",
        '--resources={"head": 1}',
        "--object-store-memory=200000000",
        "--include-dashboard=false",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--temp-dir={temp_dir / 'ray'}",
        f"--system-config={json.dumps(FAST_HEALTH_CHECKS)}",
        "--disable-usage-stats",
    ]
    try:
        with open(cluster.log, "w") as out:
            subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=ENV, check=True, timeout=120
            )
        _wait_for_nodes(cluster.address, 1)
        yield cluster
    finally:
        cluster.teardown()
        shutil.rmtree(temp_dir / "ray", ignore_errors=True)


@contextlib.contextmanager
def attached_cluster(temp_dir: Path) -> Iterator[Cluster]:
    """:func:`ray_cluster` for a test module whose runs attach to it: the tests' local Ray
    session ends first, and the tests after the module start it again."""
    if ray.is_initialized():
        ray.shutdown()
    with ray_cluster(temp_dir) as started:
        yield started
    if ray.is_initialized():
        ray.shutdown()


def alive_nodes(address: str) -> list[dict]:
    """The cluster's alive nodes, asked from a separate driver (this process may hold
    another Ray session)."""
    script = (
        f"import json, ray; ray.init(address='{address}', logging_level='ERROR');"
        "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))"
    )
    out = subprocess.run(
        [str(BIN / "python"), "-c", script], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_for_nodes(address: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(alive_nodes(address)) < count:
        assert time.monotonic() < deadline, f"the cluster at {address} has fewer than {count} nodes"
        time.sleep(0.5)


def _memory_cgroup() -> Path:
    """This process's own cgroup in the v1 memory hierarchy."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    unavailable("no cgroup v1 memory hierarchy is mounted")
    raise AssertionError  # unavailable() does not return


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid: int) -> str:
    """A process's command line, its arguments joined by spaces; empty once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _parent(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _terminate(pids: set[int], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
