"""Delta files: appends that cost what they add, folded into the partition files later.

A write whose every row comes after the last stored bar of its symbol (the nightly session,
a streaming micro-batch, a new symbol of an existing partition) changes no stored bar, so it
needs neither the merge nor a rewrite of partition files: the whole batch lands as one delta
file of its timeframe, whatever the partitions it touches,

    timeframe=1m/bucket=007/month=2024-03/data.parquet         a partition (base) file
    timeframe=1m/_deltas/delta-<time ns>-<uuid>.arrow          one appended batch

an uncompressed Arrow IPC file (Parquet in stores written before: still read), its rows
sorted by partition, symbol and ts, its metadata saying how many rows belong to which
partition (`ROWS_KEY`; a Parquet delta's footer: `PARTS_KEY`). It is written atomically
under the locks of every partition it touches, so writers of one partition still take
turns. A partition is its base file plus its parts of the live deltas; reads join them per
symbol (a delta's rows of a symbol follow every earlier row of it, so the pieces concatenate
in ts order without a sort or a dedupe).
Appends make no history: no version is superseded, so as-of reads stay exact.

Every write of a base file records, in its footer (`THROUGH_KEY`), the newest delta listed
while it held the partition's lock: deltas up to that one are in the base (folded, or
older than the partition) and are ignored for it. A fold writes base + live parts as the
new base; a timeframe's deltas are removed once every partition they touch is folded. A
crash anywhere in between leaves deltas that the bases already account for. Every write that
is not a pure append (a correction, a delete, retention, archival) works on the folded base,
but for a correction of a symbol's latest bar that waits in a small delta: that delta is
rewritten as a merge of deltas is (`bars_replace`).
Folds run on `compact()` (`qv compact`). Once a timeframe holds `storage.delta_files`
deltas, a background thread of the writing process tidies them: while they hold few rows it
merges them into one delta file (cost: their rows, not the partitions'), under the locks of
every partition they touch, named after all of them, its footer naming its sources
(`REPLACES_KEY`: a crash before they are removed leaves them listed but ignored); past that
it folds them. A merge takes the small deltas written since the last merged one until a few
merged ones pile up (`bars._MERGED_DELTAS`). Merges and folds are built and written without
the locks and renamed into place under them if nothing they were built from changed (a
merged delta is named right after its newest source, `merged_name`), so writers wait for
a rename, not for a merge. So
reads find few deltas however long a stream runs, and a stream does not rewrite the month
files every few seconds. Every base write also writes the base's tail
(see `tails`), from which appends are checked and the validation's warm-up read.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol
from uuid import uuid4

import numpy as np
import polars as pl

from quantivista.storage.lake.encoding import _ranges

__all__ = [
    "DELTA_DIR",
    "DELTA_PREFIX",
    "PARTS_KEY",
    "REPLACES_KEY",
    "ROWS_KEY",
    "THROUGH_KEY",
    "Folder",
    "PartitionView",
    "delta_name",
    "delta_names",
    "merged_name",
    "newest_source",
    "stack",
    "stack_frames",
]

DELTA_DIR = "_deltas"
DELTA_PREFIX = "delta-"
PARTS_KEY = "qv.parts"  # a delta's footer: [[partition, [[symbol, rows], ...]], ...]
THROUGH_KEY = "qv.through"  # a base's footer: the newest delta it accounts for
# a folded base's footer: the identity of the base it was folded from (rows moved, no last
# bar changed: a writer's marks of that base hold for it, see `bars_writes._known`)
FOLD_OF_KEY = "qv.fold_of"
REPLACES_KEY = "qv.replaces"  # a merged delta's footer: the deltas it holds the rows of
# an Arrow IPC delta's metadata: [[partition, rows], ...] (its symbol runs: from its rows)
ROWS_KEY = "qv.rows"
_SUFFIXES = (".arrow", ".parquet")  # deltas are Arrow IPC; stores written before: Parquet
_log = logging.getLogger(__name__)


class Rows(Protocol):
    """A decoded, sorted lake file (the lake's `_Indexed`)."""

    frame: pl.DataFrame
    index: dict[str, tuple[int, int]]

    def rows_of(self, symbol: str) -> pl.DataFrame: ...

    def positions(self, symbols: Sequence[str], lo: int | None, hi: int | None) -> np.ndarray: ...

    def last_us(self, symbol: str) -> int | None: ...

    def lasts(self) -> dict[str, int]: ...

    def first_us(self) -> tuple[str, int] | None: ...

    def estimated_size(self) -> int: ...


def delta_name(after: str | None = None) -> str:
    """Return a new delta file name (sorts by creation time; unique across processes),
    sorting after `after` (the newest listed) even if the clock stepped back."""
    now = time.time_ns()
    if after is not None:
        now = max(now, int(after[len(DELTA_PREFIX) :].split("-", 1)[0]) + 1)
    return f"{DELTA_PREFIX}{now:020d}-{uuid4().hex[:12]}.arrow"


def merged_name(newest: str) -> str:
    """Return the name of a merged delta whose newest source is `newest`: right after it
    and before any later delta (those have a later time; "~" sorts after the suffix's
    dot), so a merge that was listed without the locks keeps every partition's order."""
    stem = newest.rsplit(".", 1)[0]
    return f"{stem}~{uuid4().hex[:8]}.arrow"


def newest_source(name: str) -> str:
    """Return the stem of the newest delta whose rows delta `name` may hold: its own, or a
    merged delta's newest source's (`merged_name`). Stems sort as the names do."""
    return name.rsplit(".", 1)[0].split("~", 1)[0]


def delta_names(directory: Path) -> list[str]:
    """Return the delta files of a partition directory, oldest first (none if it is gone)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(DELTA_PREFIX) and n.endswith(_SUFFIXES))


class PartitionView:
    """A partition as readers see it: the base file and its live deltas."""

    __slots__ = ("_joined", "base", "deltas", "stale", "through")

    def __init__(self, base: Rows, deltas: Sequence[tuple[str, Rows]], through: str | None) -> None:
        self.base = base
        self.through = through
        self._joined: dict[str, pl.DataFrame | None] = {}  # a symbol's delta rows, stacked
        self.deltas: list[Rows] = []
        self.stale: list[str] = []  # in the base already (folded): ignored
        for name, delta in deltas:
            if (through is not None and name <= through) or self._folded(delta):
                self.stale.append(name)
            else:
                self.deltas.append(delta)

    def _folded(self, delta: Rows) -> bool:
        # a second guard: a live part always starts after the base's last bar of its symbol
        head = delta.first_us()
        if head is None:
            return True
        last = self.base.last_us(head[0])
        return last is not None and head[1] <= last

    @property
    def frame(self) -> pl.DataFrame:
        """Return every row of the partition, sorted by symbol and ts (`joined`)."""
        return self.joined()[0]

    def joined(self) -> tuple[pl.DataFrame, dict[str, tuple[int, int]]]:
        """Return every row of the partition, sorted by symbol and ts: each symbol's base
        rows and then its delta rows in order (see `pieces_of`), gathered in one go; and
        where each symbol's rows start and how many there are.

        No sort: a sort of a partition held polars' thread pool for ~3 ms (a background
        fold's, once per partition), and the writing thread's polars calls waited in its
        queue; the order is known from the files' symbol indexes."""
        if not self.deltas:
            return self.base.frame, self.base.index
        whole, picked, index = self.stacked(rechunk=True)
        return (whole[picked] if picked is not None else whole), index

    @property
    def height(self) -> int:
        """Return how many rows the base and the live deltas hold (nothing joined)."""
        return self.base.frame.height + sum(d.frame.height for d in self.deltas)

    def stacked(
        self, *, rechunk: bool = False
    ) -> tuple[pl.DataFrame, np.ndarray | None, dict[str, tuple[int, int]]]:
        """Return the base's and the deltas' rows stacked as they are, the row numbers that
        put them in `joined`'s order (None: they are in it), and `joined`'s symbol index: a
        caller that gathers anyway (a correction's merge) composes its gather with this one."""
        if not self.deltas:
            return self.base.frame, None, self.base.index
        rows = [self.base, *self.deltas]
        offsets = np.cumsum([0, *(r.frame.height for r in rows[:-1])]).tolist()
        starts, counts = [], []
        index: dict[str, tuple[int, int]] = {}
        total = 0
        for symbol in sorted(set(self.base.index).union(*(d.index for d in self.deltas))):
            first = total
            for r, offset in zip(rows, offsets, strict=True):
                span = r.index.get(symbol)
                if span is not None:
                    starts.append(offset + span[0])
                    counts.append(span[1])
                    total += span[1]
            index[symbol] = (first, total - first)
        whole = pl.concat([r.frame for r in rows], how="vertical_relaxed", rechunk=rechunk)
        first_rows = np.array(starts, dtype=np.int64)
        picked = _ranges(first_rows, first_rows + np.array(counts, dtype=np.int64))
        return whole, picked, index

    def pieces_of(self, symbol: str) -> list[pl.DataFrame]:
        """Return the symbol's rows in ts order as its base slice and its delta slices
        stacked into one frame (zero-copy chunks; none: no rows here).

        Deltas are written one at a time under the partition lock, each after every row
        before it, and their names sort in that order: the pieces join without a sort.
        """
        pieces = [self.base.rows_of(symbol)] if symbol in self.base.index else []
        if symbol not in self._joined:  # a view lives until the next delta: reads reuse it
            self._joined[symbol] = stack_frames(
                [d.rows_of(symbol) for d in self.deltas if symbol in d.index]
            )
        joined = self._joined[symbol]
        if joined is not None:
            pieces.append(joined)
        return pieces

    def rows_of(self, symbol: str) -> pl.DataFrame:
        """Return the symbol's rows in ts order."""
        pieces = self.pieces_of(symbol)
        if not pieces:
            return self.base.frame.clear()
        return pieces[0] if len(pieces) == 1 else pl.concat(pieces)

    def last_us(self, symbol: str) -> int | None:
        """Return the symbol's last ts (epoch microseconds), None if it has no rows here."""
        found = [r.last_us(symbol) for r in [self.base, *self.deltas]]
        known = [x for x in found if x is not None]
        return max(known) if known else None

    def estimated_size(self) -> int:
        """Return the decoded size of the deltas (the base is cached on its own)."""
        return sum(d.estimated_size() for d in self.deltas) + 1


def stack_frames(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    """Return the frames one after another as chunks of one frame (None: no frames).

    A read slices and joins each piece of a symbol: one piece per delta costs more than
    the rows (a stream's pending deltas each hold one bar of the symbol), and `pl.concat`
    hands a few small frames to the thread pool."""
    return stack(frames[0], frames[1:]) if frames else None


def stack(first: pl.DataFrame, rest: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Return `first` and `rest` one after another as chunks of one frame (`stack_frames`
    of frames known to be there)."""
    if not rest:
        return first
    out = first.clone()
    for frame in rest:
        out.vstack(frame, in_place=True)
    return out


class Folder:
    """A background thread that folds the partitions it is given, one at a time."""

    def __init__(self, fold: Callable[[Path], object]) -> None:  # fold(a timeframe's folder)
        self._fold = fold
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, directory: Path) -> None:
        """Fold `directory` soon (once, however often it is submitted meanwhile)."""
        with self._lock:
            if directory in self._pending:
                return
            self._pending.add(directory)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qv-fold", daemon=True)
                self._thread.start()
        self._queue.put(directory)

    def _run(self) -> None:
        while (directory := self._queue.get()) is not None:
            with self._lock:
                self._pending.discard(directory)
            try:
                self._fold(directory)
            except Exception:  # a background fold is an optimisation: the next one retries
                _log.warning("background fold of %s failed", directory, exc_info=True)

    def wait(self) -> None:
        """Return once every submitted fold is done, and stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
