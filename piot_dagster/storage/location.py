"""Where partitions live: a ``base_dir`` URI and its storage options, parsed and checked.

``base_dir`` is a local path (or ``file://``) or an object-store URI: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix`` or ``abfs[s]://container/prefix``. The
options are the keys Polars' cloud IO takes (object_store's, such as
``aws_access_key_id`` or ``aws_endpoint_url``), all strings. Option values that may be
secret are never shown: :func:`redact` masks them in any text meant for a person.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["SUPPORTED", "Location", "is_secret", "parse_location", "redact"]

Provider = Literal["local", "s3", "gcs", "azure"]
_PROVIDERS: dict[str, Provider] = {
    "file": "local",
    "s3": "s3",
    "gs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}
SUPPORTED = "a local path, file://, s3://, gs://, az:// or abfs://"
# Option values shown as they are in messages; every other value may be a secret.
_PUBLIC_OPTION = re.compile(
    r"endpoint|url|region|allow_http|account_name|bucket|container|timeout|use_emulator"
    r"|skip_signature|virtual_hosted|user_agent"
)


@dataclass(frozen=True)
class Location:
    """A parsed ``base_dir``: the provider, the URI's authority (``bucket``, or for Azure
    ``container`` or ``container@account.dfs.core.windows.net``), the prefix inside it (a
    resolved absolute path for local storage) and the storage options."""

    provider: Provider
    scheme: str
    authority: str
    prefix: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def bucket(self) -> str:
        """The bucket, or the Azure container."""
        return self.authority.split("@", 1)[0]

    @property
    def uri(self) -> str:
        """The location as a person (and Polars and obstore) reads it; no options, so no
        secrets."""
        if self.provider == "local":
            return self.prefix
        return f"{self.scheme}://{self.authority}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"


def parse_location(base_dir: object, options: object = None) -> Location:
    """``base_dir`` and ``options`` checked: a known scheme, a bucket for object stores,
    and a mapping of string keys to string values.

    Examples
    --------
    >>> parse_location("s3://trades/daily", {"aws_region": "eu-west-1"}).uri
    's3://trades/daily'
    >>> parse_location("hdfs://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: base_dir 'hdfs://x' has the unknown scheme 'hdfs'; use a local path, ...
    """
    if not isinstance(base_dir, str | os.PathLike) or not str(base_dir).strip():
        raise ValueError(
            f"base_dir must be a non-empty path or URI ({SUPPORTED}), not {base_dir!r}"
        )
    checked = _check_options(options)
    text = str(base_dir)
    if "://" not in text:
        return Location("local", "file", "", str(Path(text).expanduser().resolve()), {})
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    provider = _PROVIDERS.get(scheme)
    if provider is None:
        raise ValueError(f"base_dir {text!r} has the unknown scheme {scheme!r}; use {SUPPORTED}")
    if provider == "local":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"base_dir {text!r} names the host {parts.netloc!r}; a file:// URI takes an "
                f"absolute path on this machine, e.g. file:///data/assets"
            )
        return Location("local", "file", "", str(Path(parts.path).resolve()), {})
    # abfs[s]://container@account.dfs.core.windows.net/prefix names the account too.
    if not parts.netloc.split("@", 1)[0]:
        raise ValueError(
            f"base_dir {text!r} names no bucket; write it as {scheme}://<bucket>/<prefix>"
        )
    return Location(provider, scheme, parts.netloc, parts.path.strip("/"), checked)


def _check_options(options: object) -> dict[str, str]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"storage_options must be a mapping of option names to strings, such as "
            f"{{'aws_region': 'eu-west-1'}}, not {type(options).__name__}"
        )
    bad = [str(k) for k, v in options.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(
            f"storage_options values must be strings (Polars' cloud IO takes no other type): "
            f"{', '.join(repr(k) for k in bad)} {'is' if len(bad) == 1 else 'are'} not; "
            f"write True as 'true' and numbers as text"
        )
    return dict(options)


def is_secret(option: str) -> bool:
    """Whether an option's value may be a secret: any option not known to be public."""
    return not _PUBLIC_OPTION.search(option.lower())


def redact(text: str, options: Mapping[str, str]) -> str:
    """``text`` with every option value that may be a secret replaced by ``***``."""
    for key, value in options.items():
        if value and len(value) > 2 and is_secret(key):
            text = text.replace(value, "***")
    return text
