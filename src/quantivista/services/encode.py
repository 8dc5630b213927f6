"""Frames to response bodies: JSON rows, CSV, Arrow IPC stream, Parquet."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import numpy as np
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


_DICTIONARY = ("symbol", "timeframe", "provider", "job_id")  # few distinct values, many rows


def arrow_table(df: pl.DataFrame) -> pa.Table:
    """Return the frame as Arrow with its repetitive text columns dictionary-encoded."""
    repeated = [c for c in _DICTIONARY if c in df.columns]
    table = df.drop(repeated).to_arrow()
    for name in repeated:
        at = df.get_column_index(name)
        table = table.add_column(at, name, _dictionary(df.get_column(name)))
    return table


def _dictionary(col: pl.Series) -> pa.DictionaryArray:
    """Dictionary-encode a text column from its runs (store reads are sorted by symbol).

    Run ids are one pass with no hashing; when a value comes back in a later run (an
    unsorted frame) the runs would repeat dictionary entries, so the column is hashed
    instead.
    """
    runs = col.rle_id().to_numpy()  # uint32 run ids, 0.. in order
    starts = np.flatnonzero(np.diff(runs, prepend=np.uint32(1)))  # row 0 always starts one
    values = col.gather(starts)
    if values.n_unique() != values.len():
        hashed = col.cast(pl.Categorical).to_arrow()
        assert isinstance(hashed, pa.DictionaryArray)
        return hashed
    return pa.DictionaryArray.from_arrays(
        pa.array(runs.view(np.int32)), values.cast(pl.String).to_arrow()
    )


class _Chunks(io.RawIOBase):
    """A write-only file that keeps what is written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(self.parts[-1])

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class ArrowStreamEncoder:
    """An Arrow IPC stream written frame by frame: each `feed` returns the bytes it encoded.

    Frames must share one schema; their dictionaries may differ (the stream format
    replaces a dictionary when a batch brings another one).
    """

    def __init__(self, rows: int = 1 << 17) -> None:
        self.rows = rows
        self._chunks = _Chunks()
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def feed(self, df: pl.DataFrame) -> list[bytes]:
        """Encode `df` (record batches of at most `rows` rows) and return its bytes."""
        table = arrow_table(df)
        if self._writer is None:
            self._writer = pa.ipc.new_stream(pa.PythonFile(self._chunks, mode="w"), table.schema)
        out = []
        for batch in table.to_batches(max_chunksize=self.rows):
            self._writer.write_batch(batch)
            out.append(self._chunks.take())
        return out

    def finish(self, empty: pl.DataFrame) -> bytes:
        """End the stream (`empty` gives the schema when nothing was fed)."""
        if self._writer is None:
            self.feed(empty.clear())
        assert self._writer is not None
        self._writer.close()
        return self._chunks.take()


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an IPC stream's end marker
_BATCH_ROWS = 1 << 17  # TableStream: record batches of at most this many rows
_JOINED = 8 << 10  # pieces smaller than this are joined with their neighbours (copied)


class _Pieces:
    """A write-only sink that keeps what an IPC writer writes, without copying the data.

    The writer hands over the message headers as small bytes and each column buffer as a
    `pyarrow.Buffer` (a view of the table's memory): large ones are kept as views, runs of
    small ones joined, so a table becomes a few dozen pieces and no copy of its bytes. A
    buffer that starts where the previous view ends (neighbouring columns of one record
    batch of a mapped file) extends that view: fewer pieces to hand to the server.
    """

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self._small: list[bytes] = []
        self._last: pa.Buffer | None = None  # the memory of the last part, when a view

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(data)
        if not size:
            return 0
        last = self._last
        if (
            last is not None
            and not self._small
            and isinstance(data, pa.Buffer)
            and last.address + last.size == data.address
        ):  # one range of memory: both buffers kept alive by the joined view
            joined = pa.foreign_buffer(last.address, last.size + size, base=(last, data))
            self._last = joined
            self.parts[-1] = memoryview(joined).cast("B")
        elif size >= _JOINED:
            self._join()
            self.parts.append(memoryview(data).cast("B"))
            self._last = data if isinstance(data, pa.Buffer) else None
        else:
            self._small.append(bytes(data))
        return size

    def _join(self) -> None:
        if self._small:
            self.parts.append(b"".join(self._small))
            self._small.clear()
            self._last = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> list[bytes | memoryview]:
        self._join()
        out, self.parts = self.parts, []
        self._last = None
        return out


