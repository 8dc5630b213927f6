"""Encode a frame as PostgreSQL binary COPY data, vectorized (no row loop).

Format: a 19-byte header, then per row an int16 field count and per field an int32 byte
length (-1 for NULL) followed by the value in network byte order, then an int16 -1 trailer.

Two encoders:

- `binary_copy_chunks` (bars): rows are grouped by their shape (the byte length of each
  string, which values are NULL); within a group every row has the same layout, so it is
  one NumPy array filled column by column. Fastest when shapes are few (bars: 0.39 s per
  million rows against 0.51 s), and it reorders rows (COPY does not care).
- `frame_copy_chunks` (every other table): each field becomes an Arrow binary array (its
  length word and value), and Arrow joins the fields of each row. Any mix of shapes costs
  the same, rows keep their order, and it also writes `bytea`, `bool`, `date`, `int4` and
  `date[]` columns.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["binary_copy_chunks", "encode_binary_copy", "frame_copy_chunks"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in Unix microseconds
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01
_DATE_OID = 1082


def _shape_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.String:
        return col.str.len_bytes().cast(pl.Int64).fill_null(-1).alias(f"_len{name}")
    return pl.when(col.is_null()).then(-1).otherwise(8).cast(pl.Int64).alias(f"_len{name}")


def _fixed_values(series: pl.Series) -> np.ndarray:
    if isinstance(series.dtype, pl.Datetime):
        us = series.dt.cast_time_unit("us").to_physical().to_numpy().astype(np.int64)
        return us - _PG_EPOCH_US
    if series.dtype.is_float():
        return series.to_numpy().astype(np.float64)
    return series.cast(pl.Int64).to_numpy().astype(np.int64)


def _string_bytes(series: pl.Series) -> np.ndarray:
    arr = series.to_arrow().cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    return data[int(offsets[0]) : int(offsets[-1])]


def _encode_group(part: pl.DataFrame, columns: list[str], lengths: tuple[int, ...]) -> bytes:
    n = part.height
    width = 2 + sum(4 + max(length, 0) for length in lengths)
    raw = np.empty((n, width), dtype=np.uint8)
    raw[:, 0:2] = np.frombuffer(len(columns).to_bytes(2, "big"), dtype=np.uint8)
    pos = 2
    for name, length in zip(columns, lengths, strict=True):
        raw[:, pos : pos + 4] = np.frombuffer(length.to_bytes(4, "big", signed=True), np.uint8)
        pos += 4
        if length <= 0:
            continue
        series = part.get_column(name)
        if series.dtype == pl.String:
            payload = _string_bytes(series).reshape(n, length)
        else:
            values = _fixed_values(series)
            big = values.astype(">f8" if values.dtype.kind == "f" else ">i8")
            payload = big.view(np.uint8).reshape(n, 8)
        raw[:, pos : pos + length] = payload
        pos += length
    return raw.tobytes()


def encode_binary_copy(df: pl.DataFrame) -> bytes:
    """Return `df` as one binary COPY stream (pass it to `Copy.write`).

    String columns become `text`, floats `float8`, integers `int8`, UTC datetimes
    `timestamptz`; the target columns must have those types, in the frame's order.
    """
    return b"".join(binary_copy_chunks(df, max(df.height, 1)))


def binary_copy_chunks(df: pl.DataFrame, rows: int = 50_000) -> Iterator[bytes]:
    """Yield one binary COPY stream in pieces: header, rows in chunks of `rows`, trailer.

    Writing a piece while the next one is encoded keeps both the client and the server busy.
    """
    yield _HEADER
    for lo in range(0, df.height, rows):
        yield _encode_rows(df.slice(lo, rows))
    yield _TRAILER


def _encode_rows(df: pl.DataFrame) -> bytes:
    df = df.rechunk()  # one chunk per column: per-chunk work would dominate
    columns = df.columns
    shapes = [_shape_expr(c, df.schema[c]) for c in columns]
    shape_cols = [f"_len{c}" for c in columns]
    keyed = df.with_columns(shapes)
    parts = []
    for key, part in keyed.group_by(shape_cols):
        lengths = tuple(int(k) for k in key)
        parts.append(_encode_group(part.select(columns), columns, lengths))
    return b"".join(parts)


# -- the general encoder: one Arrow binary array per field, joined row by row by Arrow ------
_NULL_FIELD = b"\xff\xff\xff\xff"
_EMPTY = pa.scalar(b"", pa.large_binary())


def _blocks(matrix: np.ndarray) -> pa.Array:
    """Return the rows of a 2-D uint8 matrix as an Arrow large_binary array."""
    n, width = matrix.shape
    data = pa.py_buffer(np.ascontiguousarray(matrix, dtype=np.uint8))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, data])
    return fixed.cast(pa.large_binary())


def _fixed_field(values: np.ndarray, valid: pa.Array | None) -> pa.Array:
    """Return length word plus big-endian value for each row (NULL where not `valid`)."""
    width = values.dtype.itemsize
    matrix = np.empty((values.shape[0], 4 + width), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(width.to_bytes(4, "big"), dtype=np.uint8)
    matrix[:, 4:] = values.view(np.uint8).reshape(-1, width)
    field = _blocks(matrix)
    if valid is None:
        return field
    return pc.if_else(valid, field, pa.scalar(_NULL_FIELD, pa.large_binary()))


def _length_words(lengths: np.ndarray) -> pa.Array:
    return _blocks(lengths.astype(">i4").view(np.uint8).reshape(-1, 4))


def _bytes_field(series: pl.Series) -> pa.Array:
    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_binary())
    lengths = pc.binary_length(arr).fill_null(-1).to_numpy(zero_copy_only=False)
    return pc.binary_join_element_wise(_length_words(lengths), arr.fill_null(b""), _EMPTY)


def _date_array_field(series: pl.Series) -> pa.Array:
    """Encode a List(Date) column as `date[]` (one dimension, no NULL elements)."""
    if series.explode().null_count() > series.list.len().eq(0).sum() + series.null_count():
        raise ValueError(f"column {series.name!r}: date arrays must not hold NULL elements")
    n = series.len()
    counts = series.list.len().fill_null(0).to_numpy().astype(np.int64)
    days = series.explode().drop_nulls().to_physical().to_numpy().astype(np.int32)
    elements = np.empty((days.shape[0], 8), dtype=np.uint8)
    elements[:, :4] = np.frombuffer((4).to_bytes(4, "big"), dtype=np.uint8)
    elements[:, 4:] = (days - _PG_EPOCH_DAYS).astype(">i4").view(np.uint8).reshape(-1, 4)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    listed = pa.LargeListArray.from_arrays(pa.array(offsets), _blocks(elements))
    body = pc.binary_join(listed, _EMPTY)
    # header: byte length, ndim, has-NULL flag, element type, then (size, lower bound)
    header = np.zeros((n, 6), dtype=">i4")
    header[:, 0] = 20 + 8 * counts
    header[:, 1] = 1
    header[:, 3] = _DATE_OID
    header[:, 4] = counts
    header[:, 5] = 1
    empty = counts == 0  # an empty array has no dimensions
    header[empty, 0] = 12
    header[empty, 1] = 0
    head = _blocks(header.view(np.uint8).reshape(n, 24))
    head = pc.if_else(pa.array(empty), pc.binary_slice(head, 0, 16), head)
    field = pc.binary_join_element_wise(head, body, _EMPTY)
    if series.null_count():
        valid = series.is_not_null().to_arrow()
        field = pc.if_else(valid, field, pa.scalar(_NULL_FIELD, pa.large_binary()))
    return field


def _field(series: pl.Series) -> pa.Array:
    dtype = series.dtype
    valid = series.is_not_null().to_arrow() if series.null_count() else None
    if dtype in (pl.String, pl.Binary):
        return _bytes_field(series)
    if dtype == pl.Null:
        return _length_words(np.full(series.len(), -1, dtype=np.int64))
    if isinstance(dtype, pl.List) and dtype.inner == pl.Date:
        return _date_array_field(series)
    if isinstance(dtype, pl.Datetime):
        us = series.dt.cast_time_unit("us").to_physical().fill_null(0).to_numpy()
        return _fixed_field((us.astype(np.int64) - _PG_EPOCH_US).astype(">i8"), valid)
    if dtype == pl.Date:
        days = series.to_physical().fill_null(0).to_numpy().astype(np.int32)
        return _fixed_field((days - _PG_EPOCH_DAYS).astype(">i4"), valid)
    if dtype == pl.Boolean:
        return _fixed_field(series.fill_null(False).to_numpy().astype(np.uint8), valid)
    if dtype.is_float():
        return _fixed_field(series.fill_null(0).to_numpy().astype(">f8"), valid)
    if dtype in (pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16):
        return _fixed_field(series.fill_null(0).to_numpy().astype(">i4"), valid)
    if dtype.is_integer():
        return _fixed_field(series.fill_null(0).to_numpy().astype(">i8"), valid)
    raise TypeError(f"column {series.name!r}: no binary COPY encoding for {dtype}")


def _encode_frame_rows(df: pl.DataFrame) -> bytes:
    if df.height == 0:
        return b""
    df = df.rechunk()
    count = np.empty((df.height, 2), dtype=np.uint8)
    count[:] = np.frombuffer(df.width.to_bytes(2, "big"), dtype=np.uint8)
    fields = [_field(df.get_column(c)) for c in df.columns]
    rows = pc.binary_join_element_wise(_blocks(count), *fields, _EMPTY)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    first, last = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return memoryview(rows.buffers()[2])[first:last].tobytes()


def frame_copy_chunks(df: pl.DataFrame, rows: int = 20_000) -> Iterator[bytes]:
    """Yield `df` as one binary COPY stream in pieces, rows in their order.

    Column types: String `text`, Binary `bytea`, Float `float8`, Int8-32 and UInt8-16
    `int4`, other integers `int8`, Boolean `bool`, Date `date`, Datetime `timestamptz`,
    List(Date) `date[]`, Null any type (all NULL). The target columns must have those
    types, in the frame's order.
    """
    yield _HEADER
    for lo in range(0, df.height, rows):
        yield _encode_frame_rows(df.slice(lo, rows))
    yield _TRAILER
