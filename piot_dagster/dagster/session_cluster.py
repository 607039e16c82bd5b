"""One local Ray cluster for a whole ``dagster dev`` session (``make ui``).

Every run that ``dagster dev`` launches is a process of its own. With no cluster to join,
each would start its own Ray, 4 to 5 s of a one-partition run's 11. This runs a command
(``dagster dev ...``) beside one ``ray start --head`` that every run joins through
``RAY_ADDRESS``, and stops that cluster, and only it, when the command ends. A cluster
the user runs already (``RAY_ADDRESS``, or a ``ray start --head`` on this machine) is
used as it is and never stopped.

    python -m piot_dagster.dagster.session_cluster dagster dev -f definitions.py
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["main", "running_cluster", "session_cluster"]

# How long `ray start` may take to report its node up (a loaded machine takes ~10 s).
START_TIMEOUT_S = 120
# How long the cluster may drain its tasks once asked to stop, before it is killed.
STOP_TIMEOUT_S = 40


def running_cluster() -> str | None:
    """The address of a Ray cluster this machine's ``ray.init()`` would join: the one in
    ``RAY_ADDRESS``, or else the last ``ray start --head`` here if its GCS still listens."""
    if address := os.environ.get("RAY_ADDRESS"):
        return address
    # Where `ray start` records its address for `ray.init()`; Ray exposes no public way to
    # read it. A cluster that was killed leaves the file behind, hence the probe.
    from ray._common.utils import get_ray_address_file

    recorded = Path(get_ray_address_file(None))
    if not recorded.exists():
        return None
    address = recorded.read_text().strip()
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return address
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def session_cluster() -> Iterator[str]:
    """A local Ray cluster (``ray start --head --block``) for the ``with`` block; its GCS
    address. Its files live in a folder of its own, so no other ``ray.init()`` on this
    machine joins it by accident, and nothing of it is left once it has stopped."""
    folder = tempfile.mkdtemp(prefix="piot-ray-")  # short: Ray's socket paths must fit
    port = _free_port()
    log = Path(folder) / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                # Ports of its own, where Ray has fixed defaults: another Ray on this
                # machine (a test's, a notebook's) may hold those.
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}",
                f"--metrics-export-port={_free_port()}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--block",
            ],
            env={**os.environ, "RAY_TMPDIR": folder},
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: the terminal's Ctrl-C goes to the command, and the cluster
            # stops after it, once its runs have ended.
            start_new_session=True,
        )
    try:
        _wait_started(proc, log)
        yield f"127.0.0.1:{port}"
    finally:
        # SIGTERM makes `ray start --block` drain and stop every process it started.
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv`` (a command and its arguments) with a Ray cluster for its lifetime;
    its exit code."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print(f"usage: python -m {__spec__.name} COMMAND [ARG...]", file=sys.stderr)
        return 2
    existing = running_cluster()
    if existing is not None:
        print(f"Ray: runs join the cluster at {existing}, which stays up afterwards")
        return _run(command, dict(os.environ))
    print("Ray: starting a local cluster that every run of this session joins")
    with session_cluster() as address:
        print(f"Ray: cluster up at {address}; it stops when this session ends")
        return _run(command, {**os.environ, "RAY_ADDRESS": address})


def _run(command: list[str], env: dict[str, str]) -> int:
    """``command`` in the foreground; a SIGTERM to us is passed on to it. Ctrl-C reaches
    it from the terminal directly; we wait for it to finish either way."""
    proc = subprocess.Popen(command, env=env)
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: proc.terminate()),
    }
    try:
        return proc.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _wait_started(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"`ray start --head` did not start a cluster within {START_TIMEOUT_S} s; its "
                f"output:\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
