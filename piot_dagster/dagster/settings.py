"""An asset's settings: the IO manager's fields, overridden by the asset's metadata.

Metadata values may be ``dg.EnvVar``, read when the run uses them. Storage options that
may be secret must be: a literal value in an asset's metadata would show in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from piot_dagster.engine.ray_tasks import check_remote_options
from piot_dagster.storage import is_secret

__all__ = ["OVERRIDABLE", "Settings", "env_value", "resolve"]

OVERRIDABLE = (
    "base_dir",
    "storage_options",
    "date_column",
    "partition_columns",
    "max_concurrency",
    "remote_options",
)


@dataclass(frozen=True)
class Settings:
    base_dir: str | None
    storage_options: dict[str, str] | None
    date_column: str | None
    # The column of each non-time dimension of multi-partitions, by dimension name.
    partition_columns: dict[str, str] | None
    max_concurrency: int
    remote_options: dict[str, Any]
    # The format's own settings by name, such as RayDeltaIOManager's schema_mode.
    own: dict[str, Any] = field(default_factory=dict)


def resolve(
    fields: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    asset: str,
    own: Sequence[str] = (),
) -> Settings:
    """The IO manager's ``fields`` overridden by ``metadata``, checked: the shared
    settings (:data:`OVERRIDABLE`) and the format's ``own``. Errors name ``asset`` and
    the setting."""
    names = (*OVERRIDABLE, *own)
    overrides = {k: _value(v) for k, v in (metadata or {}).items() if k in names}
    merged = {**{k: fields.get(k) for k in names}, **overrides}
    try:
        options = check_remote_options(merged["remote_options"])
    except (TypeError, ValueError) as exc:
        exc.add_note(f"in asset {asset}")
        raise
    limit = merged["max_concurrency"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(
            f"asset {asset}: max_concurrency must be an int of at least 1, not {limit!r}"
        )
    storage_options = merged["storage_options"]
    if "storage_options" in overrides and isinstance(storage_options, Mapping):
        storage_options = _from_metadata(storage_options, asset)
    columns = merged["partition_columns"]
    if columns is not None and (
        not isinstance(columns, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items())
    ):
        raise TypeError(
            f"asset {asset}: partition_columns must map dimension names to column names, "
            f"such as {{'symbol': 'symbol'}}, not {columns!r}"
        )
    return Settings(
        base_dir=_env(merged["base_dir"], "base_dir", asset),
        storage_options=storage_options,
        date_column=merged["date_column"],
        partition_columns=dict(columns) if columns is not None else None,
        max_concurrency=limit,
        remote_options=options,
        own={k: merged[k] for k in own},
    )


def _value(value: object) -> object:
    """A metadata entry's plain value (Dagster wraps some in MetadataValue)."""
    return getattr(value, "value", value) if not isinstance(value, dg.EnvVar) else value


def env_value(value: object, name: str) -> Any:
    """``value``, or the value of the environment variable a ``dg.EnvVar`` names, read now;
    an unset one is a ``ValueError`` naming ``name`` and the variable."""
    if not isinstance(value, dg.EnvVar):
        return value
    resolved = value.get_value()
    if resolved is None:
        raise ValueError(
            f"{name} reads the environment variable {value.env_var_name!r}, which is not set "
            f"in this process"
        )
    return resolved


def _env(value: object, name: str, asset: str) -> Any:
    try:
        return env_value(value, name)
    except ValueError as exc:
        exc.add_note(f"in asset {asset}")
        raise


def _from_metadata(options: Mapping[Any, Any], asset: str) -> dict[Any, Any]:
    """Storage options given in an asset's metadata, each EnvVar read; a literal value of
    an option that may be secret is refused."""
    resolved = {}
    for key, value in options.items():
        literal = isinstance(value, str) and not isinstance(value, dg.EnvVar)
        if literal and isinstance(key, str) and is_secret(key):
            raise ValueError(
                f"asset {asset}: storage_options[{key!r}] is written literally in the "
                f"asset's metadata, which the Dagster UI shows; pass it as "
                f"dg.EnvVar('NAME') instead"
            )
        resolved[key] = _env(value, f"storage_options[{key!r}]", asset)
    return resolved
