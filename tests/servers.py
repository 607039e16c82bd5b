"""Object-store servers the tests start on 127.0.0.1, each stopped by its own PID: moto's
standalone S3 server and Azurite (Azure Blob Storage, from npm). Under CI=true a server
that cannot start fails the tests that need it; elsewhere they are skipped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dagster_server import BIN, ROOT, free_port, reset_signals

# Azurite's well-known development account (public, in Azure's documentation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE = Path(
    os.environ.get("PIOT_AZURITE", ROOT / ".node" / "node_modules" / ".bin" / "azurite-blob")
)
# Keys the S3 tests sign with; moto accepts any unless told to check them.
S3_KEY_ID, S3_SECRET = "piot-test-key", "piot-test-secret-0123456789"


def unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def process_on_port(
    command: list[str], port: int, log: Path, env: dict[str, str]
) -> Iterator[None]:
    """``command`` listening on 127.0.0.1:``port`` until the block ends; then SIGTERM (and
    SIGKILL if it lingers) to that process alone."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=reset_signals
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                unavailable(f"{command[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_server(log: Path, **env: str) -> Iterator[str]:
    """moto's standalone S3 server; its endpoint URL. ``env`` configures it, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT="0"`` to make it check credentials."""
    port = free_port()
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with process_on_port(command, port, log, {**os.environ, **env}):
        yield f"http://127.0.0.1:{port}"


def s3_options(endpoint: str) -> dict[str, str]:
    return {
        "aws_endpoint_url": endpoint,
        "aws_access_key_id": S3_KEY_ID,
        "aws_secret_access_key": S3_SECRET,
        "aws_region": "us-east-1",
    }


def new_bucket(endpoint: str) -> str:
    """A fresh bucket on the server (obstore and Polars cannot create one)."""
    import boto3

    name = f"piot-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def azurite(folder: Path) -> Iterator[str]:
    """Azurite's blob service; its endpoint URL (which ends with the account's name)."""
    if not AZURITE.exists():
        unavailable(f"Azurite is not installed at {AZURITE}: run `make test` or .ci/run")
    port = free_port()
    command = [
        str(AZURITE),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(folder),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--silent",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    with process_on_port(command, port, folder / "azurite.log", dict(os.environ)):
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"


def azure_options(endpoint: str, key: str = AZURITE_KEY) -> dict[str, str]:
    return {"account_name": AZURITE_ACCOUNT, "account_key": key, "endpoint": endpoint}


def new_container(endpoint: str) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"piot-{uuid.uuid4().hex[:12]}"
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    BlobServiceClient.from_connection_string(connection).create_container(name)
    return name
