"""Frames on the bus: bars, trades and actions travel as Arrow IPC streams, never as rows."""

from __future__ import annotations

import io

import polars as pl

from quantivista.errors import DecodeError

__all__ = ["from_ipc", "to_ipc"]


def to_ipc(frame: pl.DataFrame) -> bytes:
    """Return `frame` as one Arrow IPC stream (uncompressed: the bytes go out at once)."""
    sink = io.BytesIO()
    frame.write_ipc_stream(sink, compression="uncompressed")
    return sink.getvalue()


def from_ipc(data: bytes) -> pl.DataFrame:
    """Return the frame of an Arrow IPC stream; `DecodeError` when the bytes are not one."""
    try:
        return pl.read_ipc_stream(io.BytesIO(data))
    except Exception as exc:  # polars raises several kinds for corrupt input
        raise DecodeError(f"not an Arrow IPC stream: {exc}") from None
