"""The lake's partition files and paths (`BarFiles`, the base of `bars.ParquetLake`):
buckets and partition directories, the striped partition locks, base files (format,
metadata, reading them, writing them with their tails), history files, and the names of
partitions in their delta folders."""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO
from uuid import uuid4

import numpy as np
import polars as pl
import pyarrow as pa

from quantivista.config import StorageSettings
from quantivista.storage.base import HISTORY_POLARS_SCHEMA
from quantivista.storage.lake.appends import Marks
from quantivista.storage.lake.bars_indexed import (
    _codec,
    _DeltaFile,
    _frame,
    _Indexed,
    _Key,
    _tail_of,
    _Untrusted,
)
from quantivista.storage.lake.cache import FileCache
from quantivista.storage.lake.cold import ColdIndex, ColdTier
from quantivista.storage.lake.deltas import (
    DELTA_DIR,
    FOLD_OF_KEY,
    THROUGH_KEY,
    Folder,
    PartitionView,
    delta_names,
)
from quantivista.storage.lake.files import (
    Identity,
    IpcBase,
    atomic_write_base_ipc,
    atomic_write_ipc,
    atomic_write_parquet,
    file_identity,
    flocked,
    footer_metadata,
    is_temporary,
    read_ipc_handle,
    read_parquet_handle,
    read_parquet_once,
)
from quantivista.storage.lake.layout import (
    BAR_ARROW_FILE,
    BAR_DATA_FILE,
    BAR_LAYOUT_FILE,
    LakeLayout,
    bar_base,
)
from quantivista.storage.lake.locks import StripeLocks
from quantivista.storage.lake.tails import (
    TAIL_FILE,
    TAIL_KEY,
    Tail,
    load_tail,
    new_token,
    tail_rows,
)

DATA_FILE = BAR_DATA_FILE
ARROW_FILE = BAR_ARROW_FILE  # a base in Arrow IPC (`storage.daily_format`, `intraday_format`)
LAYOUT_FILE = BAR_LAYOUT_FILE
_LOCK_STRIPES = 64
_PartKey = tuple[int, int | None]  # a split's partition: bucket, months since 1970
_Plan = tuple[list[Path], list[int], list[str]]  # directories, lock stripes, `_rel`s


def bucket_of(symbol: str, buckets: int) -> int:
    """Return the bucket of `symbol` (a stable hash: the same in every process and version)."""
    return zlib.crc32(symbol.encode()) % buckets


def _bucket_dir(bucket: int) -> str:
    return f"bucket={bucket:03d}"


