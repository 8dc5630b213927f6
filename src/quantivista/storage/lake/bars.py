"""The embedded lake: silver bars as partitioned files sorted by symbol and ts (Arrow IPC,
or Parquet in stores written before and in the cold tier).

Symbols hash into a fixed number of buckets (`storage.buckets`, written to
`<root>/silver/bars/_layout.json` when the lake is created). A partition holds the bars of
every symbol of one bucket, sorted by symbol and ts:

    timeframe=1d/bucket=007/data.arrow                  daily and longer: one file a bucket
    timeframe=1m/bucket=007/month=2024-01/data.arrow    intraday: one file a bucket-month

Buckets keep the file count independent of the universe: a backfill of 500 symbols writes
64 files, not 500, and per-file costs (file creation, rename, Parquet footer, one encoder
per column) stop dominating the write. Readers cache each decoded file with an index of
its symbols, so a warm read of one symbol is a dictionary lookup and a slice. Files are cut
into row groups of whole symbols (`storage.row_group_rows`, `files.symbol_groups`), so a
process that has not decoded a file reads a few symbols from their row groups only.

Daily-and-longer base files are uncompressed Arrow IPC files by default
(`storage.daily_format`; `data.arrow` instead of `data.parquet`), their symbol index in the
schema metadata: a process that has not read the file maps it and hands a symbol's slice to
polars, with nothing decoded or copied (a fresh process reads one symbol in half the
instructions of the Parquet row-group read). They need no tail file (see `tails`): the tail
is sliced from the base. Intraday month files are Arrow IPC too (`storage.intraday_format`),
their buffers lz4-compressed in batches of whole symbols (`storage.intraday_arrow_compression`:
they hold most of the bytes; a cold read decompresses its symbol's batch only), and turn
into Parquet when archived to the cold tier. A partition keeps the format it was created
in, so stores written before (Parquet, `data.parquet`) read as they are.

Every write replaces whole partition files atomically (write a hidden temporary file, then
`os.replace`), under a lock striped over partitions, so readers never see half a file and
concurrent writers of one partition never lose each other's rows. A write that changes
nothing leaves the file untouched: ingesting the same bars twice is a no-op. The stripe of
a partition depends only on its path inside the lake, so processes that name the data
directory differently (relative, absolute, through a symlink) still share its locks;
readers open each file once (see `files.read_parquet_once`).

Superseded versions (replaced or deleted bars) go to `<root>/history/bars/timeframe=X/
bucket=B/<uuid>.parquet` with `superseded_at`, written before the data file is replaced,
so as-of reads are exact even across a crash between the two renames.

With a cold tier (`storage.archive_url`, see `storage.archive`), bars past their hot
retention move to an archive with the same layout; `read`, `symbols`, `stats` and
`timeframes` span both tiers (the hot copy wins where a bar is in both), guided by the cold
index so the archive is opened only for the files a read needs.

`ParquetLake` is assembled from classes by responsibility: `bars_core.BarFiles` (paths,
locks, base and history files), `bars_deltas.BarDeltas` (delta files, partition views,
folds, merges of deltas), `bars_writes.BarWrites` (`upsert`, appends, `prepare`),
`bars_reads.BarReads` (`read`, as-of, `recent`) and `bars_upkeep.BarUpkeep` (deletes,
retention, `compact`, `stats`, `storage_report`); decoded partitions and the row merges are
in `bars_indexed` and `bars_merge`. This module sets up the state and re-exports the names
other modules and tests import from it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.config import StorageSettings
from quantivista.errors import StorageError, StorageUsageError
from quantivista.storage.lake.appends import Marks
from quantivista.storage.lake.bars_core import (
    _LOCK_STRIPES,
    _PartKey,
    _Plan,
)
from quantivista.storage.lake.bars_core import ARROW_FILE as ARROW_FILE
from quantivista.storage.lake.bars_core import DATA_FILE as DATA_FILE
from quantivista.storage.lake.bars_core import LAYOUT_FILE as LAYOUT_FILE
from quantivista.storage.lake.bars_core import bucket_of as bucket_of
from quantivista.storage.lake.bars_deltas import _FOLD_ROWS as _FOLD_ROWS
from quantivista.storage.lake.bars_deltas import _MERGED_DELTAS as _MERGED_DELTAS
from quantivista.storage.lake.bars_indexed import _DeltaFile, _Key
from quantivista.storage.lake.bars_indexed import _Indexed as _Indexed
from quantivista.storage.lake.bars_merge import _merge as _merge
from quantivista.storage.lake.bars_merge import _merge_few as _merge_few
from quantivista.storage.lake.bars_upkeep import BarUpkeep
from quantivista.storage.lake.bars_upkeep import storage_report as storage_report
from quantivista.storage.lake.bars_writes import BarWrites
from quantivista.storage.lake.cache import FileCache
from quantivista.storage.lake.cold import ColdIndex, ColdTier
from quantivista.storage.lake.deltas import Folder, PartitionView
from quantivista.storage.lake.layout import LakeLayout
from quantivista.storage.lake.locks import StripeLocks
from quantivista.storage.lake.tails import Tail

__all__ = ["ParquetLake", "bucket_of", "storage_report"]

_LAYOUT_VERSION = 2


class ParquetLake(BarWrites, BarUpkeep):
    """Silver bars in a directory of partition files: Arrow IPC bases (intraday months with
    lz4 buffers, `storage.intraday_format`), small appends as delta files, archived months
    as Parquet in the cold tier (the default `BarStore`)."""

    def __init__(
        self, root: Path, settings: StorageSettings | None = None, cold: ColdTier | None = None
    ) -> None:
        self.root = Path(root)
        self.settings = settings or StorageSettings()
        url = self.settings.archive_url
        self.cold = cold if cold is not None else (ColdTier(url) if url else None)
        self.layout = LakeLayout(self.root)
        self.bars_root = self.layout.bars
        self.history_root = self.layout.bars_history
        self._lock_dir = self.layout.locks
        # decoded partition files of both tiers (cold ones under the identity the index holds)
        self.cache: FileCache[_Indexed] = FileCache(self.settings.cache_mb * 1024 * 1024)
        # partitions with deltas: the views (their files are in `cache`)
        self.views: FileCache[PartitionView] = FileCache(self.cache.max_bytes)
        # partitions' tails (see `tails`), by base file: apart, so bases do not evict them
        self.tails: FileCache[Tail] = FileCache(self.cache.max_bytes // 2)
        self._stitch: dict[str, tuple[tuple[Tail, ...], pl.DataFrame]] = {}
        for directory in (self.bars_root, self._lock_dir):  # a read-only store has them
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
        self.cold_index = ColdIndex(self.root, self.cold, self._lock_dir) if self.cold else None
        self.buckets = self._layout()
        self._folder = Folder(self.tidy)
        # decoded delta files by path: never rewritten (only removed), so no identity check
        self._deltas: dict[str, _DeltaFile] = {}
        self._deltas_lock = threading.Lock()
        self._places: dict[Path, tuple[Path, str]] = {}
        self._replaces: dict[str, tuple[str, ...]] = {}  # a merged delta's sources, by path
        self._dirs: dict[_Key, Path] = {}
        self._stripes: dict[Path, int] = {}
        self._locks = StripeLocks(self._lock_dir, _LOCK_STRIPES)  # kept open (see `locks`)
        self._marks: dict[Path, Marks] = {}  # appends: partitions' last bars (see `appends`)
        self._bases: dict[Path, Path] = {}  # appends: partitions' base files, by directory
        self._buckets: dict[str, int] = {}  # symbols' buckets (a stream asks every second)
        # appends: a batch's partitions' directories, stripes and names, by their keys (a
        # stream's batches hit the same partitions every second)
        self._plans: dict[tuple[str, tuple[_PartKey, ...]], _Plan] = {}

    def _layout(self) -> int:
        """Return the lake's bucket count, fixing it from the settings on first use."""
        path = self.bars_root / LAYOUT_FILE
        if not path.exists():
            if any(self.bars_root.glob("timeframe=*/symbol=*")):
                raise StorageUsageError(
                    "this lake has the per-symbol layout of an earlier version: back it up"
                    " with that version, or re-ingest into a new data directory",
                    root=str(self.root),
                )
            tmp = self.bars_root / f".tmp-{uuid4().hex}.json"
            layout = {"layout": _LAYOUT_VERSION, "buckets": self.settings.buckets}
            tmp.write_text(json.dumps(layout))
            try:
                os.link(tmp, path)  # fails if another process got there first: theirs wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        try:
            layout = json.loads(path.read_text())
            if layout["layout"] != _LAYOUT_VERSION:
                raise StorageError("unknown lake layout", layout=layout["layout"])
            return int(layout["buckets"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError("cannot read the lake layout", path=str(path)) from exc
