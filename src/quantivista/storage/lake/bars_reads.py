"""The lake's read path (`BarReads`): listing a partition's files, `read` (per symbol, or
in bulk), as-of reads (one symbol from Arrow IPC files, or with the history), cold-tier
frames, and `recent` (from the tails and the live deltas)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from quantivista.errors import StorageError, StorageUsageError
from quantivista.model.schema import (
    BAR_COLUMNS,
    BAR_POLARS_SCHEMA,
)
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import (
    HISTORY_POLARS_SCHEMA,
    pick_as_of,
)
from quantivista.storage.lake.asof import history_slices, read_as_of
from quantivista.storage.lake.bars_core import ARROW_FILE
from quantivista.storage.lake.bars_deltas import BarDeltas
from quantivista.storage.lake.bars_indexed import (
    _epoch_us,
    _frame,
    _Indexed,
    _join_tiers,
    _months,
    _ts_slice,
)
from quantivista.storage.lake.cold import ColdEntry
from quantivista.storage.lake.deltas import (
    PartitionView,
)
from quantivista.storage.lake.files import (
    IpcBase,
    read_parquet_files,
)
from quantivista.storage.lake.layout import bar_base_files
from quantivista.storage.lake.tails import Tail

_MICROSECOND = timedelta(microseconds=1)
_BULK_READ = 16  # symbols above which a read cuts ranges and columns once, not per symbol


class BarReads(BarDeltas):
    """Reads of both tiers through the decoded-file cache."""

    def recent(
        self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        """Return what `read(symbols, timeframe, start, end)` returns, from the partitions'
        tails and the live deltas (see `tails`): the bars just before an append (the
        validation's warm-up) without decoding bases. Partitions whose tails do not reach
        back to `start` (or are not trusted) are read."""
        if self.cold_index is not None:  # tails are hot: archived rows need the read
            return self.read(symbols, timeframe, start, end)
        tf = str(timeframe)
        lo = _epoch_us(start)
        by_bucket: dict[int, list[str]] = {}
        for symbol in sorted(set(symbols)):
            by_bucket.setdefault(self._bucket_of(symbol), []).append(symbol)
        live = self._live_deltas(tf)
        months: Sequence[str | None] = [None]
        if timeframe.partition_period == "month":
            months = _months(start, end)
        tails: list[Tail] = []
        rest: list[str] = []  # symbols of buckets read the usual way
        throughs: dict[str, str | None] = {}  # partitions answered from tails
        for bucket, names in by_bucket.items():
            mine, seen = [], {}
            for month in months:
                directory = self._dir(tf, bucket, month)
                try:
                    tail = self._tail(self.base_path(directory))
                except FileNotFoundError:
                    continue  # no rows there (deltas hold rows only beside a base)
                if tail is None or not tail.covers(lo):
                    rest.extend(names)
                    break
                mine.append(tail)
                seen[self._rel(directory)] = tail.through
            else:
                tails.extend(mine)
                throughs.update(seen)
        ok = set(symbols) - set(rest)
        in_window = (pl.col("ts") >= start) & (pl.col("ts") < end)
        keep = pl.col("symbol").is_in(sorted(ok)) & in_window

        # the frames to filter by `in_window` alone (every symbol of theirs wanted: `is_in`
        # costs more than the rows) and by `keep`; each group filtered once, as one frame of
        # chunks (a filter per delta file cost more than its rows)
        wide: list[pl.DataFrame] = []
        narrow: list[pl.DataFrame] = []

        def pick(frame: pl.DataFrame, every: bool) -> None:
            (wide if every else narrow).append(frame)

        if tails:
            pick(self._stitched(tf, tails), all(ok.issuperset(t.rows.index) for t in tails))
        for name, parts in live:
            spans = parts.spans()
            if all((throughs.get(r) or "") < name for r, _, _ in spans):
                pick(parts.frame, ok.issuperset(parts.symbols()))  # the common case: it all
                continue
            # parts of partitions folded already (a fold under way): left out
            rows = [
                np.arange(start, start + n)
                for r, start, n in spans
                if (throughs.get(r) or "") < name
            ]
            if rows:
                narrow.append(parts.frame[np.concatenate(rows)])
        frames = [
            pl.concat(group, rechunk=False).filter(predicate)
            for group, predicate in ((wide, in_window), (narrow, keep))
            if group
        ]
        if rest:
            frames.append(self.read(rest, timeframe, start, end))
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema=BAR_POLARS_SCHEMA)
        out = pl.concat(frames).sort("symbol", "ts")
        sym, ts = pl.col("symbol"), pl.col("ts")
        if out.select(((sym == sym.shift()) & (ts == ts.shift())).any()).item():
            # a delta folded into a base that does not say so (a second guard, as in reads)
            out = out.unique(["symbol", "ts"], keep="first", maintain_order=True)
        return out

    def _stitched(self, tf: str, tails: list[Tail]) -> pl.DataFrame:
        """Return the rows of `tails` as one frame, remembered per timeframe until a tail
        changes (a micro-batch after a micro-batch finds the same tails: one filter)."""
        key = tuple(tails)
        found = self._stitch.get(tf)
        if found is None or found[0] != key:
            found = (key, pl.concat([t.rows.frame for t in tails], rechunk=False))
            self._stitch[tf] = found
        return found[1]

    def data_files(
        self, timeframe: str | None = None, before: datetime | None = None
    ) -> list[Path]:
        """Return the data files (of one timeframe, or all), sorted.

        With `before`, only the partitions that can hold bars with ts < `before`.
        """
        files = bar_base_files(self.bars_root, timeframe)
        if before is None:
            return files
        hi = f"month={before.year:04d}-{before.month:02d}"
        return [p for p in files if not p.parent.name.startswith("month=") or p.parent.name <= hi]

    def _files(
        self, timeframe: str, symbol: str, start: datetime | None, end: datetime | None
    ) -> list[Path]:
        base = self.partition_dir(timeframe, symbol)
        if Timeframe.parse(timeframe).partition_period == "all":
            path = self.base_path(base)
            return [path] if path.name == ARROW_FILE or path.exists() else []
        lo = f"{start.year:04d}-{start.month:02d}" if start else ""
        # `end` is exclusive: a read up to a month's first instant opens no file of it
        last = end - _MICROSECOND if end else None
        hi = f"{last.year:04d}-{last.month:02d}" if last else "9999-99"
        try:  # a listing, not a glob: a glob compiles a pattern (a fresh process's first read)
            names = os.listdir(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        files = []
        for name in sorted(names):
            month = name[len("month=") :]
            if name.startswith("month=") and lo <= month <= hi:
                path = self.base_path(base / name)
                if path.name == ARROW_FILE or path.exists():
                    files.append(path)
        return files

    def read(
        self,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: Sequence[str] | None = None,
        as_of: datetime | None = None,
    ) -> pl.DataFrame:
        """Return bars with `start <= ts < end` for the symbols, sorted by symbol and ts.

        With `as_of`, return the versions the lake held at that instant (see `BarStore`).
        """
        cols = list(columns) if columns else list(BAR_COLUMNS)
        unknown = [c for c in cols if c not in BAR_POLARS_SCHEMA]
        if unknown:
            raise StorageUsageError("unknown columns requested", columns=unknown)
        whole = as_of is not None or cols == list(BAR_COLUMNS)
        if as_of is not None and len(set(symbols)) == 1:
            one = self._as_of_one(str(timeframe), symbols[0], start, end, as_of)
            if one is not None:
                return one if one.columns == cols else one.select(cols)
        read_cols = list(BAR_COLUMNS) if whole else (cols if "ts" in cols else [*cols, "ts"])
        frames = []
        tf_text = str(timeframe)
        wanted = sorted(set(symbols))  # files are sorted by ts: sorted symbols keep order
        # each file once per call, shared by symbols; each bucket's file list once
        opened: dict[Path, _Indexed | PartitionView | None] = {}
        listed: dict[int, list[Path]] = {}
        bulk = len(wanted) > _BULK_READ and self.cold_index is None
        if bulk:
            found = self._read_bulk(tf_text, wanted, start, end)
            frames = [] if found is None else [found if whole else found.select(read_cols)]
        for symbol in wanted if not bulk else ():
            bucket = self.bucket(symbol)
            if bucket not in listed:
                listed[bucket] = self._files(tf_text, symbol, start, end)
            # hot before cold: archival records a cold file before it rewrites the hot one,
            # so rows moving meanwhile are seen in one tier or both, never in neither
            hot = [
                _ts_slice(piece, start, end)
                for path in listed[bucket]
                for piece in self._hot_rows(path, symbol, wanted, opened)
            ]
            hot = [h for h in hot if h.height]
            cold = self._cold_frames(tf_text, symbol, start, end)
            if not whole:
                hot = [h.select(read_cols) for h in hot]
                cold = [c.select(read_cols) for c in cold]
            frames.extend(_join_tiers(cold, hot))
        if as_of is not None:
            current = pl.concat(frames) if frames else pl.DataFrame(schema=BAR_POLARS_SCHEMA)
            history = self._history(tf_text, symbols, start, end)
            frames = [pick_as_of(current, history, as_of)]
        if not frames:
            return pl.DataFrame(schema={c: BAR_POLARS_SCHEMA[c] for c in cols})
        df = pl.concat(frames) if len(frames) > 1 else frames[0]
        return df if df.columns == cols else df.select(cols)

    def _as_of_one(
        self, tf: str, symbol: str, start: datetime | None, end: datetime | None, as_of: datetime
    ) -> pl.DataFrame | None:
        """Return one symbol's as-of read from its partition's Arrow IPC base and history
        files (see `asof`); None where that does not apply (a cold tier, deltas beside the
        base, Parquet or month files): read the general way then."""
        if self.cold_index is not None:
            return None
        files = self._files(tf, symbol, start, end)
        if len(files) != 1 or files[0].name != ARROW_FILE:
            return None
        try:
            if self._held(files[0].parent):
                return None
        except FileNotFoundError:  # a fold under way
            return None
        history = self._history_files(self.history_dir(tf, symbol), True)
        lo = _epoch_us(start) if start is not None else None
        hi = _epoch_us(end) if end is not None else None
        found = read_as_of(files[0], history, symbol, lo, hi, as_of)
        if found is None:
            return None
        # batch by batch, stacked: polars' import of a table of several chunks allocated
        # (~10 ms of CPU in a fresh process, one run in three), its import of one batch not
        batches = found.to_batches()
        if len(batches) <= 1:
            return _frame(found)
        out = _frame(batches[0])
        for batch in batches[1:]:
            out.vstack(_frame(batch), in_place=True)
        return out

    def _read_bulk(
        self, tf: str, wanted: list[str], start: datetime | None, end: datetime | None
    ) -> pl.DataFrame | None:
        """Return the hot rows of many symbols: one gather per file, one filter per file's
        deltas, one sort (slicing and joining per symbol costs more than the rows)."""
        by_bucket: dict[int, list[str]] = {}
        for symbol in wanted:
            by_bucket.setdefault(self._bucket_of(symbol), []).append(symbol)
        lo = _epoch_us(start) if start is not None else None
        hi = _epoch_us(end) if end is not None else None
        frames = []
        gathers: dict[int, tuple[pl.DataFrame, list[np.ndarray]]] = {}  # per delta file
        for names in by_bucket.values():
            names_set = set(names)
            for path in self._files(tf, names[0], start, end):
                found = self._open(path, names, whole=True)
                if found is None:
                    continue
                view = found if isinstance(found, PartitionView) else None
                base = found if view is None else view.base
                if isinstance(base, _Indexed):
                    rows = base.positions(names, lo, hi)
                    if rows.size:
                        frames.append(base.frame[rows])
                for delta in view.deltas if view is not None else ():
                    assert isinstance(delta, _Indexed) and delta.source is not None
                    source, offset = delta.source
                    first, last = delta.span_us()
                    if (
                        (lo is None or lo <= first)
                        and (hi is None or last < hi)
                        and names_set.issuperset(delta.index)
                    ):  # the common case (the latest rows of every symbol): no search
                        rows = np.arange(offset, offset + delta.frame.height)
                    else:
                        rows = delta.positions(names, lo, hi) + offset
                    gathers.setdefault(id(source), (source, []))[1].append(rows)
        for source, picks in gathers.values():
            frames.append(source[np.concatenate(picks)])
        if not frames:
            return None
        return pl.concat(frames).sort("symbol", "ts")

    def _hot_rows(
        self,
        path: Path,
        symbol: str,
        wanted: list[str],
        opened: dict[Path, _Indexed | PartitionView | None],
    ) -> list[pl.DataFrame]:
        if path not in opened:
            mine = [s for s in wanted if self.bucket(s) == self.bucket(symbol)]
            opened[path] = self._open(path, mine)
        found = opened[path]
        return [] if found is None else found.pieces_of(symbol)

    def _open(
        self, path: Path, wanted: list[str], *, whole: bool = False
    ) -> _Indexed | PartitionView | None:
        """Return a hot file, or only the rows of `wanted` (symbols of its bucket) in it.

        A partition with deltas, a file already decoded whole in the cache, or a `whole`
        read (many symbols) goes through the partition cache. Otherwise only the row
        groups holding `wanted` are decoded (files are cut into groups of whole symbols,
        found by the footer's symbol statistics), and remembered apart: a fresh process
        reading one symbol decodes a fraction of its bucket file.
        """
        try:
            if (whole and self.cache.max_bytes > 0) or self.has_deltas(path.parent):
                return self._partition(path.parent)
            cached = self.cache.peek(path)
            if cached is not None:
                return cached
            decode = partial(self._read_symbols, wanted=wanted)
            return self.cache.get(path, decode, part=",".join(wanted))
        except (FileNotFoundError, StorageError):
            if path.exists():
                raise
            return None  # removed since listed (archived or expired)

    def _read_symbols(self, handle: IO[bytes], wanted: list[str]) -> _Indexed:
        """Decode the rows of `wanted` from a file sorted by symbol (their row groups; an
        Arrow IPC file: slices of its mapping, found by its symbol index)."""
        if handle.name.endswith(ARROW_FILE):
            base, start = IpcBase(handle), 0
            found, runs = [], []
            for symbol, n in base.runs:
                if symbol in wanted:
                    found.append(_frame(base.rows(start, n)))
                    runs.append((symbol, n))
                start += n
            if not found:
                return _Indexed(_frame(base.rows(0, 0)), [])
            return _Indexed(found[0] if len(found) == 1 else pl.concat(found), runs)
        sym = pl.col("symbol")
        cond = sym == wanted[0] if len(wanted) == 1 else sym.is_in(wanted)
        try:
            frame = pl.scan_parquet(handle).filter(cond).collect()
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise StorageError("cannot read partition file", path=str(handle.name)) from exc
        if len(wanted) == 1:  # one symbol: its index needs no scan
            return _Indexed(frame, [(wanted[0], frame.height)] if frame.height else [])
        return _Indexed(frame)

    def _cold_frames(
        self, tf: str, symbol: str, start: datetime | None, end: datetime | None
    ) -> list[pl.DataFrame]:
        """Return the symbol's cold rows with `start <= ts < end`, one frame a file, by ts.

        The cold index says which files hold the symbol and over which span, so files
        without it (or outside the range) are never opened; opened ones are cached.
        """
        if self.cold_index is None:
            return []
        lo = _epoch_us(start) if start is not None else None
        hi = _epoch_us(end) if end is not None else None
        frames = []
        for entry in self.cold_index.bucket(tf, self.bucket(symbol)).values():
            span = entry.symbols.get(symbol)
            if (
                span is None
                or (lo is not None and span[2] < lo)
                or (hi is not None and span[1] >= hi)
            ):
                continue
            rows = _ts_slice(self._cold_file(entry).rows_of(symbol), start, end)
            if rows.height:
                frames.append(rows)
        return frames

    def _cold_name(self, rel: str) -> str:
        assert self.cold is not None
        return f"cold:{self.cold.url}/{rel}"

    def _cold_file(self, entry: ColdEntry) -> _Indexed:
        def load() -> _Indexed:
            assert self.cold is not None
            frame = self.cold.read(entry.rel)
            if frame is None:
                raise StorageError(
                    "a cold file in the cold index is missing from the archive"
                    " (rebuild the index: ParquetLake.cold_index.rebuild())",
                    file=entry.rel,
                )
            return _Indexed(frame)

        return self.cache.lookup(self._cold_name(entry.rel), entry.identity, load)

    def _history(
        self, tf: str, symbols: Sequence[str], start: datetime | None, end: datetime | None
    ) -> pl.DataFrame:
        dirs = dict.fromkeys(self.history_dir(tf, s) for s in symbols)
        files = [path for directory in dirs for path in self._history_files(directory, True)]
        lo = _epoch_us(start) if start is not None else None
        hi = _epoch_us(end) if end is not None else None
        frames: list[pl.DataFrame] = []
        rest: list[Path] = []
        for path in files:  # Arrow IPC files with a symbol index: sliced, no scan
            sliced = history_slices(path, symbols, lo, hi) if path.suffix == ".arrow" else None
            if sliced is None:
                rest.append(path)
            else:
                frames.extend(_frame(rows) for rows in sliced)
        if rest:  # Parquet, and Arrow IPC files of earlier versions (no index)
            cond = pl.col("symbol").is_in(list(symbols))
            if start is not None:
                cond = cond & (pl.col("ts") >= start)
            if end is not None:
                cond = cond & (pl.col("ts") < end)
            # compaction and retention replace or remove history files: one handle each
            found = read_parquet_files(rest, lambda lf: lf.filter(cond), what="history files")
            if found is not None:
                frames.append(found)
        if not frames:
            return pl.DataFrame(schema=HISTORY_POLARS_SCHEMA)
        return frames[0] if len(frames) == 1 else pl.concat(frames)
