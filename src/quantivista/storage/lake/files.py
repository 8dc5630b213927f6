"""File primitives the lake's stores share: atomic Parquet writes, file identity and locks.

Several processes (and threads) may write into one data directory. The rules that keep
them from losing each other's work:

- a file that is ever replaced is replaced whole, by `os.replace` of a hidden temporary
  (`.tmp-<uuid>...`) from the same directory; listings skip names starting with a dot;
- a read-modify-write holds a `flocked` lock file for the whole cycle;
- a file that may be replaced is read through one open handle (`read_parquet_once`): a
  reader that opened the path twice (footer, then pages) could mix two versions and fail;
- a cached decoding is keyed by the identity of the handle it was read from (`fstat`), so
  the key always describes the bytes that were decoded;
- directories are created with `ensure_dir`, which tolerates a concurrent pruner removing
  an empty parent between the steps of the creation.
"""

from __future__ import annotations

import bisect
import fcntl
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.storage.lake.encoding import DICT_COLUMNS, to_arrow

__all__ = [
    "Identity",
    "BASE_RUNS_KEY",
    "IpcBase",
    "atomic_write_base_ipc",
    "atomic_write_ipc",
    "atomic_write_parquet",
    "ensure_dir",
    "file_identity",
    "flocked",
    "footer_metadata",
    "fsync_path",
    "handle_identity",
    "is_temporary",
    "read_ipc",
    "read_ipc_handle",
    "read_parquet_files",
    "read_parquet_handle",
    "read_parquet_once",
    "symbol_groups",
]

Identity = tuple[int, int, int]
# how often a directory creation (or a temporary's creation in it) is retried when a
# concurrent pruner removed a parent in between; each retry means another writer made
# progress (pruned after a delete), so this bound is never reached in practice
_CREATE_ATTEMPTS = 64
# handles `read_parquet_files` keeps open at once (well below the usual limit of 1024)
_OPEN_AT_ONCE = 256
# files up to which `read_parquet_files` scans each open handle by itself: a fresh process
# then skips the set-up of polars' path-based (multi-file) scan, ~0.7 ms of CPU, which a
# cold as-of read (one history file) paid on top of its own scan
_HANDLE_SCANS = 4
# where a process finds its open files by descriptor (Linux): opening `<dir>/<fd>` opens
# the file the descriptor holds, whatever its path names by now
_PINNED_NAMES = Path("/proc/self/fd")


def _identity(st: os.stat_result) -> Identity:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def file_identity(path: Path) -> Identity:
    """Return (inode, mtime ns, size): a file replaced by rename never keeps all three."""
    return _identity(os.stat(path))


def handle_identity(handle: IO[bytes]) -> Identity:
    """Return the identity of the file an open handle reads (whatever the path holds now)."""
    return _identity(os.fstat(handle.fileno()))


def is_temporary(path: Path) -> bool:
    """Say whether `path` is a writer's unfinished file (hidden: `.tmp-...`), not data."""
    return path.name.startswith(".")


def ensure_dir(directory: Path) -> None:
    """Create `directory` and its parents, even while another process prunes empty ones.

    `Path.mkdir(parents=True, exist_ok=True)` creates a missing parent, then the child,
    and fails if a pruner removes the (still empty) parent in between; it also raises
    `FileExistsError` when the directory existed at `mkdir` but was gone when it checked.
    Both mean another writer made progress: try again.
    """
    for _ in range(_CREATE_ATTEMPTS - 1):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            return
        except (FileNotFoundError, FileExistsError):
            continue
    directory.mkdir(parents=True, exist_ok=True)


