"""The resources ``partitioned_query`` gives its assets: one IO manager per format, each
with its Ray connection, shared by every asset of the same settings.

Dagster merges definitions whose resources under one key are the same object, and
refuses two objects under one key, equal or not. So the resources are cached by their
settings, and the key says which settings they are:

- default settings (no ``ray``, or a ``RayResource()`` of default fields, and the IO
  managers' defaults) use the plain keys, ``piot_parquet_io_manager`` and
  ``piot_delta_io_manager``, and one module-level object each;
- other settings use ``<plain key>_<digest>``, where ``<digest>`` is the first 8 hex
  digits of the SHA-256 of the settings as canonical JSON (the Ray resource's class and
  fields, and the IO managers' options): equal settings give the same key and the same
  objects, from however many YAML files or ``partitioned_query`` calls; different
  settings a different key.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

import dagster as dg

from piot_dagster.dagster.formats.registry import FORMATS
from piot_dagster.dagster.ray_resource import RayResource

__all__ = ["IO_MANAGER_OPTIONS", "io_managers"]

# The IO managers' options set per set of resources (the other shared settings, such as
# base_dir or max_concurrency, are set per asset, in its metadata).
IO_MANAGER_OPTIONS = ("infeasible_timeout_s",)

_LOCK = threading.Lock()
_CACHE: dict[str, tuple[str, dict[str, dg.ConfigurableIOManager]]] = {}


def io_managers(
    ray: Any = None, options: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, dg.ConfigurableIOManager]]:
    """The key suffix (``""`` for the defaults) and the IO managers by resource key, for
    the Ray resource ``ray`` (a :class:`RayResource`, a dagster-ray resource, or None for
    ``RayResource()``) and the IO managers' ``options``."""
    unknown = set(options or {}) - set(IO_MANAGER_OPTIONS)
    if unknown:
        raise ValueError(
            f"IO manager options are {', '.join(IO_MANAGER_OPTIONS)}, "
            f"not {', '.join(sorted(unknown))}"
        )
    ray = RayResource() if ray is None else ray
    settings = {"ray": _described(ray), "io_manager": dict(sorted((options or {}).items()))}
    text = json.dumps(settings, sort_keys=True, default=str)
    with _LOCK:
        if text not in _CACHE:
            default = settings == {"ray": _described(RayResource()), "io_manager": {}}
            suffix = "" if default else "_" + hashlib.sha256(text.encode()).hexdigest()[:8]
            _CACHE[text] = (
                suffix,
                {
                    f.resource_key + suffix: f.io_manager(ray=ray, **(options or {}))
                    for f in FORMATS.values()
                },
            )
        return _CACHE[text]


def _described(ray: Any) -> dict[str, Any]:
    """A Ray resource's class and fields: what makes two of them equal."""
    fields = ray.model_dump() if hasattr(ray, "model_dump") else {"id": id(ray)}
    return {"class": f"{type(ray).__module__}.{type(ray).__qualname__}", "fields": fields}
