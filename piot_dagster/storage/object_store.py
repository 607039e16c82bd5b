"""An object store (S3, GCS, Azure) through obstore: one PUT per partition (a multipart
upload, completed at once, for a large one), one GET per read, one listing per folder.

A PUT, or the completion of a multipart upload, replaces an object atomically, so a
partition is never seen half-written; a failed or stopped upload is aborted, and a
failed task leaves nothing a reader sees. Reads fetch each object whole in a single GET
(into memory, or streamed into a nameless local file for a large one): a reader that made
several ranged GETs (as Polars' own Parquet reader does) could get rows of two versions
mixed while another run overwrites the object.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import polars as pl

from piot_dagster.errors import StorageError, UploadAbandoned
from piot_dagster.extras import LazyModule
from piot_dagster.storage.base import Listed, Storage, Stored
from piot_dagster.storage.location import Location, redact

if TYPE_CHECKING:
    from obstore.store import ObjectStore

# Imported on first use: local storage needs no obstore (the [cloud] extra installs it).
obstore = LazyModule("obstore")

__all__ = ["PART_BYTES", "ObjectStorage", "store_options"]

# Files larger than this go up as a multipart upload of parts this size, a few at once:
# a task holds at most PART_BYTES * _PARTS_IN_FLIGHT of a partition in memory. S3 wants
# parts of at least 5 MiB, and at most 10,000 of them (80 GiB here).
PART_BYTES = 8 * 2**20
_PARTS_IN_FLIGHT = 4
# obstore takes the HTTP client's options apart from the store's; Polars takes both in
# one mapping, optionally with the provider's prefix.
_CLIENT_OPTIONS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "http1_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "randomize_addresses",
        "read_timeout",
        "timeout",
        "user_agent",
    }
)
_PREFIXES = {"s3": "aws_", "gcs": "google_", "azure": "azure_"}
_ENDPOINT_KEYS = ("endpoint", "endpoint_url", "base_url")
# Enough retries for a busy server, few enough that an unreachable one fails in seconds.
_RETRY = {"max_retries": 4, "retry_timeout": dt.timedelta(seconds=30)}


_stores: dict[tuple[str, tuple[tuple[str, str], ...]], ObjectStore] = {}
_stores_lock = threading.Lock()


class ObjectStorage(Storage):
    """Objects under ``<scheme>://<bucket>/<prefix>``: the location's URI."""

    @property
    def store(self) -> ObjectStore:
        """This process's client for the location, made once and shared by its threads."""
        location = self.location
        cache_key = (location.uri, tuple(sorted(location.options.items())))
        with _stores_lock:
            store = _stores.get(cache_key)
            if store is None:
                store = _stores[cache_key] = _open(location)
        return store

    def check(self) -> None:
        _require_credentials(self.location)
        try:
            next(iter(obstore.list(self.store, chunk_size=1)), None)
        except Exception as exc:
            raise self.error(exc, "list") from None

    def put(
        self, key: str, data: bytes, *, token: str, proceed: Callable[[], bool]
    ) -> Stored | None:
        if not proceed():
            return None
        try:
            result = obstore.put(self.store, key, data, use_multipart=False)
        except Exception as exc:
            raise self.error(exc, "write", key) from None
        return Stored(len(data), result["e_tag"] or "")

    def spool(self, key: str, token: str) -> Path:
        folder = Path(tempfile.gettempdir()) / "piot-spool"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / f"{token}-{key.rsplit('/', 1)[-1]}"

    def put_file(self, key: str, spooled: Path, *, proceed: Callable[[], bool]) -> Stored | None:
        """A small file in one PUT; a larger one as a multipart upload of
        :data:`PART_BYTES` parts read from the file as they go, completed only if
        ``proceed()`` still says yes once every part is up, and aborted otherwise (or on
        any failure): no reader ever sees a part of it."""
        try:
            size = spooled.stat().st_size
            if size <= PART_BYTES:
                return self.put(key, spooled.read_bytes(), token="", proceed=proceed)
            try:
                with (
                    open(spooled, "rb") as source,
                    obstore.open_writer(
                        self.store, key, buffer_size=PART_BYTES, max_concurrency=_PARTS_IN_FLIGHT
                    ) as upload,
                ):
                    while part := source.read(PART_BYTES):
                        upload.write(part)
                    if not proceed():
                        # Leaving the block by an exception aborts the upload.
                        raise UploadAbandoned
            except UploadAbandoned:
                return None
            except Exception as exc:
                raise self.error(exc, "write", key) from None
            # The upload gives no ETag back: the object's, as a reader will find it.
            return Stored(size, self._e_tag(key))
        finally:
            spooled.unlink(missing_ok=True)

    def _e_tag(self, key: str) -> str:
        try:
            return obstore.head(self.store, key)["e_tag"] or ""
        except Exception as exc:
            raise self.error(exc, "read", key) from None

    def get(self, key: str) -> bytes:
        with self._reading(key):
            return bytes(obstore.get(self.store, key).bytes())

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """A GET of ``key``'s failures as a reader is told them: the object's URI when it
        is missing, else what :meth:`error` makes of it."""
        try:
            yield
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
        except Exception as exc:
            raise self.error(exc, "read", key) from None

    def snapshot(self, key: str, version: str = "") -> BinaryIO:
        """The object streamed from one GET into a temporary file that has no name (it
        vanishes when closed, or should the process die), :data:`PART_BYTES` at a time."""
        file = tempfile.TemporaryFile(prefix="piot-read-")  # noqa: SIM115 (returned open)
        try:
            self._download(key, version, file)
        except BaseException:
            file.close()
            raise
        file.seek(0)
        return file

    def _download(self, key: str, version: str, file: BinaryIO) -> None:
        """``key`` into ``file`` from one GET, pinned to ``version``: should the client
        resume a broken download, it cannot splice in another version."""
        with self._reading(key):
            try:
                result = obstore.get(self.store, key, options={"if_match": version or None})
            except obstore.exceptions.PreconditionError:
                # Replaced since the listing: the new version, as a later reader gets it.
                result = obstore.get(self.store, key)
            for chunk in result.stream(min_chunk_size=PART_BYTES):
                file.write(memoryview(chunk))
        if file.tell() != result.meta["size"]:
            raise StorageError(
                f"reading {self.uri(key)} ended after {file.tell()} of {result.meta['size']} "
                f"bytes; try again"
            )

    def list(self, folders: Sequence[str], *, recursive: bool = False) -> dict[str, Listed]:
        prefix = "/".join(folders)
        try:
            if recursive:
                pages = obstore.list(self.store, prefix=prefix or None)
                found = [meta for page in pages for meta in page]
            else:
                # Direct children only: the folder's own objects, however deep the others go.
                found = obstore.list_with_delimiter(self.store, prefix=prefix or None)["objects"]
        except Exception as exc:
            raise self.error(exc, "list", prefix) from None
        return {
            meta["path"]: Listed(meta["path"], Stored(meta["size"], meta["e_tag"] or ""))
            for meta in found
            if not meta["path"].rsplit("/", 1)[-1].startswith(".")
        }

    def create(self, key: str, data: bytes) -> bool:
        try:
            obstore.put(self.store, key, data, mode="create", use_multipart=False)
        except obstore.exceptions.AlreadyExistsError:
            return False
        except Exception as exc:
            raise self.error(exc, "write", key) from None
        return True

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self.store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self.error(exc, "delete", key) from None

    def read_schema(self, key: str) -> pl.Schema:
        # Polars reads only the footer, with its own cloud IO.
        try:
            return pl.scan_parquet(
                self.uri(key), storage_options=dict(self.location.options)
            ).collect_schema()
        except Exception as exc:
            raise self.error(exc, "read", key) from None

    def error(self, exc: Exception, doing: str, key: str = "") -> StorageError:
        """``exc`` as a :class:`StorageError` that says what to fix, names the bucket and
        never a secret (nothing is chained: the original text may carry one)."""
        location = self.location
        text = str(exc)
        code = re.search(r"<Code>(\w+)</Code>", text)
        where = f"{location.uri}/{key}".rstrip("/")
        bucket = f"{'container' if location.provider == 'azure' else 'bucket'} {location.bucket!r}"
        endpoint = _endpoint(location)
        if code and code.group(1) in ("NoSuchBucket", "ContainerNotFound"):
            message = (
                f"the {bucket} does not exist{f' at {endpoint}' if endpoint else ''}; create "
                f"it, or fix base_dir"
            )
        elif code and code.group(1) in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "InvalidAuthenticationInfo",
        ):
            message = (
                f"access to the {bucket} was refused ({code.group(1)}) when trying to "
                f"{doing} {where}: check the credentials in storage_options"
            )
        elif re.search(r"error sending request|[Cc]onnection refused|dns error|timed out", text):
            message = (
                f"cannot reach {endpoint or location.provider} to {doing} {where}: check the "
                f"endpoint in storage_options and that the server is up"
            )
        else:
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            message = f"cannot {doing} {where}: {first}"
        return StorageError(redact(message, location.options))


