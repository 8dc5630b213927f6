"""The lake's write path (`BarWrites`): `upsert` splits a batch into partitions and merges
each into its base file (`bars_merge`); a small batch appends as one delta file where the
partitions' last bars (`_known`, from marks and tails) allow, and `prepare` gives new
partitions an empty base."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from quantivista.errors import StorageError
from quantivista.model.schema import (
    BAR_COLUMNS,
    BAR_POLARS_SCHEMA,
)
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import (
    UpsertStats,
    latest_per_key,
)
from quantivista.storage.lake.appends import Marks, Split, month_text
from quantivista.storage.lake.bars_core import (
    ARROW_FILE,
    _PartKey,
    _Plan,
)
from quantivista.storage.lake.bars_indexed import (
    _by_timeframe,
    _DeltaFile,
    _Indexed,
    _lasts_of,
    _part_of,
    _Partition,
)
from quantivista.storage.lake.bars_merge import _merge, _merge_few
from quantivista.storage.lake.bars_replace import BarReplace
from quantivista.storage.lake.deltas import (
    FOLD_OF_KEY,
    THROUGH_KEY,
    newest_source,
    stack,
)
from quantivista.storage.lake.encoding import ArrowBatch, Run
from quantivista.storage.lake.files import file_identity

_DELTA_ROWS = 200_000  # writes up to this many rows may append as one delta file
_FEW = 16  # a write of at most 1/_FEW of a partition's rows merges by binary search (`_merge_few`)
_PLANS = 64  # batches' partition sets remembered (`_plan`); a stream has one or two


class BarWrites(BarReplace):
    """Writes: merges into base files, or appends as delta files."""

    def upsert(self, bars: pl.DataFrame) -> UpsertStats:
        """Insert new bars and replace changed ones, partition by partition."""
        total = UpsertStats()
        if bars.is_empty():
            return total
        if tuple(bars.columns) != BAR_COLUMNS:  # a lazy select costs ~50 us, even a no-op one
            bars = bars.select(BAR_COLUMNS)
        if self.settings.delta_files > 0 and bars.height <= _DELTA_ROWS:
            return self._upsert_small(bars)
        parts = self._partitions(bars)
        threads = min(self.settings.write_threads or os.cpu_count() or 1, len(parts))
        if threads <= 1:
            results = [self._upsert_partition(part) for part in parts]
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="qv-lake") as pool:
                results = list(pool.map(self._upsert_partition, parts))
        for stats in results:
            total += stats
        return total

    def _partitions(self, bars: pl.DataFrame) -> list[_Partition]:
        """Split a batch into partitions, each sorted by symbol and ts.

        Works on runs (a symbol's rows of one month, already in ts order after
        `latest_per_key`): runs are grouped by partition and ordered by symbol, and each
        partition is the concatenation of its runs' zero-copy slices (no gather: batches
        arrive as many chunks, and a gather over them costs more than the encoding). The
        batch is converted to Arrow once; each partition's table is cut from it.
        """
        out: list[_Partition] = []
        for tf_text, tf_part in _by_timeframe(bars):
            tf = Timeframe.parse(tf_text)
            monthly = tf.partition_period == "month"
            keyed = latest_per_key(tf_part)
            arrow = ArrowBatch(keyed)
            month = (pl.col("ts").dt.year() * 100 + pl.col("ts").dt.month()) if monthly else None
            sym = pl.col("symbol")
            change = sym != sym.shift()
            if month is not None:
                change = change | (month != month.shift())
            starts = keyed.select(change.fill_null(True).arg_true()).to_series().to_list()
            ends = [*starts[1:], keyed.height]
            symbols = keyed["symbol"].gather(starts).to_list()
            months = (
                keyed.select(month.gather(starts)).to_series().to_list()
                if month is not None
                else [0] * len(symbols)
            )
            first_us = keyed["ts"].gather(starts).to_physical().to_list()
            last_us = keyed["ts"].gather([e - 1 for e in ends]).to_physical().to_list()
            runs: dict[tuple[int, int], list[Run]] = {}
            first_of: dict[int, int] = dict(zip(starts, first_us, strict=True))
            last_of: dict[int, int] = dict(zip(starts, last_us, strict=True))
            for symbol, ym, lo, hi in zip(symbols, months, starts, ends, strict=True):
                runs.setdefault((self.bucket(symbol), ym), []).append((symbol, lo, hi))
            for (bucket, ym), parts in sorted(runs.items()):
                parts.sort()  # by symbol; a symbol has one run per partition
                month_text = f"{ym // 100:04d}-{ym % 100:02d}" if monthly else None
                firsts = [first_of[lo] for _, lo, _ in parts]
                lasts = [last_of[lo] for _, lo, _ in parts]
                key = (str(tf), bucket, month_text)
                out.append(_Partition(key, keyed, parts, arrow, firsts, lasts))
        return out

    def _upsert_partition(self, part: _Partition) -> UpsertStats:
        directory = self._dir(*part.key)
        with self.locked(directory):
            return self._upsert_locked(part, directory)

    def _upsert_locked(self, part: _Partition, directory: Path) -> UpsertStats:
        """Merge `part` into its partition (the caller holds its lock)."""
        # not joined into one chunk (a copy of every column): the cache takes chunked frames
        slices = part.slices  # a partition of a write holds rows
        new = stack(slices[0], slices[1:])
        path = self.base_path(directory)
        runs = [(symbol, hi - lo) for symbol, lo, hi in part.runs]
        self._sweep_temporaries(directory)
        if not path.exists():  # deltas never hold live rows of a partition without a base
            path = self._new_base(directory)
            stats = UpsertStats(inserted=new.height)
            through = self._newest_delta(directory)
            indexed = _Indexed(new, runs, through)
            rows = new if path.name == ARROW_FILE else part.arrow.partition(part.runs)
            self._write_base(path, rows, through, new, indexed)
            self.cache.put(path, indexed)
        else:
            self._sweep_temporaries(self._history_of(directory))
            # under the lock the cached copy, if its file identity matches, is current
            existing = self._partition(directory)
            merged_runs: list[tuple[str, int]] | None = None
            if existing is not None and new.height * _FEW <= existing.height:  # a correction
                # one gather of the stacked base and delta rows, not a join and then a gather
                stacked, order, index = existing.stacked()
                merged, stats, superseded, merged_runs = _merge_few(
                    stacked, index, new, runs, order
                )
            else:
                old = existing.joined()[0] if existing is not None else new.clear()
                merged, stats, superseded = _merge(old, new)
            if merged is None:
                return stats
            # history first: a crash between the two renames leaves a harmless copy
            self._write_history(directory, superseded)
            through = self._newest_delta(directory)
            indexed = _Indexed(merged, merged_runs, through=through)
            self._write_base(path, merged, through, indexed=indexed)
            self.cache.put(path, indexed)  # the next read is warm
        stats.partitions_written = 1
        return stats

    def prepare(self, symbols: Sequence[str], timeframe: Timeframe, at: datetime) -> int:
        """Give the partitions of `symbols` (of `at`'s month, intraday) that have no base
        file an empty one; return how many were written.

        A partition's first write is its base file, the dearest write there is; with an
        empty base, the first bars append as a delta like every later small write. A live
        stream calls this when a symbol's first trade arrives, long before its first bar.
        """
        tf = str(timeframe)
        month = f"{at:%Y-%m}" if timeframe.partition_period == "month" else None
        written = 0
        for bucket in sorted({self.bucket(s) for s in symbols}):
            directory = self._dir(tf, bucket, month)
            if self.base_path(directory).exists():
                continue
            with self.locked(directory):
                if self.base_path(directory).exists():  # another writer was first
                    continue
                path = self._new_base(directory)
                empty = pl.DataFrame(schema=BAR_POLARS_SCHEMA)
                through = self._newest_delta(directory)
                self._write_base(path, empty, through)
                self.cache.put(path, _Indexed(empty, [], through))
                written += 1
        return written

    def _upsert_small(self, bars: pl.DataFrame) -> UpsertStats:
        """Write a small batch: its appends as one delta file per timeframe, the rest merged.

        Holds the locks of every partition of a timeframe at once (in stripe order, as
        `frozen` does, so writers never deadlock). The batch is split once (`Split`), and
        whether a partition's rows append is read from the watermarks this process keeps
        (`_known`), not from the partition's files.
        """
        total = UpsertStats()
        for tf, frame in _by_timeframe(bars):
            monthly = Timeframe.parse(tf).partition_period == "month"
            split = Split.of(latest_per_key(frame), monthly, self._buckets_of)
            dirs, stripes, rels = self._plan(tf, split.keys)
            with self._locks.held(stripes):
                # each live delta's newest source once, not once per partition
                live = [(newest_source(n), n, f) for n, f in self._live_deltas(tf)]
                known = self._known_all(dirs, rels, live)
                appends = split.appends(known)
                if not appends.all():  # corrections of latest bars: in their deltas?
                    taken = self._replace_latest(tf, split, known, dirs, live, set(stripes))
                    if taken is not None:
                        stats, rest = taken
                        total += stats
                        if not rest.any():
                            continue  # the batch was those corrections
                        left = split.frame.filter(pl.Series(rest))
                        split = Split.of(left, monthly, self._buckets_of)
                        dirs, _, rels = self._plan(tf, split.keys)  # a subset of the locked
                        live = [(newest_source(n), n, f) for n, f in self._live_deltas(tf)]
                        appends = split.appends(self._known_all(dirs, rels, live))
                arrow: ArrowBatch | None = None
                for i in np.flatnonzero(~appends).tolist():  # corrections, new partitions
                    arrow = arrow or ArrowBatch(split.frame)
                    total += self._upsert_locked(_part_of(split, i, tf, arrow), dirs[i])
                if appends.any():
                    picks = np.flatnonzero(appends).tolist()
                    total += self._write_delta(tf, split, picks, dirs, rels)
        return total

    def _folded(self, base: Path, marks: Marks) -> bool:
        """Say whether `base` is a fold of the base `marks` were built on, of deltas they
        account for (by another process: `qv compact`, a background fold of another writer): a fold
        moves rows and changes no last bar, so they hold for it. Reads its footer only."""
        try:
            meta = self._base_meta(base)
        except (OSError, StorageError):
            return False
        of, through = meta.get(FOLD_OF_KEY), meta.get(THROUGH_KEY)
        return (
            of is not None
            and through is not None
            and json.loads(of) == list(marks.identity)
            and newest_source(through) <= newest_source(marks.seen)
        )

    def _plan(self, tf: str, keys: list[_PartKey]) -> _Plan:
        """Return the directories, lock stripes and names (`_rel`) of partitions `keys`."""
        key = (tf, tuple(keys))
        found = self._plans.get(key)
        if found is None:
            dirs = [
                self._dir(tf, bucket, month_text(month) if month is not None else None)
                for bucket, month in keys
            ]
            found = (dirs, [self._stripe(d) for d in dirs], [self._rel(d) for d in dirs])
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            self._plans[key] = found
        return found

    def _known_all(
        self, dirs: list[Path], rels: list[str], live: list[tuple[str, str, _DeltaFile]]
    ) -> list[dict[str, int] | None]:
        """Return `_known` of each partition: its marks as they are when its base file is
        the one they were built on and no live delta is newer than they (a stream's
        partitions between merges: one stat each), else `_known`'s answer."""
        out: list[dict[str, int] | None] = []
        newest = live[-1][0] if live else ""
        bases, all_marks = self._bases, self._marks
        for directory, rel in zip(dirs, rels, strict=True):
            marks, base = all_marks.get(directory), bases.get(directory)
            if marks is not None and base is not None and newest <= newest_source(marks.seen):
                try:
                    if file_identity(base) == marks.identity:
                        out.append(marks.lasts)
                        continue
                except FileNotFoundError:
                    pass
            out.append(self._known(directory, rel, live))
        return out

    def _known(
        self, directory: Path, rel: str, live: list[tuple[str, str, _DeltaFile]]
    ) -> dict[str, int] | None:
        """Return the last ts (epoch microseconds) of each symbol of a partition (None: no
        base file: its first rows make one), from the marks this process keeps while the
        base file is the same, plus the `live` deltas since (see `appends`): (newest
        source, name, partitions). `rel` is the partition's `_rel`. The caller holds the
        partition's lock."""
        base = self._bases.get(directory) or self.base_path(directory)
        try:
            identity = file_identity(base)
        except FileNotFoundError:  # gone (deleted), or made again in the other format
            base = self.base_path(directory)
            try:
                identity = file_identity(base)
            except FileNotFoundError:
                self._bases.pop(directory, None)
                return None
        self._bases[directory] = base
        marks = self._marks.get(directory)
        if marks is not None and marks.identity != identity and self._folded(base, marks):
            marks.identity = identity  # folded by another process: the same last bars
        if marks is None or marks.identity != identity:
            tail = self._tail(base)
            if tail is not None:
                marks = Marks(identity, tail.through or "", dict(tail.rows.lasts()))
                known = newest_source(marks.seen)
                for newest, name, found in live:
                    if newest > known and rel in found:
                        marks.apply(name, found[rel].lasts())
            else:  # no trusted tail (a store written before tails): the partition itself
                existing = self._partition(directory)
                if existing is None:
                    return None
                held = [n for _, n, found in live if rel in found]
                seen = max(held[-1] if held else "", existing.through or "")
                marks = Marks(identity, seen, _lasts_of(existing))
            self._marks[directory] = marks
            return marks.lasts
        # `apply` moves `seen`: the deltas newer than it when we came. A merge of deltas up
        # to it (named after its newest source) holds nothing newer: its last bars are not
        # computed (the write after each merge did it for every partition, ~6 ms)
        seen = newest_source(marks.seen)
        for newest, name, found in reversed(live):  # appended by another process since
            if newest <= seen:
                break
            if rel in found:
                marks.apply(name, found[rel].lasts())
        return marks.lasts
