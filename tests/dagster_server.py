"""The code location and Dagster's processes as a user starts them: definitions.py loaded
in process (the definitions under defs/), the `dagster` CLI, and `dagster dev` for the
tests that drive GraphQL."""

import contextlib
import fcntl
import importlib.util
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# `make ui`'s launcher: one Ray cluster for a `dagster dev` session.
SESSION_CLUSTER = [sys.executable, "-m", "piot_dagster.dagster.session_cluster"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset_signals() -> None:
    # Background processes here inherit ignored SIGINT and SIGTERM (shared/notes/dagster.md).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def dagster_process(
    command: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen]:
    """A long-running Dagster command (`dagster dev`, `dagster-daemon run`) in a session of
    its own, logging to ``log_path``; stopped with SIGINT as Ctrl-C would (then SIGKILL)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=reset_signals,
        )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def dagster_dev(
    location: Path, env: dict[str, str], log_path: Path, launcher: Sequence[str] = ()
) -> Iterator[int]:
    """`dagster dev -f <location>` on a free port, once it listens; run by ``launcher``
    (a command prefix, such as `make ui`'s) if given."""
    port = free_port()
    command = [str(BIN / "dagster"), "dev", "-f", str(location), "-h", "127.0.0.1", "-p", str(port)]
    with dagster_process([*launcher, *command], env, log_path) as proc:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log_path.read_text()[-3000:]) from None
                time.sleep(0.5)
        yield port


def submit(port: int, job: str, tags: dict[str, str]) -> str:
    """Launch ``job`` through GraphQL once the code location has loaded; its run id."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    deadline = time.monotonic() + 120
    while True:  # /graphql answers once the code location has loaded
        try:
            return client.submit_job_execution(job, tags=tags)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_for(condition: object, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def finished(port: int, run_id: str) -> bool:
    from dagster_graphql import DagsterGraphQLClient

    status = DagsterGraphQLClient("127.0.0.1", port_number=port).get_run_status(run_id)
    return status in (
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    )


def run_cli(
    args: list[str], env: dict[str, str], timeout: int = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """``args`` run as a person runs them in a terminal: a pseudo-terminal is its
    controlling terminal, stdin, stdout and stderr. Returns what the terminal received."""
    controller, terminal = pty.openpty()

    def attach() -> None:
        reset_signals()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # after start_new_session's setsid

    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=attach,
    )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the last process holding the terminal closed it
                break
            if not chunk:
                break
            received += chunk
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, received[-3000:]
    finally:
        os.close(controller)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return received.decode(errors="replace")


def materialize_cli(env: dict[str, str], asset: str, *partitions: str) -> None:
    """`dagster asset materialize -f definitions.py --select <asset> <partitions...>`."""
    dagster = str(BIN / "dagster")
    run_cli(
        [dagster, "asset", "materialize", "-f", "definitions.py", "--select", asset, *partitions],
        env,
    )


def project_files(folder: Path) -> Path:
    """The Dagster home and .env that the Makefile gives a project in ``folder``, made by
    the Makefile itself; the home."""
    home = folder / ".dagster"
    make = ["make", "-s", "-C", str(folder), "-f", str(ROOT / "Makefile")]
    subprocess.run([*make, ".env", str(home / "dagster.yaml")], check=True)
    return home


def load_definitions() -> dg.Definitions:
    """The code location as definitions.py gives it, built anew: its modules read the
    environment (PIOT_TRADES_DB, PIOT_SOURCE_URI ...) when their definitions are built."""
    spec = importlib.util.spec_from_file_location("piot_definitions", ROOT / "definitions.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.defs()
