"""Frames to response bodies: JSON rows, CSV, Arrow IPC stream, Parquet."""

from __future__ import annotations

import hashlib
import io
from enum import StrEnum

import polars as pl
import pyarrow as pa

__all__ = ["MEDIA_TYPES", "BodyFormat", "encode", "etag_of"]


class BodyFormat(StrEnum):
    """Formats of bulk responses."""

    json = "json"
    csv = "csv"
    arrow = "arrow"
    parquet = "parquet"


MEDIA_TYPES = {
    BodyFormat.json: "application/json",
    BodyFormat.csv: "text/csv; charset=utf-8",
    BodyFormat.arrow: "application/vnd.apache.arrow.stream",
    BodyFormat.parquet: "application/vnd.apache.parquet",
}


def encode(df: pl.DataFrame, fmt: BodyFormat) -> bytes:
    """Return the frame's bytes in `fmt` (JSON: a list of row objects)."""
    if fmt is BodyFormat.json:
        return df.write_json().encode()
    if fmt is BodyFormat.csv:
        return df.write_csv().encode()
    if fmt is BodyFormat.parquet:
        out = io.BytesIO()
        df.write_parquet(out, compression="zstd", compression_level=1, statistics=False)
        return out.getvalue()
    table = df.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 16)
    return bytes(sink.getvalue())


def etag_of(body: bytes) -> str:
    """Return a strong entity tag of a body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
