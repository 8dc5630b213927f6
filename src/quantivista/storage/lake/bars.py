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
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import polars as pl
import pyarrow.parquet as pq

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.schema import (
    PL_UTC_TS,
)
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import (
    REPORT_SCHEMA,
    STATS_SCHEMA,
)
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
from quantivista.storage.lake.bars_indexed import (
    _Indexed as _Indexed,
)
from quantivista.storage.lake.bars_indexed import (
    _Key,
    _prune_empty_dirs,
)
from quantivista.storage.lake.bars_merge import _merge as _merge
from quantivista.storage.lake.bars_merge import _merge_few as _merge_few
from quantivista.storage.lake.bars_reads import BarReads
from quantivista.storage.lake.bars_writes import BarWrites
from quantivista.storage.lake.cache import FileCache
from quantivista.storage.lake.cold import ColdIndex, ColdTier
from quantivista.storage.lake.deltas import (
    THROUGH_KEY,
    Folder,
    PartitionView,
)
from quantivista.storage.lake.files import (
    read_ipc_handle,
    read_parquet_files,
)
from quantivista.storage.lake.layout import (
    LakeLayout,
)
from quantivista.storage.lake.locks import StripeLocks
from quantivista.storage.lake.tails import (
    TAIL_FILE,
    Tail,
)

__all__ = ["ParquetLake", "bucket_of", "storage_report"]

_LAYOUT_VERSION = 2
# what `stats` gathers per (file, symbol) before summing per (timeframe, symbol)
_PER_FILE = pl.Schema(
    {
        "_file": pl.String(),
        "timeframe": pl.String(),
        "_bytes": pl.Int64(),
        "symbol": pl.String(),
        "rows": pl.Int64(),
        "first_ts": PL_UTC_TS,
        "last_ts": PL_UTC_TS,
    }
)


