"""The lake's upkeep (`BarUpkeep`): deletes and retention (`delete`, `expire`,
`rewrite_base`), `compact`, and what is stored (`symbols`, `timeframes`, `stats`,
`storage_report`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from quantivista.model.schema import PL_UTC_TS
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import (
    REPORT_SCHEMA,
    STATS_SCHEMA,
)
from quantivista.storage.lake.bars_indexed import _prune_empty_dirs
from quantivista.storage.lake.bars_reads import BarReads
from quantivista.storage.lake.deltas import THROUGH_KEY
from quantivista.storage.lake.files import (
    read_ipc_handle,
    read_parquet_files,
)
from quantivista.storage.lake.tails import TAIL_FILE

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


class BarUpkeep(BarReads):
    """Deletes, retention, compaction, and reports on what the lake holds."""

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


def storage_report(lake: BarUpkeep) -> pl.DataFrame:  # a `ParquetLake`
    """Return files, rows, bytes on disk, raw (uncompressed) bytes and ratio per tier.

    Tiers: "hot" (current bars), "history" (superseded versions) and, when a cold tier is
    configured, "cold" (archived bars: the archive is listed and each file's Parquet footer
    read through fsspec, so the row reflects what the archive holds, not the cold index).
    """
    deltas = lake.delta_files()
    tiers = {
        "hot": lake.data_files() + deltas,
        "history": lake._history_files(lake.history_root, True),
    }
    # a delta's rows count as reads see them: not the parts a base holds already (a fold
    # under way) nor a merged delta's sources a crash left (files and bytes: all on disk)
    live = {str(path): frame.height for path, frame in lake.live_deltas()}
    counted = {str(path): live.get(str(path), 0) for path in deltas}
    rows = []
    for tier, files in tiers.items():
        n_rows = disk = raw = 0
        for path in files:
            size = path.stat().st_size
            if path.suffix == ".arrow":  # raw: the buffers' bytes (month files may compress)
                with open(path, "rb") as handle:
                    table = read_ipc_handle(handle)
                n_rows += counted.get(str(path), table.num_rows)
                raw += table.nbytes
            else:
                meta = pq.read_metadata(path)
                n_rows += counted.get(str(path), meta.num_rows)
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