def _drop(parts: list[bytes | memoryview], head: int, tail: int) -> list[bytes | memoryview]:
    """Return `parts` without their first `head` and last `tail` bytes (in small parts)."""
    if head:
        first = parts[0]
        assert isinstance(first, bytes) and len(first) >= head, "a header is one small piece"
        parts[0] = first[head:]
    if tail:
        last = parts[-1]
        assert isinstance(last, bytes) and len(last) >= tail, "the end marker is a small piece"
        parts[-1] = last[: len(last) - tail]
    return [p for p in parts if len(p)]


class TableStream:
    """An Arrow IPC stream of whole tables, each encoded as it comes, without a copy.

    Each table is written by its own stream writer into `_Pieces` (the column buffers stay
    views of the table's memory: a response is sent from the memory the store's read
    filled, not from a second copy); the pieces are that stream without its repeated
    schema message and end marker: the dictionaries each writer emits first replace the
    previous table's (the stream format allows it). Tables are cast to `schema` when they
    differ. The pieces keep their tables alive.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        empty = b"".join(self._encode(None))
        if empty[-8:] != _EOS:  # pragma: no cover - a pyarrow that ends streams otherwise
            raise RuntimeError("unexpected Arrow IPC stream end marker")
        self._schema_bytes = empty[:-8]
        self.schema_size = len(self._schema_bytes)  # the bytes the first `feed` adds
        self._started = False

    def _encode(self, table: pa.Table | None) -> list[bytes | memoryview]:
        sink = _Pieces()
        with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), self.schema) as writer:
            if table is not None:
                writer.write_table(table, max_chunksize=_BATCH_ROWS)
        return sink.take()

    def _cast(self, table: pa.Table) -> pa.Table:
        return table if table.schema == self.schema else table.cast(self.schema)

    def feed(self, table: pa.Table) -> list[bytes | memoryview]:
        """Return the stream's pieces for `table` (the schema first, once)."""
        table = self._cast(table)
        head = len(self._schema_bytes) if self._started else 0
        self._started = True
        return _drop(self._encode(table), head, len(_EOS))

    def measure(self, table: pa.Table) -> int:
        """Return the bytes of `table`'s messages in the stream (what `feed` returns for
        it, but for the schema the first feed carries), without encoding it: a native
        writer into a sink that only counts (no Python call per buffer)."""
        sink = pa.MockOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as writer:
            writer.write_table(self._cast(table), max_chunksize=_BATCH_ROWS)
        return int(sink.size()) - len(self._schema_bytes) - len(_EOS)

    def length(self, measured: int) -> int:
        """Return the whole stream's length for tables that `measure` to `measured` bytes
        (its schema, their messages, its end)."""
        return len(self._schema_bytes) + measured + len(_EOS)

    def finish(self) -> bytes:
        """Return the stream's last bytes (its schema too when no table came)."""
        return (b"" if self._started else self._schema_bytes) + _EOS


def arrow_schema(empty: pl.DataFrame) -> pa.Schema:
    """Return the Arrow schema `ArrowStreamEncoder.feed` gives frames shaped like `empty`."""
    return arrow_table(empty.clear()).schema


def arrow_stream(df: pl.DataFrame, rows: int = 1 << 17) -> Iterator[bytes]:
    """Yield an Arrow IPC stream of the frame, one record batch at a time (as encoded)."""
    encoder = ArrowStreamEncoder(rows)
    yield from encoder.feed(df)
    yield encoder.finish(df)  # the end-of-stream marker


def warm_up() -> None:
    """Encode a one-row frame in every bulk format, so the libraries these paths import on
    first use (pandas under polars' numpy export, pyarrow's IPC writer) are loaded at
    start-up rather than on a client's first bulk request (0.2 s of it, measured)."""
    frame = pl.DataFrame({"symbol": ["A"], "timeframe": ["1d"], "close": [1.0]})
    b"".join(arrow_stream(frame))
    for fmt in BodyFormat:
        encode(frame, fmt)


def etag_of(body: bytes) -> str:
    """Return a strong entity tag of a body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
