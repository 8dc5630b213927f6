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
_BOOL_OID, _INT8_OID, _INT4_OID, _FLOAT8_OID = 16, 20, 23, 701
_DATE_OID, _TIMESTAMPTZ_OID = 1082, 1184


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


def _spans(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """Return `data[offsets[i]:offsets[i + 1]]` for each i as an Arrow large_binary array."""
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(offsets) - 1,
        [None, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data)],
    )


def _blocks(matrix: np.ndarray) -> pa.Array:
    """Return the rows of a 2-D uint8 matrix as an Arrow large_binary array (no copy)."""
    n, width = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=np.uint8).reshape(-1)
    return _spans(data, np.arange(n + 1, dtype=np.int64) * width)


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


def _big_endian(series: pl.Series) -> tuple[np.ndarray, int] | None:
    """Return a fixed-width column's values in network byte order (NULL as 0) and type OID."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        us = series.dt.cast_time_unit("us").to_physical().fill_null(0).to_numpy()
        return (us.astype(np.int64) - _PG_EPOCH_US).astype(">i8"), _TIMESTAMPTZ_OID
    if dtype == pl.Date:
        days = series.to_physical().fill_null(0).to_numpy().astype(np.int32)
        return (days - _PG_EPOCH_DAYS).astype(">i4"), _DATE_OID
    if dtype == pl.Boolean:
        return series.fill_null(False).to_numpy().astype(np.uint8), _BOOL_OID
    if dtype.is_float():
        return series.fill_null(0).to_numpy().astype(">f8"), _FLOAT8_OID
    if dtype in (pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16):
        return series.fill_null(0).to_numpy().astype(">i4"), _INT4_OID
    if dtype.is_integer():
        return series.fill_null(0).to_numpy().astype(">i8"), _INT8_OID
    return None


def _array_field(series: pl.Series) -> pa.Array:
    """Encode a List column of a fixed-width type as a one-dimensional PostgreSQL array."""
    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    counts = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    counts = counts.astype(np.int64)
    inner = pl.Series(series.name, arr.flatten())  # the elements of non-NULL lists, in order
    encoded = _big_endian(inner)
    if encoded is None:
        raise TypeError(f"column {series.name!r}: no binary COPY encoding for {series.dtype}")
    values, oid = encoded
    width = values.dtype.itemsize
    elements = np.empty((values.shape[0], 4 + width), dtype=np.uint8)
    elements[:, :4] = np.frombuffer(width.to_bytes(4, "big"), dtype=np.uint8)
    elements[:, 4:] = values.view(np.uint8).reshape(-1, width)
    sizes = np.full(values.shape[0], 4 + width, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    has_null = inner.null_count() > 0
    if has_null:  # elements of two sizes: let Arrow join them
        valid = inner.is_not_null()
        blocks = pc.if_else(
            valid.to_arrow(), _blocks(elements), pa.scalar(_NULL_FIELD, pa.large_binary())
        )
        sizes[~valid.to_numpy()] = 4
        body = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), blocks), _EMPTY)
    else:  # a row's elements are already contiguous: point at them
        body = _spans(elements.reshape(-1), offsets * (4 + width))
    total = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=total[1:])
    # header: byte length, ndim, has-NULL flag, element type, then (size, lower bound)
    header = np.zeros((n, 6), dtype=">i4")
    header[:, 0] = 20 + total[offsets[1:]] - total[offsets[:-1]]
    header[:, 1] = 1
    header[:, 2] = int(has_null)
    header[:, 3] = oid
    header[:, 4] = counts
    header[:, 5] = 1
    empty = counts == 0  # an empty array has no dimensions
    header[empty, 0] = 12
    header[empty, 1] = 0
    head = _blocks(header.view(np.uint8).reshape(n, 24))
    if empty.any():
        head = pc.if_else(pa.array(empty), pc.binary_slice(head, 0, 16), head)
    field = pc.binary_join_element_wise(head, body, _EMPTY)
    if series.null_count():
        field = pc.if_else(
            series.is_not_null().to_arrow(), field, pa.scalar(_NULL_FIELD, pa.large_binary())
        )
    return field


def _field(series: pl.Series) -> pa.Array:
    dtype = series.dtype
    if dtype in (pl.String, pl.Binary):
        return _bytes_field(series)
    if dtype == pl.Null:
        return _length_words(np.full(series.len(), -1, dtype=np.int64))
    if isinstance(dtype, pl.List):
        return _array_field(series)
    encoded = _big_endian(series)
    if encoded is None:
        raise TypeError(f"column {series.name!r}: no binary COPY encoding for {dtype}")
    valid = series.is_not_null().to_arrow() if series.null_count() else None
    return _fixed_field(encoded[0], valid)


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
    a List of one of these fixed-width types the array of it (`date[]`, `int8[]`, ...;
    NULL elements allowed), Null any type (all NULL). The target columns must have those
    types, in the frame's order.
    """
    yield _HEADER
    for lo in range(0, df.height, rows):
        yield _encode_frame_rows(df.slice(lo, rows))
    yield _TRAILER