class ParquetLake(BarWrites, BarReads):
    """Silver bars in a directory of Parquet partitions (the default `BarStore`)."""

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
        self._deltas: dict[str, Mapping[str, _Indexed]] = {}
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
                raise StorageError(
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

    def rewrite_base(self, path: Path, rows: pl.DataFrame) -> None:
        """Replace a base file with some of its rows (retention, archival); the caller holds
        the partition lock. An empty base is removed, unless deltas appended since the fold
        hold rows of the partition: they live only beside a base."""
        if rows.is_empty() and not self._held(path.parent):
            path.unlink()
            (path.parent / TAIL_FILE).unlink(missing_ok=True)
            return
        through = self._base_meta(path).get(THROUGH_KEY)
        self._write_base(path, rows, through)

    def delete(
        self,
        timeframe: Timeframe,
        symbols: Sequence[str] | None = None,
        before: datetime | None = None,
        *,
        at: datetime | None = None,
    ) -> int:
        """Delete bars of one timeframe (some symbols or all; ts < `before` or all).

        The deleted versions go to history with `superseded_at = at` (default now), so
        as-of reads before `at` still see them. Return the rows deleted.
        """
        if isinstance(symbols, str):  # one symbol given bare (the old lake signature)
            symbols = [symbols]
        when = at or datetime.now(UTC)
        return self._remove(str(timeframe), symbols, before, keep_history=True, at=when)

    def expire(self, timeframe: Timeframe, before: datetime) -> int:
        """Drop bars with ts < `before` and their history (retention); return current rows."""
        tf = str(timeframe)
        removed = self._remove(tf, None, before, keep_history=False, at=before)
        for hist_file in self._history_files(self.history_root / f"timeframe={tf}", True):
            partition = self.bars_root / hist_file.parent.relative_to(self.history_root)
            with self.locked(partition):
                if not hist_file.exists():
                    continue
                old = self.read_file(hist_file)
                keep = old.filter(pl.col("ts") >= before)
                if keep.is_empty():
                    hist_file.unlink()
                elif keep.height < old.height:
                    self._write_history_file(hist_file, keep)
        return removed

    def _remove(
        self,
        tf: str,
        symbols: Sequence[str] | None,
        before: datetime | None,
        *,
        keep_history: bool,
        at: datetime,
    ) -> int:
        removed = 0
        mask = pl.lit(True) if before is None else pl.col("ts") < before
        if symbols is None:
            paths = self.data_files(tf, before=before)
        else:
            mask = mask & pl.col("symbol").is_in(list(symbols))
            found = (p for s in dict.fromkeys(symbols) for p in self._files(tf, s, None, before))
            paths = sorted(set(found))
        for path in paths:
            with self.locked(path.parent):
                self.fold_locked(path.parent)  # one file to work on
                if not path.exists():
                    continue
                df = self.read_file(path)
                gone = df.filter(mask)
                if gone.is_empty():
                    continue
                if keep_history:
                    hist = gone.with_columns(superseded_at=pl.lit(at, PL_UTC_TS))
                    self._write_history(path.parent, hist)
                keep = df.filter(~mask)
                self.rewrite_base(path, keep)
                if keep.is_empty():
                    _prune_empty_dirs(path.parent, self.bars_root)
                removed += gone.height
        return removed

    def storage_report(self) -> pl.DataFrame:
        """Return files, rows, bytes and compression per tier (see `storage_report`)."""
        return storage_report(self)

    def compact(self) -> int:
        """Fold delta files into their partitions and merge each partition's history files
        into one; return the files removed.

        Every correction adds one small history file per partition it touches, every append
        one delta file; reads scan them all, so periodic compaction keeps reads fast.
        """
        folders = sorted({p.parent.parent for p in self.delta_files()})
        threads = self.settings.write_threads or os.cpu_count() or 1
        removed = sum(self.fold_timeframe(folder, threads) for folder in folders)
        dirs = {p.parent for p in self._history_files(self.history_root, True)}
        for hist_dir in sorted(dirs):
            partition = self.bars_root / hist_dir.relative_to(self.history_root)
            with self.locked(partition):
                files = self._history_files(hist_dir)
                if len(files) < 2:
                    continue
                merged = pl.concat([self.read_file(p) for p in files])
                merged = merged.sort("symbol", "ts", "ingested_at")
                # the merged file lands before the parts go: a crash leaves duplicates of
                # identical versions, which as-of reads already tolerate
                self._write_history_file(self._history_file(partition), merged)
                for path in files:
                    path.unlink()
                removed += len(files) - 1
        return removed

    def close(self) -> None:
        """Let background folds finish (files are opened per call)."""
        self._folder.wait()

    def symbols(self, timeframe: Timeframe | None = None) -> list[str]:
        """Return the stored symbols (hot or archived), sorted."""
        tf = str(timeframe) if timeframe else None
        files = self.data_files(tf) + self.delta_files(tf)
        found: set[str] = set()
        unique = pl.col("symbol").unique()
        hot = read_parquet_files(files, lambda lf: lf.select(unique), what="partition files")
        if hot is not None:
            found.update(hot["symbol"].to_list())
        if self.cold_index is not None:
            for entry in self.cold_index.entries(tf):
                found.update(entry.symbols)
        return sorted(found)

    def timeframes(self) -> list[str]:
        """Return the stored timeframes (hot or archived) from finest to coarsest."""
        names = {p.name[len("timeframe=") :] for p in self.bars_root.glob("timeframe=*")}
        if self.cold_index is not None:
            names.update(self.cold_index.timeframes())
        return sorted(names, key=lambda t: Timeframe.parse(t).sort_key())

    def stats(self) -> pl.DataFrame:
        """Return rows, first/last ts, bytes and files per (timeframe, symbol), both tiers.

        Rows, first and last ts cover the hot and the cold tier; bytes and files count the
        files of both tiers, a file's bytes shared among its symbols in proportion to their
        rows. Hot files are scanned (symbol and ts columns); cold ones come from the cold
        index, without touching the archive. Rows caught in both tiers by an interrupted
        archival count twice until the archival is rerun.
        """
        files = self.data_files()
        parts = []
        aggs = {"rows": pl.len(), "first_ts": pl.col("ts").min(), "last_ts": pl.col("ts").max()}
        per_file = read_parquet_files(
            files,
            lambda lf: lf.group_by("_file", "symbol").agg(**aggs),
            path_column="_file",
            what="partition files",
        )
        # deltas as reads list them: a crash-left merge source or folded delta counts once
        deltas = self.live_deltas()
        if deltas:
            found = [rows.with_columns(_file=pl.lit(str(path))) for path, rows in deltas]
            mine = pl.concat(found).group_by("_file", "symbol").agg(**aggs)
            per_file = (
                mine if per_file is None else pl.concat([per_file, mine], how="diagonal_relaxed")
            )
            files += [path for path, _ in deltas]
        if per_file is not None:
            sizes = []
            for path in files:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:  # removed since listed (archived or expired)
                    continue
                sizes.append((str(path), path.relative_to(self.bars_root).parts[0][10:], size))
            frame = pl.DataFrame(sizes, schema=["_file", "timeframe", "_bytes"], orient="row")
            parts.append(per_file.join(frame, on="_file"))
        if self.cold_index is not None:
            cold = [
                (f"cold:{e.rel}", e.timeframe, e.bytes, symbol, n, lo, hi)
                for e in self.cold_index.entries()
                for symbol, (n, lo, hi) in e.symbols.items()
            ]
            if cold:
                names = ["_file", "timeframe", "_bytes", "symbol", "rows", "first_ts", "last_ts"]
                frame = pl.DataFrame(cold, schema=names, orient="row")
                ts = pl.col("first_ts", "last_ts")
                parts.append(
                    frame.with_columns(pl.from_epoch(ts, "us").dt.replace_time_zone("UTC"))
                )
        if not parts:
            return pl.DataFrame(schema=STATS_SCHEMA)
        per_file = pl.concat(
            [p.select(_PER_FILE.names()).cast(dict(_PER_FILE)) for p in parts]  # type: ignore[arg-type]
        )
        share = pl.col("_bytes") * pl.col("rows") / pl.col("rows").sum().over("_file")
        out = (
            per_file.with_columns(bytes=share.round(0).cast(pl.Int64))
            .group_by("timeframe", "symbol")
            .agg(
                pl.col("rows").sum(),
                pl.col("first_ts").min(),
                pl.col("last_ts").max(),
                pl.col("bytes").sum(),
                files=pl.len(),
            )
            .sort("timeframe", "symbol")
        )
        return out.cast(dict(STATS_SCHEMA)).select(STATS_SCHEMA.names())  # type: ignore[arg-type]


def storage_report(lake: ParquetLake) -> pl.DataFrame:
    """Return files, rows, bytes on disk, raw (uncompressed) bytes and ratio per tier.

    Tiers: "hot" (current bars), "history" (superseded versions) and, when a cold tier is
    configured, "cold" (archived bars: the archive is listed and each file's Parquet footer
    read through fsspec, so the row reflects what the archive holds, not the cold index).
    """
    tiers = {
        "hot": lake.data_files() + lake.delta_files(),
        "history": lake._history_files(lake.history_root, True),
    }
    rows = []
    for tier, files in tiers.items():
        n_rows = disk = raw = 0
        for path in files:
            size = path.stat().st_size
            if path.suffix == ".arrow":  # raw: the buffers' bytes (month files may compress)
                with open(path, "rb") as handle:
                    table = read_ipc_handle(handle)
                n_rows += table.num_rows
                raw += table.nbytes
            else:
                meta = pq.read_metadata(path)
                n_rows += meta.num_rows
                raw += _raw_bytes(meta)
            disk += size
        rows.append((tier, len(files), n_rows, disk, raw, raw / disk if disk else None))
    if lake.cold is not None:
        listing = lake.cold.listing()
        n_rows = disk = raw = 0
        for rel, info in listing.items():
            meta = lake.cold.metadata(rel)
            n_rows += meta.num_rows
            raw += _raw_bytes(meta)
            disk += int(info["size"])
        rows.append(("cold", len(listing), n_rows, disk, raw, raw / disk if disk else None))
    return pl.DataFrame(rows, schema=REPORT_SCHEMA, orient="row")


def _raw_bytes(meta: pq.FileMetaData) -> int:
    """Return the uncompressed size of a Parquet file's data (from its footer)."""
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
