"""The ``.piot`` LazyFrame namespace, registered on ``import piot_dagster``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from piot_dagster.engine.execute import execute_on_ray
from piot_dagster.engine.periods import TimeUnit
from piot_dagster.engine.transport import ReturnAs

__all__ = ["PiotNamespace"]


@pl.api.register_lazyframe_namespace("piot")
class PiotNamespace:
    """``lf.piot``: piot_dagster's methods on a LazyFrame."""

    def __init__(self, lf: pl.LazyFrame) -> None:
        self._lf = lf

    def execute_on_ray(
        self,
        *,
        date_column: str,
        time_unit: TimeUnit,
        return_as: ReturnAs = "arrow",
        remote_options: Mapping[str, Any] | None = None,
        max_concurrency: int = 100,
    ) -> pl.LazyFrame:
        """Run this query on Ray, one task per calendar period; see
        :func:`piot_dagster.execute_on_ray`.

        Examples
        --------
        >>> lf.piot.execute_on_ray(date_column="date", time_unit="daily")  # doctest: +SKIP
        """
        return execute_on_ray(
            self._lf,
            date_column=date_column,
            time_unit=time_unit,
            return_as=return_as,
            remote_options=remote_options,
            max_concurrency=max_concurrency,
        )