class BarFiles:
    """A lake's partitions on disk: paths, locks, base and history files. The state is
    set up by `ParquetLake.__init__`."""

    root: Path
    settings: StorageSettings
    cold: ColdTier | None
    layout: LakeLayout
    bars_root: Path
    history_root: Path
    _lock_dir: Path
    cache: FileCache[_Indexed]
    views: FileCache[PartitionView]
    tails: FileCache[Tail]
    _stitch: dict[str, tuple[tuple[Tail, ...], pl.DataFrame]]
    cold_index: ColdIndex | None
    buckets: int
    _folder: Folder
    _deltas: dict[str, _DeltaFile]
    _deltas_lock: threading.Lock
    _places: dict[Path, tuple[Path, str]]
    _replaces: dict[str, tuple[str, ...]]
    _dirs: dict[_Key, Path]
    _stripes: dict[Path, int]
    _locks: StripeLocks
    _marks: dict[Path, Marks]
    _bases: dict[Path, Path]
    _buckets: dict[str, int]
    _plans: dict[tuple[str, tuple[_PartKey, ...]], _Plan]

    def bucket(self, symbol: str) -> int:
        """Return the bucket holding `symbol`."""
        return bucket_of(symbol, self.buckets)

    def _dir(self, timeframe: str, bucket: int, month: str | None = None) -> Path:
        key = (timeframe, bucket, month)
        found = self._dirs.get(key)  # remembered: every append asks for each partition
        if found is None:
            base = self.bars_root / f"timeframe={timeframe}" / _bucket_dir(bucket)
            found = self._dirs[key] = base / f"month={month}" if month else base
        return found

    def partition_dir(self, timeframe: str, symbol: str, month: str | None = None) -> Path:
        """Return the directory of the partition holding `symbol` (and `month`, intraday)."""
        return self._dir(timeframe, self.bucket(symbol), month)

    def history_dir(self, timeframe: str, symbol: str) -> Path:
        """Return the directory of the superseded versions of `symbol`'s bucket."""
        return self.history_root / f"timeframe={timeframe}" / _bucket_dir(self.bucket(symbol))

    def _history_of(self, partition: Path) -> Path:
        # history mirrors the partition layout, so one partition lock guards both
        return self.history_root / partition.relative_to(self.bars_root)

    def _write_history(self, partition: Path, old: pl.DataFrame) -> None:
        if old.height:
            self._write_history_file(self._history_file(partition), old)

    def _history_file(self, partition: Path) -> Path:
        """Return a new history file's path: Arrow IPC beside an Arrow IPC base (an as-of
        read of a fresh process then maps it instead of setting up a Parquet scan)."""
        arrow = self.base_path(partition).name == ARROW_FILE
        return self._history_of(partition) / f"{uuid4().hex}{'.arrow' if arrow else '.parquet'}"

    def _write_history_file(self, path: Path, rows: pl.DataFrame) -> None:
        rows = rows.select(HISTORY_POLARS_SCHEMA.names())
        if path.suffix == ".arrow":  # sorted, with a symbol index: as-of reads slice it
            rows = rows.sort("symbol", "ts", "ingested_at")
            runs = [(s, n) for s, (_, n) in _Indexed(rows).index.items()]
            atomic_write_base_ipc(rows, runs, path, self.settings, {})
        else:
            atomic_write_parquet(rows, path, self.settings)

    @staticmethod
    def _history_files(directory: Path, recursive: bool = False) -> list[Path]:
        """Return the history files (Parquet or Arrow IPC) of a directory, sorted."""
        # a walk, not a glob: a glob compiles a pattern, which a fresh process's as-of read
        # paid for (~0.3 M instructions)
        found: list[Path] = []
        for folder, subdirs, names in os.walk(directory):
            if not recursive:
                subdirs.clear()
            found.extend(Path(folder, name) for name in names)
        return sorted(
            p for p in found if p.suffix in (".parquet", ".arrow") and not is_temporary(p)
        )

    @contextmanager
    def locked(self, directory: Path) -> Iterator[None]:
        """Hold the lock of the partition in `directory` (a path under `bars_root`)."""
        # by the path inside the lake: every spelling of the root must pick the same stripe
        with self._locks.held([self._stripe(directory)]):
            yield

    def _stripe(self, directory: Path) -> int:
        # by the path inside the lake: every spelling of the root must pick the same stripe
        found = self._stripes.get(directory)
        if found is None:
            rel = directory.relative_to(self.bars_root).as_posix()
            found = self._stripes[directory] = zlib.crc32(rel.encode()) % _LOCK_STRIPES
        return found

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Hold every lock stripe: no partition changes until the block ends (for snapshots).

        Writers hold one stripe at a time, so taking all of them in order cannot deadlock.
        """
        with ExitStack() as stack:
            for stripe in range(_LOCK_STRIPES):
                stack.enter_context(flocked(self._lock_dir / f"{stripe:02d}.lock"))
            yield

    def _write_base(
        self,
        path: Path,
        rows: pl.DataFrame | pa.Table,
        through: str | None,
        frame: pl.DataFrame | None = None,  # `rows` as polars, when they are Arrow
        indexed: _Indexed | None = None,  # `rows` indexed, when the caller has it
        *,
        pending: str | None = None,
        fold_of: Identity | None = None,  # a fold's: the base it was folded from
    ) -> tuple[list[tuple[Path, Path]], Tail]:
        """Write a partition's base file, recording the newest delta it accounts for, and
        (Parquet) its tail first (see `tails`).

        With `pending` (a hidden name prefix), write them under hidden names beside and
        return (hidden, final) pairs to rename in that order, and the tail to remember
        then (a fold built outside the lock)."""
        rows_pl = frame if frame is not None else rows
        assert isinstance(rows_pl, pl.DataFrame)
        settings = self._settings_of(path)

        def at(final: Path) -> Path:
            return final if pending is None else final.parent / f"{pending}{final.name}"

        folded = {FOLD_OF_KEY: json.dumps(fold_of)} if fold_of is not None else {}
        if path.name == ARROW_FILE:  # its own symbol index: the tail is sliced from it
            found = indexed if indexed is not None else _Indexed(rows_pl)
            runs = [(s, n) for s, (_, n) in found.index.items()]
            meta = {THROUGH_KEY: through, **folded} if through else folded
            atomic_write_base_ipc(rows_pl, runs, at(path), settings, meta, _codec(path, settings))
            tail, files = _tail_of(found, through), [(at(path), path)]
        else:
            token = new_token()
            tail_frame = tail_rows(rows_pl)
            tail_path = path.parent / TAIL_FILE
            atomic_write_ipc(tail_frame, at(tail_path), settings, {TAIL_KEY: token})
            meta = {TAIL_KEY: token, THROUGH_KEY: through} if through else {TAIL_KEY: token}
            meta.update(folded)
            atomic_write_parquet(rows, at(path), settings, meta)
            tail = Tail(_Indexed(tail_frame), through)
            files = [(at(tail_path), tail_path), (at(path), path)]
        if pending is None:
            self.tails.put(path, tail)
        return files, tail

    def base_path(self, directory: Path) -> Path:
        """Return the path of a partition's base file: Arrow IPC if there is one, else
        Parquet (which may not exist). A partition keeps the format it was created in."""
        return bar_base(directory)

    def _new_base(self, directory: Path) -> Path:
        """Return the path of a new base file: Arrow IPC if the partition's format
        (`storage.daily_format`, or `storage.intraday_format` for a month directory) says
        so, else Parquet."""
        monthly = directory.name.startswith("month=")
        s = self.settings
        arrow = (s.intraday_format if monthly else s.daily_format) == "arrow"
        return directory / (ARROW_FILE if arrow else DATA_FILE)

    def _base_meta(self, path: Path) -> dict[str, str]:
        """Return a base file's metadata (Parquet footer, or Arrow IPC schema metadata)."""
        if path.name != ARROW_FILE:
            return footer_metadata(path)
        with open(path, "rb") as handle:
            return IpcBase(handle).meta

    def _settings_of(self, path: Path) -> StorageSettings:
        """Return the write settings of a base file: daily-and-longer ones (no month
        directory) take `storage.daily_compression` (cold reads decode them faster)."""
        codec = self.settings.daily_compression
        if (
            codec is None
            or codec == self.settings.compression
            or path.parent.name.startswith("month=")
        ):
            return self.settings
        return self.settings.model_copy(update={"compression": codec})

    def _bucket_of(self, symbol: str) -> int:
        found = self._buckets.get(symbol)
        if found is None:
            found = self._buckets[symbol] = bucket_of(symbol, self.buckets)
        return found

    def _buckets_of(self, symbols: list[str]) -> np.ndarray:
        """Return the buckets of `symbols` (no Python call per symbol once each is known)."""
        known = self._buckets
        if not known.keys() >= set(symbols):
            for symbol in symbols:
                self._bucket_of(symbol)
        return np.fromiter(map(known.__getitem__, symbols), np.int64, len(symbols))

    @contextmanager
    def _locked_all(self, directories: Sequence[Path]) -> Iterator[None]:
        with self._locks.held([self._stripe(d) for d in directories]):
            yield

    def _tail(self, base: Path) -> Tail | None:
        """Return a base file's trusted tail (None: none); `FileNotFoundError` if no base."""

        def load() -> Tail:
            if base.name == ARROW_FILE:
                with open(base, "rb") as handle:
                    whole = self._read_indexed(handle)
                return _tail_of(whole, whole.through)
            tail = load_tail(base, _Indexed)[1]
            if tail is None:
                raise _Untrusted
            return tail

        try:
            return self.tails.lookup(str(base), file_identity(base), load)
        except _Untrusted:
            return None

    def _where(self, directory: Path) -> tuple[Path, str]:
        """Return a partition's delta folder and its name in there (its folder inside its
        timeframe's); remembered, as every append and read asks for each partition."""
        found = self._places.get(directory)
        if found is None:
            parts = directory.relative_to(self.bars_root).parts
            found = (self.bars_root / parts[0] / DELTA_DIR, "/".join(parts[1:]))
            self._places[directory] = found
        return found

    def _rel(self, directory: Path) -> str:
        return self._where(directory)[1]

    def _delta_folder(self, directory: Path) -> Path:
        return self._where(directory)[0]

    def _newest_delta(self, directory: Path) -> str | None:
        names = delta_names(self._delta_folder(directory))
        return names[-1] if names else None

    @staticmethod
    def _sweep_temporaries(directory: Path) -> None:
        # under the partition lock, any temporary file is a leftover of a crashed writer
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".tmp-"):
                (directory / name).unlink(missing_ok=True)

    @staticmethod
    def read_file(path: Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Read a lake file through one handle (another process may be replacing it)."""
        if path.suffix != ".arrow":
            return read_parquet_once(path, columns, what="partition file")
        with open(path, "rb") as handle:
            frame = _frame(read_ipc_handle(handle, what="partition file"))
        return frame.select(columns) if columns else frame

    def _read_indexed(self, handle: IO[bytes]) -> _Indexed:
        if handle.name.endswith(ARROW_FILE):
            base = IpcBase(handle)  # mapped, not decoded: the frame is the file's buffers
            return _Indexed(_frame(base.table()), base.runs, base.meta.get(THROUGH_KEY))
        frame = read_parquet_handle(handle, what="partition file")
        handle.seek(0)
        return _Indexed(frame, through=footer_metadata(handle).get(THROUGH_KEY))