def _open(location: Location) -> ObjectStore:
    config, client = _split_options(location)
    from_url = obstore.store.from_url  # outside the try: a missing [cloud] extra says so
    try:
        return from_url(
            location.uri,
            config=config or None,
            client_options=client,
            retry_config=_RETRY,  # type: ignore[arg-type]
        )
    except Exception as exc:
        text = redact(str(exc).strip().splitlines()[0], location.options)
        unknown = re.search(r"Configuration key: '([^']+)'", text)
        if unknown:
            raise ValueError(
                f"storage_options key {unknown.group(1)!r} is not an option for "
                f"{location.scheme}:// (Polars' cloud IO takes object_store's keys, such as "
                f"{_EXAMPLE_KEYS[location.provider]})"
            ) from None
        raise ValueError(f"storage_options for {location.uri}: {text}") from None


_EXAMPLE_KEYS = {
    "s3": "aws_access_key_id, aws_secret_access_key, aws_region, aws_endpoint_url",
    "gcs": "google_service_account, google_service_account_key",
    "azure": "azure_storage_account_name, azure_storage_account_key, azure_storage_endpoint",
    "local": "",
}


def store_options(location: Location) -> dict[str, str]:
    """The location's options in one mapping, as object_store (and so delta-rs) reads
    them: Polars' own, plus ``allow_http`` for an ``http://`` endpoint, as Polars does
    (a local test server)."""
    prefix = _PREFIXES[location.provider]
    options = dict(location.options)
    allowed = any(key.lower().removeprefix(prefix) == "allow_http" for key in options)
    if not allowed and (_endpoint(location) or "").startswith("http://"):
        options["allow_http"] = "true"
    return options