@contextmanager
def flocked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` (created if missing) for the block.

    Each call opens the file anew, so the lock also excludes other threads of this
    process (a `flock` belongs to an open file description, not to the process).
    """
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


# Columns whose pages are a few bytes once encoded (dictionary indices in runs, a knowledge
# time in runs, flags mostly 0) are stored uncompressed: compressing them saves nothing and
# costs a codec set-up per page, a fifth of a daily-bar file's encoding time.
_LIGHT_COLUMNS = (*DICT_COLUMNS, "quality_flags", "ingested_at")


def _write_options(table: pa.Table, settings: StorageSettings) -> dict[str, Any]:
    columns = table.column_names
    codec = settings.compression
    compression = {
        c: "none"
        if codec == "none" or c in _LIGHT_COLUMNS or table[c].null_count == table.num_rows
        else codec
        for c in columns
    }
    # byte-stream-split only helps a codec; uncompressed, PLAIN floats are as small and a
    # reader copies them instead of re-interleaving bytes (polars: 3x fewer instructions)
    encodings = {
        c: "BYTE_STREAM_SPLIT" for c in _FLOAT_COLUMNS if c in columns and compression[c] != "none"
    }
    encodings.update({c: "DELTA_BINARY_PACKED" for c in _DELTA_COLUMNS if c in columns})
    return {
        "compression": compression,
        "compression_level": {
            c: settings.compression_level for c, how in compression.items() if how != "none"
        }
        if codec in ("zstd", "gzip")
        else None,
        "use_dictionary": [c for c in (*DICT_COLUMNS, "quality_flags") if c in columns],
        "column_encoding": encodings,
        # min/max of symbol let a reader pick a symbol's row groups from the footer
        "write_statistics": [c for c in ("symbol", "ts") if c in columns] or True,
        # the Parquet logical types already say string / UTC timestamp / uint32; leaving the
        # Arrow schema out keeps files readable by any engine and lets us hand over views
        "store_schema": False,
    }


def atomic_write_parquet(
    df: pl.DataFrame | pa.Table,
    path: Path,
    settings: StorageSettings,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write `df` to `path` so that readers see either the old file or the whole new one.

    `metadata` goes into the file's footer (key-value metadata, read by `footer_metadata`).

    A polars frame goes through `encoding.to_arrow` (repeated strings dictionary-encoded);
    a caller that knows more about its rows (the symbol runs of a partition) passes the
    Arrow table it built.

    The temporary has a unique name: concurrent writers of one path never share one (the
    last rename wins; callers that merge hold a lock around the whole cycle).
    """
    table = to_arrow(df) if isinstance(df, pl.DataFrame) else df
    options = _write_options(table, settings)
    return _atomic_write(
        path,
        settings,
        lambda tmp: _write_groups(table, tmp, options, settings.row_group_rows, metadata),
        ".parquet",
    )


def atomic_write_ipc(
    df: pl.DataFrame, path: Path, settings: StorageSettings, metadata: dict[str, str]
) -> int:
    """Write `df` as an uncompressed Arrow IPC file, atomically like `atomic_write_parquet`.

    For small side files read whole (tails): an IPC file costs a tenth of a Parquet file's
    fixed writer set-up. `metadata` goes into the schema (read back by `read_ipc`).
    """
    table = df.to_arrow().replace_schema_metadata(metadata)  # polars' own types: round trips

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table)

    return _atomic_write(path, settings, write, ".arrow")


# An Arrow IPC base file's schema metadata: its symbols and their rows in file order, and
# the rows of each record batch (a batch holds whole symbols): the symbol index of the file
BASE_RUNS_KEY = "qv.runs"
_BATCHES_KEY = "qv.batches"


def atomic_write_base_ipc(
    df: pl.DataFrame,
    runs: Sequence[tuple[str, int]],
    path: Path,
    settings: StorageSettings,
    metadata: dict[str, str],
    codec: str | None = None,
) -> int:
    """Write a partition's base file (sorted by symbol, `runs`: (symbol, rows) in row
    order) as an Arrow IPC file, atomically like `atomic_write_parquet`.

    Polars' own Arrow types: a reader maps the file and hands its buffers to polars without
    decoding or copying. The symbol index goes into the schema metadata (`IpcBase`), and
    the record batches are the frame's chunks as they are (no copy to join them: a reader
    of a mapped file slices any range at the same cost). With a `codec` ("lz4", "zstd")
    the buffers are compressed and the batches are groups of whole symbols of at least
    `storage.row_group_rows` rows: a reader decompresses the batch of its symbol only.
    """
    table = df.to_arrow(compat_level=pl.CompatLevel.newest())
    if sum(n for _, n in runs) != table.num_rows:
        raise StorageError("symbol runs do not match the rows", path=str(path))
    if codec is None:
        batches = table.to_batches()
    else:
        cuts = _run_groups([n for _, n in runs], settings.row_group_rows)
        batches = [
            batch
            for lo, hi in itertools.pairwise(cuts)
            for batch in table.slice(lo, hi - lo).combine_chunks().to_batches()
        ]
    sizes = [b.num_rows for b in batches]
    meta = {**metadata, BASE_RUNS_KEY: json.dumps(list(runs)), _BATCHES_KEY: json.dumps(sizes)}
    schema = table.schema.with_metadata(meta)
    options = pa.ipc.IpcWriteOptions(compression=codec)

    def write(tmp: Path) -> None:
        with (
            pa.OSFile(str(tmp), "wb") as sink,
            pa.ipc.new_file(sink, schema, options=options) as out,
        ):
            for batch in batches:
                out.write_batch(batch)

    return _atomic_write(path, settings, write, ".arrow")


def _run_groups(lengths: Sequence[int], min_rows: int) -> list[int]:
    """Return the bounds [0, ..., rows] of groups of whole runs of at least `min_rows` rows
    (a short last group joins the one before)."""
    cuts, at = [0], 0
    for n in lengths:
        at += n
        if at - cuts[-1] >= max(min_rows, 1):
            cuts.append(at)
    if at > cuts[-1]:
        if len(cuts) > 1:
            cuts.pop()
        cuts.append(at)
    return cuts


class IpcBase:
    """An open Arrow IPC base file: its metadata, symbol index and record batches.

    Mapped through the reader's open handle (`/proc/self/fd/N` on Linux), so it is the
    version that handle opened even if a writer replaced the path since; the mapping lives
    as long as any frame made from it (writers never modify a file in place).
    """

    __slots__ = ("_reader", "batch_starts", "meta", "runs")

    def __init__(
        self, handle: IO[bytes], reader: pa.ipc.RecordBatchFileReader | None = None
    ) -> None:
        try:
            self._reader = reader if reader is not None else _map_ipc(handle)
            raw = self._reader.schema.metadata or {}
            self.meta = {k.decode(): v.decode() for k, v in raw.items()}
            self.runs: list[tuple[str, int]] = [
                (s, n) for s, n in json.loads(self.meta.pop(BASE_RUNS_KEY))
            ]
            sizes = json.loads(self.meta.pop(_BATCHES_KEY))
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise StorageError("cannot read partition file", path=str(handle.name)) from exc
        self.batch_starts = [0, *itertools.accumulate(sizes)]

    @classmethod
    def indexed(cls, handle: IO[bytes]) -> IpcBase | None:
        """Return an Arrow IPC file that carries a symbol index (a base file, a history
        file written since they carry one), or None if it has none (history files of
        earlier versions: read them whole)."""
        try:
            reader = _map_ipc(handle)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError("cannot read partition file", path=str(handle.name)) from exc
        if BASE_RUNS_KEY.encode() not in (reader.schema.metadata or {}):
            return None
        return cls(handle, reader)

    def table(self) -> pa.Table:
        """Return every row (zero-copy: one chunk a record batch)."""
        return self._reader.read_all()

    def rows(self, start: int, rows: int) -> pa.RecordBatch | pa.Table:
        """Return rows [start, start + rows) (zero-copy; within one batch when they are one
        symbol's)."""
        i = max(bisect.bisect_right(self.batch_starts, start) - 1, 0)
        lo = self.batch_starts[i]
        if i + 1 < len(self.batch_starts) and start + rows <= self.batch_starts[i + 1]:
            return self._reader.get_batch(i).slice(start - lo, rows)
        return self.table().slice(start, rows)


def _map_ipc(handle: IO[bytes]) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file through its handle, mapped (Linux) or read whole."""
    if _PINNED_NAMES.is_dir():
        source: Any = pa.memory_map(f"{_PINNED_NAMES}/{handle.fileno()}")
    else:
        source = pa.py_buffer(handle.read())
    return pa.ipc.open_file(source)


def read_ipc_handle(handle: IO[bytes], *, what: str = "file") -> pa.Table:
    """Return an Arrow IPC file's rows (mapped, zero-copy) from an open handle."""
    try:
        return _map_ipc(handle).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read {what}", path=str(handle.name)) from exc


def read_ipc(path: Path) -> tuple[dict[str, str], pa.Table]:
    """Return an IPC file's schema metadata and its table (read whole into memory)."""
    with open(path, "rb") as handle:
        table = pa.ipc.open_file(handle).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return meta, table


def _atomic_write(
    path: Path, settings: StorageSettings, write: Callable[[Path], None], suffix: str
) -> int:
    """Run `write` into a unique temporary beside `path`, then rename it over `path`."""
    tmp = path.parent / f".tmp-{uuid4().hex}{suffix}"
    try:
        for attempt in range(_CREATE_ATTEMPTS):
            ensure_dir(path.parent)
            try:
                write(tmp)
                break
            except FileNotFoundError:  # a pruner removed the empty directory meanwhile
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        if settings.fsync:
            fsync_path(tmp)
        size = tmp.stat().st_size  # not the path's after the rename: another may replace it
        os.replace(tmp, path)
        if settings.fsync:
            fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError("cannot write partition file", path=str(path), error=str(exc)) from exc
    return size


def _write_groups(
    table: pa.Table,
    path: Path,
    options: dict[str, Any],
    min_rows: int,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `table` as row groups of whole symbols, each of at least `min_rows` rows."""
    cuts = symbol_groups(table, min_rows)
    if len(cuts) <= 2 and not metadata:
        pq.write_table(table, path, **options)
        return
    with pq.ParquetWriter(path, table.schema, **options) as writer:
        for lo, hi in itertools.pairwise(cuts):
            if hi > lo:  # an empty file has no row group
                writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
        if metadata:  # in the footer whatever `store_schema` says
            writer.add_key_value_metadata(metadata)


def footer_metadata(source: Path | IO[bytes]) -> dict[str, str]:
    """Return a Parquet file's key-value metadata (what `atomic_write_parquet` was given)."""
    found = pq.read_metadata(source).metadata or {}
    return {k.decode(): v.decode() for k, v in found.items()}


def symbol_groups(table: pa.Table, min_rows: int) -> list[int]:
    """Return the row-group bounds [0, ..., rows]: cuts where the symbol changes, once a
    group holds at least `min_rows` rows (a tail shorter than that joins the last group).

    A table not sorted by symbol still gets exact groups: readers prune by each group's
    min/max statistics, which then merely overlap more.
    """
    n = table.num_rows
    if min_rows <= 0 or n < 2 * min_rows or "symbol" not in table.column_names:
        return [0, n]
    column = table["symbol"].combine_chunks()
    if pa.types.is_dictionary(column.type) and len(column.dictionary) == len(
        pc.unique(column.dictionary)
    ):
        keys = column.indices.to_numpy(zero_copy_only=False)
    else:  # strings (or a dictionary with repeated values): compare the decoded values
        keys = pc.dictionary_encode(column.cast(pa.string())).indices.to_numpy()
    changes = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    cuts, last = [0], 0
    for at in changes.tolist():
        if at - last >= min_rows:
            cuts.append(at)
            last = at
    if n - last < min_rows and len(cuts) > 1:
        cuts.pop()
    return [*cuts, n]


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_parquet_handle(
    handle: IO[bytes], columns: Sequence[str] | None = None, *, what: str = "file"
) -> pl.DataFrame:
    """Decode a Parquet file (some columns, or all) from an open handle.

    Anything unreadable raises `StorageError` naming `what` and the file.
    """
    try:
        return pl.read_parquet(handle, columns=list(columns) if columns else None)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StorageError(f"cannot read {what}", path=str(handle.name), error=str(exc)) from exc


def read_parquet_once(
    path: Path, columns: Sequence[str] | None = None, *, what: str = "file"
) -> pl.DataFrame:
    """Read a Parquet file (some columns, or all) through one open handle.

    A reader that opened the path twice (footer, then pages) could mix two versions of a
    file that another process replaced in between (polars then fails with "invalid
    thrift", or panics); one handle keeps one version. A missing file raises
    `FileNotFoundError`; anything else unreadable, `StorageError`.
    """
    with open(path, "rb") as handle:
        return read_parquet_handle(handle, columns, what=what)


def read_parquet_files(
    paths: Sequence[Path],
    query: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
    *,
    path_column: str | None = None,
    what: str = "files",
) -> pl.DataFrame | None:
    """Read many Parquet files, each exactly as one open handle sees it; None if none exists.

    Files that vanished since they were listed (expired, compacted, archived) are
    skipped. `query` (filters, projections, aggregations per file) runs on the scan of up
    to `_OPEN_AT_ONCE` files at a time, and the results are concatenated; `path_column`
    names a column that holds each row's file path. All files must share one schema.
    Arrow IPC base files (`.arrow`) among them are mapped one by one (`IpcBase`).

    Each file is opened (pinned) first; on Linux polars then scans them all in parallel
    by their `/proc/self/fd/N` names, which open the pinned file even after another writer
    replaced the path. Elsewhere it scans the handles, which is correct but slower (a
    multi-file scan of Python handles runs one file at a time).
    """
    ipc = [p for p in paths if p.suffix == ".arrow"]
    if ipc:  # Arrow IPC base files (see `atomic_write_base_ipc`) among them
        parts = [_read_ipc_files(ipc, query, path_column)]
        rest = [p for p in paths if p.suffix != ".arrow"]
        parts.append(read_parquet_files(rest, query, path_column=path_column, what=what))
        found = [f for f in parts if f is not None]
        return pl.concat(found) if len(found) > 1 else (found[0] if found else None)
    if path_column is None and len(paths) <= _HANDLE_SCANS:
        return _read_handles(paths, query, what)
    frames: list[pl.DataFrame] = []
    for lo in range(0, len(paths), _OPEN_AT_ONCE):
        with ExitStack() as stack:
            pinned: list[tuple[Path, IO[bytes]]] = []
            for path in paths[lo : lo + _OPEN_AT_ONCE]:
                try:
                    pinned.append((path, stack.enter_context(open(path, "rb"))))
                except FileNotFoundError:
                    continue
            if not pinned:
                continue
            lf = _scan_pinned(pinned, path_column)
            if query is not None:
                lf = query(lf)
            try:
                frames.append(lf.collect())
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise StorageError(f"cannot read {what}", files=len(pinned)) from exc
    if not frames:
        return None
    return pl.concat(frames) if len(frames) > 1 else frames[0]


def _read_ipc_files(
    paths: Sequence[Path],
    query: Callable[[pl.LazyFrame], pl.LazyFrame] | None,
    path_column: str | None,
) -> pl.DataFrame | None:
    """`read_parquet_files` of Arrow IPC base files: each mapped through one handle."""
    frames = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                frame = pl.from_arrow(read_ipc_handle(handle))
        except FileNotFoundError:  # removed since listed
            continue
        assert isinstance(frame, pl.DataFrame)
        lf = frame.lazy()
        if path_column is not None:
            lf = lf.with_columns(pl.lit(str(path)).alias(path_column))
        frames.append((lf if query is None else query(lf)).collect())
    if not frames:
        return None
    return pl.concat(frames) if len(frames) > 1 else frames[0]


def _read_handles(
    paths: Sequence[Path],
    query: Callable[[pl.LazyFrame], pl.LazyFrame] | None,
    what: str,
) -> pl.DataFrame | None:
    """`read_parquet_files` of a few files: one scan of each open handle."""
    frames = []
    for path in paths:
        with ExitStack() as stack:
            try:
                handle = stack.enter_context(open(path, "rb"))
            except FileNotFoundError:  # removed since listed
                continue
            lf = pl.scan_parquet(handle)
            try:
                frames.append((lf if query is None else query(lf)).collect())
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise StorageError(f"cannot read {what}", path=str(path)) from exc
    if not frames:
        return None
    return pl.concat(frames) if len(frames) > 1 else frames[0]


def _scan_pinned(pinned: list[tuple[Path, IO[bytes]]], path_column: str | None) -> pl.LazyFrame:
    if _PINNED_NAMES.is_dir():
        names = {f"{_PINNED_NAMES}/{handle.fileno()}": str(path) for path, handle in pinned}
        if path_column is None:
            return pl.scan_parquet(list(names))
        lf = pl.scan_parquet(list(names), include_file_paths=path_column)
        return lf.with_columns(pl.col(path_column).replace_strict(names))
    scans = [pl.scan_parquet(handle) for _, handle in pinned]
    if path_column is not None:
        scans = [
            scan.with_columns(pl.lit(str(path)).alias(path_column))
            for scan, (path, _) in zip(scans, pinned, strict=True)
        ]
    return pl.concat(scans)
