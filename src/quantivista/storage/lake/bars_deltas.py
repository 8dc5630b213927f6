"""The lake's delta side (`BarDeltas`, see `deltas`): writing an append's delta file,
decoding and listing live deltas, a partition's view (base and deltas), folds (under the
lock, or built ahead and swapped in), merges of small deltas, and the background `tidy`."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from uuid import uuid4

import numpy as np
import polars as pl

from quantivista.errors import StorageError
from quantivista.ops.foreground import FOREGROUND
from quantivista.storage.base import UpsertStats
from quantivista.storage.lake.appends import Split
from quantivista.storage.lake.bars_core import BarFiles
from quantivista.storage.lake.bars_indexed import (
    _Appended,
    _delta_parts,
    _DeltaFile,
    _Fold,
    _frame,
    _Indexed,
    _merged_rows,
    _runs_index,
)
from quantivista.storage.lake.deltas import (
    DELTA_DIR,
    PARTS_KEY,
    REPLACES_KEY,
    ROWS_KEY,
    THROUGH_KEY,
    PartitionView,
    delta_name,
    delta_names,
    merged_name,
)
from quantivista.storage.lake.encoding import _ranges
from quantivista.storage.lake.files import (
    Identity,
    atomic_write_ipc,
    file_identity,
    footer_metadata,
    fsync_path,
    read_ipc_handle,
    read_parquet_handle,
)

_VIEW_ATTEMPTS = 16  # reads of a partition that a fold or delete changed meanwhile
_FOLD_ROWS = 100_000  # a timeframe's deltas are merged into one below this, folded above
_MERGED_DELTAS = 4  # merged deltas a timeframe keeps before merging them together


class BarDeltas(BarFiles):
    """Appends as delta files beside the partitions' base files, and their upkeep."""

    def _live_deltas(self, tf: str) -> list[tuple[str, _DeltaFile]]:
        """Return a timeframe's delta files (decoded, by partition), oldest first; one that a
        fold removed since the listing is in every base it touches already."""
        folder = self.bars_root / f"timeframe={tf}" / DELTA_DIR
        for _ in range(_VIEW_ATTEMPTS):
            try:
                return self._live(folder)
            except FileNotFoundError:  # folded or merged meanwhile: list again
                continue
        raise StorageError("a timeframe's deltas kept changing while read", folder=str(folder))

    def _write_delta(
        self, tf: str, split: Split, picks: list[int], dirs: list[Path], names_: list[str]
    ) -> UpsertStats:
        """Write the rows of partitions `picks` of `split` as one Arrow IPC delta file of
        the timeframe (see `deltas`); `names_` are the partitions' `_rel`s. The caller
        holds their locks."""
        folder = self.bars_root / f"timeframe={tf}" / DELTA_DIR
        names = delta_names(folder)
        name = delta_name(names[-1] if names else None)
        every = split.part_rows()
        spans = [every[i] for i in picks]
        if len(picks) == len(dirs):
            frame = split.frame
        else:  # some partitions took a merge instead: the others' rows, in file order
            firsts = np.array([a for a, _ in spans], dtype=np.int64)
            frame = split.frame[_ranges(firsts, firsts + np.array([n for _, n in spans]))]
        rels = [names_[i] for i in picks]
        index = [[rel, n] for rel, (_, n) in zip(rels, spans, strict=True)]
        atomic_write_ipc(frame, folder / name, self.settings, {ROWS_KEY: json.dumps(index)})
        parts: dict[str, tuple[int, int, int]] = {}
        start = 0
        bounds, all_lasts = split.bounds.tolist(), split.lasts.tolist()
        for i, rel, (_, n) in zip(picks, rels, spans, strict=True):
            parts[rel] = (i, start, n)
            marks = self._marks.get(dirs[i])
            if marks is not None:
                lo, hi = bounds[i], bounds[i + 1]
                marks.advance(name, split.symbols[lo:hi], all_lasts[lo:hi])
            start += n
        decoded = _Appended(frame, split, parts)
        with self._deltas_lock:
            self._forget_deltas(folder, names)
            self._deltas[str(folder / name)] = decoded
        if len(names) + 1 >= self.settings.delta_files:
            self._folder.submit(folder.parent)
        return UpsertStats(inserted=frame.height, partitions_written=len(picks))

    def _delta(self, path: Path | str) -> _DeltaFile:
        """Return a delta file's rows per partition (decoded once; it is never rewritten)."""
        key = str(path)
        found = self._deltas.get(key)  # a dict read is atomic; writers hold the lock
        if found is not None:
            return found
        path = Path(path)
        with open(path, "rb") as handle:
            if path.suffix == ".arrow":
                table = read_ipc_handle(handle, what="delta file")
                raw = table.schema.metadata or {}
                meta = {k.decode(): v.decode() for k, v in raw.items()}
                frame = _frame(table)
            else:  # a delta of a store written before deltas were Arrow IPC
                frame = read_parquet_handle(handle, what="delta file")
                handle.seek(0)
                meta = footer_metadata(handle)
        if ROWS_KEY in meta:
            index = _runs_index(frame, json.loads(meta[ROWS_KEY]))
        else:
            index = json.loads(meta[PARTS_KEY])
        decoded = _delta_parts(frame, index)
        with self._deltas_lock:
            self._forget_deltas(path.parent, delta_names(path.parent))
            self._deltas[key] = decoded
            if REPLACES_KEY in meta:
                self._replaces[key] = tuple(json.loads(meta[REPLACES_KEY]))
        return decoded

    def _took_place(
        self, folder: Path, path: Path | None, decoded: _DeltaFile | None, sources: list[str]
    ) -> None:
        """Remember a merged delta written at `path` (None: none) as `decoded`, in place of
        `sources`, and forget the deltas gone from `folder`."""
        with self._deltas_lock:
            self._forget_deltas(folder, delta_names(folder))
            if path is not None and decoded is not None:
                self._deltas[str(path)] = decoded
                self._replaces[str(path)] = tuple(sources)

    def _forget_deltas(self, folder: Path, live: list[str]) -> None:
        """Drop the decoded delta files of `folder` that are gone (folded); under the lock."""
        keep = {f"{folder}{os.sep}{name}" for name in live}
        prefix = f"{folder}{os.sep}"
        for old in [k for k in self._deltas if k.startswith(prefix) and k not in keep]:
            del self._deltas[old]
            self._replaces.pop(old, None)

    def has_deltas(self, directory: Path) -> bool:
        """Say whether appends to the partition at `directory` wait in delta files (not
        folded into its base file yet): its base file alone is not its rows then."""
        for _ in range(_VIEW_ATTEMPTS):
            try:
                return bool(self._held(directory))
            except FileNotFoundError:  # a merge or fold removed a listed delta: list again
                continue
        raise StorageError("a partition's deltas kept changing while read", path=str(directory))

    def _held(self, directory: Path) -> list[tuple[str, _Indexed]]:
        """Return the parts of `directory`'s partition in the delta files, oldest first."""
        folder, rel = self._where(directory)
        return [(name, found[rel]) for name, found in self._live(folder) if rel in found]

    def _live(self, folder: Path) -> list[tuple[str, _DeltaFile]]:
        """Return a delta folder's live deltas (decoded), oldest first: the sources of a
        merged delta still listed (a merge under way, or a crash) are left out. Raises
        `FileNotFoundError` when a listed delta is removed meanwhile."""
        names = delta_names(folder)
        if not names:
            return []
        prefix = f"{folder}{os.sep}"
        loaded = [(name, self._delta(prefix + name)) for name in names]
        gone = {r for name, _ in loaded for r in self._replaces.get(prefix + name, ())}
        return [(name, found) for name, found in loaded if name not in gone] if gone else loaded

    def _live_names(self, folder: Path, upto: str) -> list[str]:
        """Return the names `_live` lists, decoding only the deltas up to `upto` and merged
        ones: a plain delta after `upto` replaces none (it is listed, not decoded). For the
        checks under the locks: a delta another process wrote meanwhile is decoded (~1 ms)
        by the next reader, not while the writers wait. Raises `FileNotFoundError` when a
        listed delta is removed meanwhile."""
        prefix = f"{folder}{os.sep}"
        names = delta_names(folder)
        gone: set[str] = set()
        for name in names:
            if name <= upto or "~" in name:  # "~": a merged delta (`merged_name`)
                self._delta(prefix + name)
                gone.update(self._replaces.get(prefix + name, ()))
        return [n for n in names if n not in gone] if gone else names

    def _partition(self, directory: Path) -> _Indexed | PartitionView | None:
        """Return a partition (base file and deltas) through the cache; None if it is gone."""
        path = self.base_path(directory)
        for _ in range(_VIEW_ATTEMPTS):
            try:
                held = self._held(directory)
                if not held:
                    return self.cache.get(path, self._read_indexed)
                identity = file_identity(path)
                load = partial(self._load_view, path, held)
                return self.views.lookup(
                    str(directory), (identity, tuple(n for n, _ in held)), load
                )
            except FileNotFoundError:
                # a fold removed a delta (or a delete the base) since the listing: look again
                if not path.exists():
                    return None
        raise StorageError("a partition kept changing while it was read", path=str(directory))

    def _load_view(self, path: Path, held: list[tuple[str, _Indexed]]) -> PartitionView:
        base = self.cache.get(path, self._read_indexed)
        return PartitionView(base, held, base.through)

    def fold_locked(self, directory: Path) -> int:
        """Fold the live deltas of a partition into its base file; return the deltas that
        held it. The caller holds the partition's lock."""
        held = self._held(directory)
        if not held:
            return 0
        path = self.base_path(directory)
        try:
            identity: Identity | None = file_identity(path)
        except FileNotFoundError:  # deleted meanwhile: nothing to fold into
            identity = None
        found = self._partition(directory)
        newest = held[-1][0]
        if isinstance(found, PartitionView) and (found.through or "") < newest:
            frame, index = found.joined()
            indexed = _Indexed(frame, [(s, n) for s, (_, n) in index.items()], newest)
            self._write_base(path, frame, newest, indexed=indexed, fold_of=identity)
            self.cache.put(path, indexed)
        return len(held)

    def fold(self, directory: Path) -> int:
        """Fold a partition's deltas into its base file.

        The new base is built and written (under hidden names) without the lock, and
        renamed into place under it if the partition did not change meanwhile: the same
        base file, and the same deltas up to the newest folded one (appends written since
        stay deltas after it). Else it is dropped and the fold runs under the lock. Writers
        of the partition wait for the renames only."""
        ahead = self._fold_ahead(directory)
        with self.locked(directory):
            if ahead is not None and self._swap_fold(directory, ahead):
                return len(ahead.held)
            return self.fold_locked(directory)

    def _fold_ahead(self, directory: Path) -> _Fold | None:
        """Build and write a fold of the partition without its lock (None: nothing to do,
        or the partition changed while it was read)."""
        path = self.base_path(directory)
        try:
            held = self._held(directory)
            if not held:
                return None
            identity = file_identity(path)
            view = self._load_view(path, held)  # exactly the deltas listed
            # the same identity before and after: the base read was that file (with the
            # cache off or the partition too big for it too: not the cache's entry)
            if file_identity(path) != identity:
                return None  # the base changed while it was read
        except (FileNotFoundError, StorageError):
            return None
        newest = held[-1][0]
        if (view.through or "") >= newest:
            return None  # folded already
        frame, index = view.joined()  # its symbol index too: not scanned again
        indexed = _Indexed(frame, [(s, n) for s, (_, n) in index.items()], newest)
        pending = f".tmp-fold-{uuid4().hex[:12]}-"  # swept by any writer under the lock
        FOREGROUND.wait_idle()
        try:
            files, tail = self._write_base(
                path, frame, newest, indexed=indexed, pending=pending, fold_of=identity
            )
        except StorageError as exc:
            # a writer under the lock swept the temporary while this wrote: it is changing
            # the partition, so this fold is stale anyway (the locked fold runs instead)
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        return _Fold(identity, tuple(n for n, _ in held), files, indexed, tail)

    def _swap_fold(self, directory: Path, ahead: _Fold) -> bool:
        """Put a fold built ahead in place if it still holds; the caller holds the lock."""
        path = self.base_path(directory)
        newest = ahead.held[-1]
        try:
            unchanged = file_identity(path) == ahead.identity
            folder, rel = self._where(directory)
            prefix = f"{folder}{os.sep}"
            held = tuple(  # the deltas up to the newest folded one that hold the partition
                n
                for n in self._live_names(folder, newest)
                if n <= newest and rel in self._delta(prefix + n)
            )
        except FileNotFoundError:
            unchanged = False
        try:
            if not unchanged or held != ahead.held:
                return False
            for hidden, final in ahead.files:  # the tail first: its base names its token
                os.replace(hidden, final)
        except FileNotFoundError:  # swept by a writer meanwhile
            return False
        finally:
            for hidden, _ in ahead.files:
                hidden.unlink(missing_ok=True)
        if self.settings.fsync:
            fsync_path(directory)
        self.cache.put(path, ahead.indexed)
        self.tails.put(path, ahead.tail)
        marks = self._marks.get(directory)
        if marks is not None and marks.identity == ahead.identity:
            # a fold moves rows, no last bar (see `appends`): the marks hold for the new base,
            # so the next append does not rebuild them (a stream's batch after a fold of
            # every partition rebuilt 64)
            marks.identity = file_identity(path)
        return True

    def tidy(self, timeframe_dir: Path) -> int:
        """Keep a timeframe's deltas few (the background job): merge them into one while
        they hold fewer than `_FOLD_ROWS` rows (cost: their rows), else fold them into the
        bases (cost: the partitions'); return the files removed."""
        try:
            live = self._live(timeframe_dir / DELTA_DIR)
        except FileNotFoundError:
            return 0  # a fold under way
        rows = sum(found.frame.height for _, found in live)
        if rows >= _FOLD_ROWS:
            return self.fold_timeframe(timeframe_dir)
        return self.merge_deltas(timeframe_dir)

    def merge_deltas(self, timeframe_dir: Path) -> int:
        """Merge a timeframe's newest live deltas into one delta file; return the files
        removed.

        The deltas written since the newest merged one are merged (if two or more), while
        fewer than `_MERGED_DELTAS` merged ones are live; else all of them: a merge costs
        the rows of the small deltas most times, not every row since the last fold.

        The merged file is built and written (hidden) without any lock, then put in place
        under the locks of every partition it touches, if nothing it was built from changed
        meanwhile: its sources are still the live deltas of their span of names (no fold
        removed one, no delta of that span appeared late) and every partition's base still
        accounts for the same deltas; else it is dropped and the next merge tries again.
        Its name sorts right after its newest source (`merged_name`), so it keeps every
        partition's order: appends written meanwhile sort after it. Writers wait for the
        swap only. Its footer names its sources: a crash before they are removed leaves
        them listed but ignored.
        """
        folder = timeframe_dir / DELTA_DIR
        try:
            live = self._live(folder)
        except FileNotFoundError:
            return 0
        prefix = f"{folder}{os.sep}"
        tiers = [i for i, (n, _) in enumerate(live) if prefix + n in self._replaces]
        # merged ones kept apart stay below the count that starts a merge (`delta_files`),
        # so the deltas a merge leaves never call for another one at once
        cap = min(_MERGED_DELTAS, self.settings.delta_files - 1)
        if tiers and len(tiers) < cap and len(live) - tiers[-1] > 2:
            live = live[tiers[-1] + 1 :]  # the small ones since the newest merged one
        if len(live) < 2:
            return 0
        rels = sorted({r for _, found in live for r in found})
        throughs = {r: self._through(self.base_path(timeframe_dir / r)) or "" for r in rels}
        FOREGROUND.wait_idle()
        whole, rows_index = _merged_rows(live, rels, throughs)
        # decoded here, not under the locks the writers wait for
        decoded = _delta_parts(whole, _runs_index(whole, rows_index)) if whole is not None else None
        merged = [n for n, _ in live]
        name = merged_name(merged[-1])
        pending = folder / f".tmp-merge-{uuid4().hex}.arrow"  # hidden: listings skip it
        if whole is not None:
            meta = {ROWS_KEY: json.dumps(rows_index), REPLACES_KEY: json.dumps(merged)}
            FOREGROUND.wait_idle()
            atomic_write_ipc(whole, pending, self.settings, meta)
        FOREGROUND.wait_idle()  # the swap takes every partition's lock
        try:
            with self._locked_all([timeframe_dir / r for r in rels]):
                if not self._unchanged(folder, merged, throughs, timeframe_dir):
                    return 0
                names = delta_names(folder)
                listed = set(self._live_names(folder, merged[-1]))
                if whole is not None:
                    try:
                        os.replace(pending, folder / name)
                    except FileNotFoundError:  # swept as stale (`sweep`): merge again later
                        return 0
                    if self.settings.fsync:
                        fsync_path(folder)
                # the merged ones and any sources of a live merged delta still listed
                gone = [n for n in names if n in merged or n not in listed]
                for old in gone:
                    (folder / old).unlink(missing_ok=True)
                self._took_place(
                    folder, None if decoded is None else folder / name, decoded, merged
                )
        finally:
            pending.unlink(missing_ok=True)
        return len(gone) - (whole is not None)

    def _unchanged(
        self, folder: Path, merged: list[str], throughs: dict[str, str], timeframe_dir: Path
    ) -> bool:
        """Say whether a merge built from `merged` (and bases accounting for `throughs`)
        still holds: under the locks of its partitions."""
        lo, hi = merged[0], merged[-1]
        try:
            live = self._live_names(folder, hi)
        except FileNotFoundError:
            return False
        if [n for n in live if lo <= n <= hi] != merged:
            return False  # a source folded away, or a delta of the span appeared late
        return all(
            (self._through(self.base_path(timeframe_dir / rel)) or "") == through
            for rel, through in throughs.items()
        )

    def _through(self, base: Path) -> str | None:
        """Return the newest delta a base file accounts for (None: none, or no base)."""
        try:
            tail = self._tail(base)
            return tail.through if tail is not None else self._base_meta(base).get(THROUGH_KEY)
        except FileNotFoundError:
            return None

    def fold_timeframe(self, timeframe_dir: Path, threads: int = 1) -> int:
        """Fold every partition a timeframe's delta files touch (on `threads` threads),
        then remove those files; return how many were removed."""
        folder = timeframe_dir / DELTA_DIR
        names = delta_names(folder)
        rels: set[str] = set()
        for name in names:
            try:
                rels.update(self._delta(folder / name))
            except FileNotFoundError:  # another process's fold removed it
                continue
        dirs = [timeframe_dir / rel for rel in sorted(rels)]
        if threads > 1 and len(dirs) > 1:  # encoding and compression release the GIL
            with ThreadPoolExecutor(min(threads, len(dirs)), thread_name_prefix="qv-fold") as pool:
                list(pool.map(self.fold, dirs))
        else:  # the background job: one partition at a time, between the writers' batches
            for directory in dirs:
                FOREGROUND.wait_idle()
                self.fold(directory)
        for name in names:  # every partition they touch accounts for them now
            (folder / name).unlink(missing_ok=True)
        return len(names)

    def delta_files(self, timeframe: str | None = None) -> list[Path]:
        """Return the delta files (of one timeframe, or all), sorted: every file on disk,
        crash-left ones included (`live_deltas`: what reads see)."""
        pattern = f"timeframe={timeframe}" if timeframe else "timeframe=*"
        folders = sorted(self.bars_root.glob(f"{pattern}/{DELTA_DIR}"))
        return [folder / name for folder in folders for name in delta_names(folder)]

    def live_deltas(self, timeframe: str | None = None) -> list[tuple[Path, pl.DataFrame]]:
        """Return each delta file with the rows reads take from it, as readers list them:
        the sources of a merged delta (a merge under way, or a crash before their removal)
        and the parts a base accounts for (a fold's) are left out, so SQL and `stats`
        count every row once."""
        pattern = f"timeframe={timeframe}" if timeframe else "timeframe=*"
        out = []
        for folder in sorted(self.bars_root.glob(f"{pattern}/{DELTA_DIR}")):
            tf_dir = folder.parent
            through: dict[str, str] = {}
            for name, parts in self._live_deltas(tf_dir.name[len("timeframe=") :]):
                rows = []
                for rel, part in parts.items():
                    if rel not in through:
                        through[rel] = self._through(self.base_path(tf_dir / rel)) or ""
                    if name > through[rel]:
                        rows.append(part.frame)
                if rows:
                    out.append((folder / name, pl.concat(rows) if len(rows) > 1 else rows[0]))
        return out