def _split_options(location: Location) -> tuple[dict[str, str], dict[str, Any]]:
    """The store's options and the HTTP client's, as obstore takes them."""
    prefix = _PREFIXES[location.provider]
    config: dict[str, str] = {}
    client: dict[str, Any] = {}
    for key, value in store_options(location).items():
        bare = key.lower().removeprefix(prefix)
        if bare in _CLIENT_OPTIONS:
            client[bare] = value
        else:
            config[key] = value
    return config, client


def _endpoint(location: Location) -> str | None:
    for key, value in location.options.items():
        if (
            key.lower().removeprefix(_PREFIXES[location.provider]).removeprefix("storage_")
            in _ENDPOINT_KEYS
        ):
            return value
    return None


def _require_credentials(location: Location) -> None:
    """An S3-compatible server of one's own (an endpoint is set) takes keys: without them
    the client would ask the cloud's instance metadata service, which it is not."""
    if location.provider != "s3" or _endpoint(location) is None:
        return
    names = {k.lower().removeprefix("aws_") for k in location.options}
    if names & {"access_key_id", "skip_signature"} or _env_has_credentials(os.environ):
        return
    raise StorageError(
        f"storage_options for {location.uri} set an endpoint but no credentials: add "
        f"aws_access_key_id and aws_secret_access_key (for example through dg.EnvVar), or "
        f"aws_skip_signature='true' for a public bucket"
    )


def _env_has_credentials(env: Mapping[str, str]) -> bool:
    return any(
        env.get(name)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE")
    )
