"""How a worker ships a period's frame back to the driver (``return_as``)."""

from __future__ import annotations

import io
from typing import Literal

import polars as pl
import pyarrow as pa

__all__ = ["RETURN_AS", "ReturnAs", "decode", "encode"]

ReturnAs = Literal["arrow", "ipc", "parquet"]
RETURN_AS: tuple[ReturnAs, ...] = ("arrow", "ipc", "parquet")


def encode(df: pl.DataFrame, how: ReturnAs) -> pa.Table | bytes:
    """Arrow tables travel zero-copy through Ray's object store on one node; IPC and
    Parquet bytes pay an encode but compress (Parquet) or suit a remote driver."""
    if how == "arrow":
        return df.to_arrow()
    buffer = io.BytesIO()
    if how == "ipc":
        df.write_ipc(buffer)
    else:
        df.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def decode(payload: pa.Table | bytes, how: ReturnAs, schema: pl.Schema) -> pl.DataFrame:
    """The frame back, with exactly the dtypes of ``schema`` for its columns."""
    if how == "arrow":
        df = pl.from_arrow(payload)
    elif how == "ipc":
        df = pl.read_ipc(io.BytesIO(payload))
    else:
        df = pl.read_parquet(io.BytesIO(payload))
    assert isinstance(df, pl.DataFrame)
    wanted = {name: schema[name] for name in df.columns if df.schema[name] != schema[name]}
    return df.cast(wanted) if wanted else df
