"""File primitives the lake's stores share: atomic Parquet writes, file identity and locks."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import polars as pl
import pyarrow.parquet as pq

from quantivista.config import StorageSettings
from quantivista.errors import StorageError

__all__ = ["atomic_write_parquet", "file_identity", "flocked", "fsync_path", "read_parquet_once"]


def file_identity(path: Path) -> tuple[int, int, int]:
    """Return (inode, mtime ns, size): a file replaced by rename never keeps all three."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextmanager
def flocked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` (created if missing) for the block."""
    with open(lock_file, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Encodings chosen for bars: byte-stream-split floats and delta-packed integers encode two to
# four times as fast as the dictionary-first defaults (measured per column on simulated and
# random bars); PLAIN compresses 2-decimal prices smaller, but at twice the cost.
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")
_DELTA_COLUMNS = ("ts", "ingested_at", "trades")
_DICT_COLUMNS = ("symbol", "timeframe", "provider", "job_id")


def _write_options(df: pl.DataFrame, settings: StorageSettings) -> dict[str, Any]:
    encodings = {c: "BYTE_STREAM_SPLIT" for c in _FLOAT_COLUMNS if c in df.columns}
    encodings.update({c: "DELTA_BINARY_PACKED" for c in _DELTA_COLUMNS if c in df.columns})
    compression = "none" if settings.compression == "none" else settings.compression
    return {
        "compression": compression,
        "compression_level": settings.compression_level
        if settings.compression in ("zstd", "gzip")
        else None,
        "use_dictionary": [c for c in _DICT_COLUMNS if c in df.columns],
        "column_encoding": encodings,
        "write_statistics": ["ts"] if "ts" in df.columns else True,
        # the Parquet logical types already say string / UTC timestamp / uint32; leaving the
        # Arrow schema out keeps files readable by any engine and lets us hand over views
        "store_schema": False,
    }


def atomic_write_parquet(df: pl.DataFrame, path: Path, settings: StorageSettings) -> int:
    """Write `df` to `path` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid4().hex}.parquet"
    try:
        table = df.to_arrow(compat_level=pl.CompatLevel.newest())
        pq.write_table(table, tmp, **_write_options(df, settings))
        if settings.fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
        if settings.fsync:
            fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError("cannot write partition file", path=str(path), error=str(exc)) from exc
    return path.stat().st_size


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_parquet_once(path: Path) -> pl.DataFrame:
    """Read a whole Parquet file through one open handle.

    A reader that opened the path twice (footer, then pages) could mix two versions of a
    file that another process replaced in between; one handle keeps one version. A missing
    file raises `FileNotFoundError`; anything else unreadable, `StorageError`.
    """
    try:
        with open(path, "rb") as handle:
            return pl.read_parquet(handle)
    except FileNotFoundError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StorageError("cannot read file", path=str(path), error=str(exc)) from exc
