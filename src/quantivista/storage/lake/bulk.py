"""Bulk reads of many symbols as Arrow tables, one bucket file at a time, as stored.

What a bulk download needs from the lake: the bars of hundreds of symbols, soon, without a
sort or a re-encoding. `stored_tables` reads each bucket's file with pyarrow (text columns
stay the dictionaries Parquet stored them as; an Arrow IPC base file is mapped, its
symbols' rows sliced by its symbol index, and only its text columns dictionary-encoded,
from their runs), on a few threads ahead of the consumer, and yields them in bucket order:
the first table can be sent while the next are read.

Order: each symbol's bars are contiguous and by ts (files are sorted by symbol and ts);
symbols come bucket by bucket, sorted within a bucket, not across buckets.

Exactness: the same rows `ParquetLake.read` returns. A bucket whose partition has delta
files (appends not folded yet) is read through `ParquetLake.read` instead (exact, slower).
Only for timeframes with one file per bucket (daily and longer) and lakes without a cold
tier: `stored_tables` returns None otherwise (the caller uses `ParquetLake.read`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quantivista.errors import StorageError
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.files import IpcBase
from quantivista.storage.lake.layout import BAR_ARROW_FILE

__all__ = ["DICTIONARY_COLUMNS", "stored_schema", "stored_tables"]

DICTIONARY_COLUMNS = ["symbol", "timeframe", "provider", "job_id"]  # few values, many rows
_AHEAD = 4  # bucket files read ahead of the consumer
_THREADS = 2
_MAX_RUNS = 256  # kept rows in more runs than this: one filtered copy instead of slices
_MANY_RUNS = 8  # a text column in more runs than a row in this many: hashed row by row
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="qv-bulk-read")
        return _pool


def stored_schema() -> pa.Schema:
    """Return the schema of the tables `stored_tables` yields (text columns as dictionaries
    of strings, as Parquet stores them); a fallback table is cast to it."""
    fields = []
    for name, dtype in BAR_POLARS_SCHEMA.items():
        if name in DICTIONARY_COLUMNS:
            fields.append(pa.field(name, pa.dictionary(pa.int32(), pa.string())))
        else:
            fields.append(pa.field(name, pl.Series(name, [], dtype).to_arrow().type))
    return pa.schema(fields)


def stored_tables(
    lake: ParquetLake,
    symbols: Sequence[str],
    timeframe: Timeframe,
    start: datetime | None,
    end: datetime | None,
    *,
    fallback: Callable[[list[str]], pa.Table],
) -> Iterator[pa.Table] | None:
    """Yield the bars of `symbols` with `start <= ts < end`, a table per bucket file.

    `fallback(symbols)` reads a bucket's symbols the regular way (a partition with deltas).
    Tables have the file's schema (`stored_schema()` for files the lake wrote).
    Return None when this read does not apply (see the module's doc).
    """
    if lake.cold_index is not None or timeframe.partition_period != "all":
        return None
    by_bucket: dict[int, list[str]] = {}
    for symbol in sorted(set(symbols)):
        by_bucket.setdefault(lake.bucket(symbol), []).append(symbol)
    tf = str(timeframe)
    lo = pa.scalar(start, pa.timestamp("us", "UTC")) if start is not None else None
    hi = pa.scalar(end, pa.timestamp("us", "UTC")) if end is not None else None

    def read(names: list[str]) -> pa.Table | None:
        directory = lake.partition_dir(tf, names[0])
        if lake.has_deltas(directory):  # appends not folded into the file yet
            return fallback(names)
        path = lake.base_path(directory)
        try:
            if path.name == BAR_ARROW_FILE:
                return _rows(_read_ipc(path, names), names, lo, hi)
            return _read_file(path, names, lo, hi)
        except FileNotFoundError:
            return None  # no bars of this bucket (or removed since)

    def tables() -> Iterator[pa.Table]:
        pool = _executor()
        pending: deque[Future[pa.Table | None]] = deque()
        buckets = iter(sorted(by_bucket))
        try:
            while True:
                while len(pending) < _AHEAD:
                    bucket = next(buckets, None)
                    if bucket is None:
                        break
                    pending.append(pool.submit(read, by_bucket[bucket]))
                if not pending:
                    return
                table = pending.popleft().result()
                if table is not None and table.num_rows:
                    yield table
        finally:
            for future in pending:
                future.cancel()

    return tables()


def _read_file(path: Path, names: list[str], lo: pa.Scalar | None,
               hi: pa.Scalar | None) -> pa.Table:  # fmt: skip
    """Read the rows of `names` in [lo, hi) from one bucket file, through one mapping
    (one version of a file another process may replace; native reads, no GIL)."""
    try:
        with pa.memory_map(str(path), "r") as source:
            file = pq.ParquetFile(source, read_dictionary=DICTIONARY_COLUMNS)
            groups = _row_groups(file.metadata, names[0], names[-1])
            table = file.read_row_groups(groups, use_threads=False)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        if not path.exists():
            raise FileNotFoundError(str(path)) from exc
        raise StorageError("cannot read partition file", path=str(path)) from exc
    return _rows(table, names, lo, hi)


def _read_ipc(path: Path, names: list[str]) -> pa.Table:
    """Return the rows of `names` from an Arrow IPC base file (zero-copy slices of its
    mapping), text columns dictionary-encoded as `stored_schema` says."""
    with open(path, "rb") as handle:
        base = IpcBase(handle)
    wanted = set(names)
    spans: list[tuple[int, int]] = []  # adjacent symbols' rows joined into one range
    runs: list[tuple[str, int]] = []
    start = 0
    for symbol, n in base.runs:
        if symbol in wanted:
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], start + n)
            else:
                spans.append((start, start + n))
            runs.append((symbol, n))
        start += n
    whole = base.table()
    if spans != [(0, start)]:
        pieces = [whole.slice(a, b - a) for a, b in spans]
        whole = pa.concat_tables(pieces) if pieces else whole.slice(0, 0)
    columns: list[pa.Array | pa.ChunkedArray] = []
    for name in whole.column_names:
        column = whole.column(name)
        if name == "symbol":
            columns.append(_symbols(runs))
        elif name in DICTIONARY_COLUMNS:
            columns.append(_dictionary(column))
        else:
            columns.append(column)
    return pa.Table.from_arrays(columns, names=whole.column_names)


def _dictionary(column: pa.ChunkedArray) -> pa.DictionaryArray | pa.ChunkedArray:
    """Dictionary-encode a text column of a base file from its runs of equal values.

    Sorted by symbol and ts, a bucket's timeframe, provider and job id come in a few runs:
    only the values at the runs' starts are copied and hashed, not every row (a copy to
    `string` and a hash of each row cost 0.06 s of a 1.26 M-bar bulk read). Runs are
    found from the 16-byte `string_view` views first (equal views are equal texts: a short
    text lives in its view, a long one's view names its buffer and offset, which a writer
    that stored a repeated text once shares), then, when the views differ too often, by
    comparing the texts. Another type, nulls, or many runs: hashed row by row.
    """
    if column.type != pa.string_view() or column.null_count or not len(column):
        return _hashed(column)
    whole = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    rows = len(whole)
    views = np.frombuffer(whole.buffers()[1], dtype=np.uint64)
    views = views[2 * whole.offset : 2 * (whole.offset + rows)]
    low, high = views[0::2], views[1::2]
    changed = np.empty(rows, dtype=bool)
    changed[0] = True
    np.not_equal(low[1:], low[:-1], out=changed[1:])
    changed[1:] |= high[1:] != high[:-1]
    starts = np.flatnonzero(changed)
    if starts.size > rows // _MANY_RUNS:  # views differ: equal long texts stored apart?
        differ = pc.not_equal(whole.slice(1), whole.slice(0, rows - 1))
        after = pc.indices_nonzero(differ).to_numpy().astype(np.int64) + 1
        starts = np.concatenate((np.zeros(1, np.int64), after))
        if starts.size > rows // _MANY_RUNS:
            return _hashed(column)
    firsts = pa.Array.from_buffers(  # the views at the runs' starts, over the same buffers
        pa.string_view(), starts.size,
        [None, pa.py_buffer(views.reshape(-1, 2)[starts]), *whole.buffers()[2:]],
    ).cast(pa.string())  # fmt: skip
    encoded = pc.dictionary_encode(firsts)
    if len(encoded.dictionary) == 1:
        indices = np.zeros(rows, dtype=np.int32)
    else:
        indices = np.repeat(encoded.indices.to_numpy(), np.diff(starts, append=rows))
    return pa.DictionaryArray.from_arrays(pa.array(indices), encoded.dictionary)


def _hashed(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.dictionary_encode(column.cast(pa.string()))


def _symbols(runs: list[tuple[str, int]]) -> pa.DictionaryArray:
    """Return the symbol column of sorted rows as a dictionary built from their runs."""
    lengths = np.fromiter((n for _, n in runs), dtype=np.int64, count=len(runs))
    indices = np.repeat(np.arange(len(runs), dtype=np.int32), lengths)
    names = pa.array([s for s, _ in runs], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(indices), names)


def _row_groups(meta: pq.FileMetaData, first: str, last: str) -> list[int]:
    """Return the row groups whose symbol range meets [first, last] (all without stats)."""
    column = meta.schema.names.index("symbol")
    out = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is not None and stats.has_min_max and (stats.max < first or stats.min > last):
            continue
        out.append(i)
    return out


def _rows(table: pa.Table, names: list[str], lo: pa.Scalar | None,
          hi: pa.Scalar | None) -> pa.Table:  # fmt: skip
    """Keep the rows of `names` in [lo, hi); the usual bulk read (every symbol of the
    file, every bar) keeps the table as read, without a filtered copy."""
    wanted = set(names)
    symbol = table.column("symbol")
    stored = {v for chunk in symbol.chunks for v in chunk.dictionary.to_pylist()}
    ts = table.column("ts")
    bounds = pc.min_max(ts)
    low, high = bounds["min"], bounds["max"]
    inside = (lo is None or not low.is_valid or low.as_py() >= lo.as_py()) and (
        hi is None or not high.is_valid or high.as_py() < hi.as_py()
    )
    if stored <= wanted and inside:
        return table
    keep = pc.is_in(symbol, value_set=pa.array(names))
    if lo is not None:
        keep = pc.and_(keep, pc.greater_equal(ts, lo))
    if hi is not None:
        keep = pc.and_(keep, pc.less(ts, hi))
    # the rows kept are a few runs (files are sorted by symbol and ts: a range of each
    # wanted symbol): zero-copy slices of them instead of a filtered copy of every column
    mask = np.concatenate(([False], keep.to_numpy(zero_copy_only=False), [False]))
    edges = np.flatnonzero(np.diff(mask.astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    if not runs:
        return table.slice(0, 0)
    if len(runs) > _MAX_RUNS:
        return table.filter(keep)
    return pa.concat_tables([table.slice(a, b - a) for a, b in runs])
