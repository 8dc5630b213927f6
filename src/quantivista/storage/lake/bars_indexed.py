"""The lake's decoded partitions (`_Indexed`, a delta's `_Appended` parts), a write's
share of a partition (`_Partition`), a fold built ahead (`_Fold`), and the small helpers
of `bars.ParquetLake` that build and cut them."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from quantivista.config import StorageSettings
from quantivista.storage.lake.appends import Split, month_text
from quantivista.storage.lake.deltas import PartitionView
from quantivista.storage.lake.encoding import ArrowBatch, Run
from quantivista.storage.lake.tails import (
    TAIL_ROWS,
    Tail,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Key = tuple[str, int, str | None]  # timeframe, bucket, month (intraday)


class _Untrusted(Exception):
    """A base file's tail is missing or belongs to another write of the base."""


class _DeltaFile(Mapping[str, "_Indexed"]):
    """A decoded delta file: its rows (`frame`) and each partition's share of them
    (`_Indexed` slices that remember the file, see `_Indexed.source`). What the background
    merges and folds and the history reads ask of a whole file (`spans`, `symbols`) needs
    no part built: building all of them held the GIL ~25 us a part (a merge beside a stream
    built 64 per delta file, and the writer waited)."""

    __slots__ = ("frame",)

    frame: pl.DataFrame

    @abstractmethod
    def spans(self) -> list[tuple[str, int, int]]:
        """Return each partition's rows in the file: (partition, first row, rows)."""

    @abstractmethod
    def symbols(self) -> set[str]:
        """Return every symbol the file holds rows of."""


class _Parts(_DeltaFile):
    """A delta file read from disk (or merged): every part built at once."""

    __slots__ = ("_parts", "_symbols")

    def __init__(self, frame: pl.DataFrame, parts: dict[str, _Indexed]) -> None:
        self.frame, self._parts = frame, parts
        self._symbols: set[str] | None = None

    def __getitem__(self, rel: str) -> _Indexed:
        return self._parts[rel]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def spans(self) -> list[tuple[str, int, int]]:
        out = []
        for rel, part in self._parts.items():
            assert part.source is not None  # every part of a delta file knows its offset
            out.append((rel, part.source[1], part.frame.height))
        return out

    def symbols(self) -> set[str]:
        if self._symbols is None:
            self._symbols = set().union(*(p.index for p in self._parts.values()))
        return self._symbols


class _Appended(_DeltaFile):
    """A delta file this process wrote, by partition (`_rel`): each part is built when first
    asked for (a read of the partition; merges and folds of the whole file take `spans`).
    Two threads may build one part at once: equal parts, either kept."""

    __slots__ = ("_at", "_built", "_split", "_symbols")

    def __init__(
        self, frame: pl.DataFrame, split: Split, at: dict[str, tuple[int, int, int]]
    ) -> None:
        self.frame, self._split = frame, split
        self._at = at  # partition -> (its number in `split`, first row in `frame`, rows)
        self._built: dict[str, _Indexed] = {}
        self._symbols: set[str] | None = None

    def __getitem__(self, rel: str) -> _Indexed:
        found = self._built.get(rel)
        if found is None:
            i, start, n = self._at[rel]
            found = self._built[rel] = _appended_part(self.frame, self._split, i, start, n)
        return found

    def __contains__(self, rel: object) -> bool:
        return rel in self._at

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)

    def spans(self) -> list[tuple[str, int, int]]:
        return [(rel, start, n) for rel, (_, start, n) in self._at.items()]

    def symbols(self) -> set[str]:
        if self._symbols is None:
            split, out = self._split, set()
            for i, _, _ in self._at.values():
                out.update(split.symbols[int(split.bounds[i]) : int(split.bounds[i + 1])])
            self._symbols = out
        return self._symbols


def _appended_part(frame: pl.DataFrame, split: Split, i: int, start: int, n: int) -> _Indexed:
    """Return partition `i` of `split`, rows `start:start + n` of the delta's `frame`, with
    what the writer knows of it (no scan when it is checked or read)."""
    lo, hi = int(split.bounds[i]), int(split.bounds[i + 1])
    symbols, offsets = split.symbols[lo:hi], split.offsets[lo:hi]
    part = _Indexed(frame.slice(start, n), ())
    rows = zip((offsets - offsets[0]).tolist(), split.counts[lo:hi].tolist(), strict=True)
    part.index = dict(zip(symbols, rows, strict=True))
    part.source = (frame, start)
    part._first = (symbols[0], int(split.firsts[lo]))
    part._last = dict(zip(symbols, split.lasts[lo:hi].tolist(), strict=True))
    part._span = (int(split.firsts[lo:hi].min()), int(split.lasts[lo:hi].max()))
    return part


class _Indexed:
    """A decoded partition file and where each of its symbols starts (it is sorted)."""

    __slots__ = ("_first", "_last", "_span", "_ts", "frame", "index", "source", "through")

    def __init__(
        self,
        frame: pl.DataFrame,
        runs: Sequence[tuple[str, int]] | None = None,
        through: str | None = None,
    ) -> None:
        self.frame = frame
        self.through = through  # a base file's newest accounted-for delta (see `deltas`)
        self.source: tuple[pl.DataFrame, int] | None = None  # a delta file's frame, offset
        self._span: tuple[int, int] | None = None
        self._last: dict[str, int] | None = None
        self._first: tuple[str, int] | None = None
        self._ts: np.ndarray | None = None
        if runs is not None:  # (symbol, rows) in row order, known to the writer
            self.index = {}
            start = 0
            for name, rows in runs:
                self.index[name] = (start, rows)
                start += rows
            return
        sym = pl.col("symbol")
        starts = frame.select((sym != sym.shift()).fill_null(True).arg_true()).to_series()
        names = frame["symbol"].gather(starts).to_list()
        bounds = [*starts.to_list(), frame.height]
        self.index = {n: (bounds[i], bounds[i + 1] - bounds[i]) for i, n in enumerate(names)}

    def joined(self) -> tuple[pl.DataFrame, dict[str, tuple[int, int]]]:
        """Return the rows and the symbol index (as `PartitionView.joined`)."""
        return self.frame, self.index

    @property
    def height(self) -> int:
        return self.frame.height

    def stacked(self) -> tuple[pl.DataFrame, None, dict[str, tuple[int, int]]]:
        """Return the rows, no order (they are sorted), and the index (as `PartitionView`)."""
        return self.frame, None, self.index

    def rows_of(self, symbol: str) -> pl.DataFrame:
        """Return the symbol's rows (a zero-copy slice; empty when it has none here)."""
        span = self.index.get(symbol)
        return self.frame.slice(*span) if span else self.frame.clear()

    def positions(self, symbols: Sequence[str], lo: int | None, hi: int | None) -> np.ndarray:
        """Return the row numbers of `symbols` with `lo <= ts < hi` (epoch microseconds)."""
        if self._ts is None:
            self._ts = self.frame["ts"].to_physical().to_numpy()
        ts = self._ts
        parts = []
        for symbol in symbols:
            span = self.index.get(symbol)
            if span is None:
                continue
            first, end = span[0], span[0] + span[1]
            a = first + int(np.searchsorted(ts[first:end], lo)) if lo is not None else first
            b = first + int(np.searchsorted(ts[first:end], hi)) if hi is not None else end
            if b > a:
                parts.append(np.arange(a, b))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def span_us(self) -> tuple[int, int]:
        """Return the first and last ts of any row (epoch microseconds; rows exist)."""
        if self._span is None:
            if self._ts is None:
                self._ts = self.frame["ts"].to_physical().to_numpy()
            self._span = (int(self._ts.min()), int(self._ts.max()))
        return self._span

    def pieces_of(self, symbol: str) -> list[pl.DataFrame]:
        """Return the symbol's rows as a list of one slice (none: no rows here)."""
        span = self.index.get(symbol)
        return [self.frame.slice(*span)] if span else []

    def last_us(self, symbol: str) -> int | None:
        """Return the symbol's last ts in epoch microseconds (None if it has no rows here)."""
        return self.lasts().get(symbol)

    def lasts(self) -> dict[str, int]:
        """Return each symbol's last ts in epoch microseconds (the appends' watermarks)."""
        if self._last is None and not self.index:  # an empty base (`prepare`): no call
            self._last = {}
        if self._last is None:
            ends = [start + rows - 1 for start, rows in self.index.values()]
            last = self.frame["ts"].gather(ends).to_physical().to_list()
            self._last = dict(zip(self.index, last, strict=True))
        return self._last

    def first_us(self) -> tuple[str, int] | None:
        """Return the first row's symbol and ts (epoch microseconds); None if empty."""
        if self._first is None and self.frame.height:
            ts = self.frame["ts"][:1].to_physical().item()
            self._first = (str(self.frame["symbol"][0]), int(ts))
        return self._first

    def estimated_size(self) -> int:
        """Return the decoded size in bytes (what the cache budgets)."""
        return int(self.frame.estimated_size())


class _Partition(NamedTuple):
    """One partition's share of a write: its key, rows (one slice per symbol) and runs."""

    key: _Key
    frame: pl.DataFrame  # the batch (of one timeframe) that `runs` index
    runs: list[Run]  # (symbol, first, end) rows of the batch, in file order
    arrow: ArrowBatch  # the batch as Arrow, to cut the partition's table from
    firsts: list[int]  # each run's first ts, epoch microseconds
    lasts: list[int]  # and last

    @property
    def slices(self) -> list[pl.DataFrame]:
        """Return the partition's rows, one zero-copy slice per run."""
        return [self.frame.slice(lo, hi - lo) for _, lo, hi in self.runs]


class _Fold(NamedTuple):
    """A partition's fold built without its lock (see `ParquetLake.fold`)."""

    identity: tuple[int, int, int]  # the base file it was built from
    held: tuple[str, ...]  # the partition's deltas it folds, oldest first
    files: list[tuple[Path, Path]]  # (hidden, final) to rename in order
    indexed: _Indexed
    tail: Tail


def _codec(path: Path, settings: StorageSettings) -> str | None:
    """Return the buffer codec of an Arrow IPC base file: month files take
    `storage.intraday_arrow_compression`; daily ones stay uncompressed."""
    codec = settings.intraday_arrow_compression
    return codec if codec != "none" and path.parent.name.startswith("month=") else None


def _frame(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """Return Arrow data as a polars frame (zero-copy for the types polars writes)."""
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _tail_of(base: _Indexed, through: str | None) -> Tail:
    """Return the tail of a base file (the last `TAIL_ROWS` rows of each symbol), cut from
    its rows (an Arrow IPC base has no tail file: its symbols' rows are slices already)."""
    pieces, runs = [], []
    for symbol, (start, n) in base.index.items():
        k = min(n, TAIL_ROWS)
        pieces.append(base.frame.slice(start + n - k, k))
        runs.append((symbol, k))
    frame = pl.concat(pieces) if pieces else base.frame.clear()
    return Tail(_Indexed(frame, runs), through)


def _runs_index(frame: pl.DataFrame, rows: list[list[Any]]) -> list[list[Any]]:
    """Return an Arrow IPC delta's index (`PARTS_KEY`'s shape: [[partition, [[symbol, rows],
    ...]], ...]) from its partitions' rows (`ROWS_KEY`) and its symbol column."""
    bounds = np.cumsum([0, *(n for _, n in rows)])
    sym = pl.col("symbol")
    new = frame.select((sym != sym.shift()).fill_null(True)).to_series().to_numpy().copy()
    new[bounds[:-1][bounds[:-1] < frame.height]] = True  # a partition starts a run
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, frame.height)).tolist()
    names = frame["symbol"].gather(starts).to_list()
    owner = np.searchsorted(bounds, starts, side="right") - 1
    out: list[list[Any]] = [[rel, []] for rel, _ in rows]
    for part, name, n in zip(owner.tolist(), names, counts, strict=True):
        out[part][1].append([name, n])
    return out


def _merged_rows(
    live: list[tuple[str, _DeltaFile]], rels: list[str], throughs: dict[str, str]
) -> tuple[pl.DataFrame | None, list[list[Any]]]:
    """Return the rows of live deltas that no base accounts for (a part named after its
    base's `throughs`), sorted by partition (in `rels` order), symbol and ts, and each
    partition's rows (`ROWS_KEY`'s shape). One sort of the delta files' frames in polars
    (without the GIL), not a concat and sort per partition: a background merge beside a
    stream holds the GIL for its Python steps, and the writer waits for it. The sort runs
    on this thread, not on polars' pool: the writing thread's polars calls queue behind a
    pool job until it ends (a 50,000-row sort on the pool made 20 small calls of the
    writer take 8-15 ms instead of 1.4-7; single-threaded it costs 1.6x its CPU)."""
    rank = {rel: i for i, rel in enumerate(rels)}
    frames, owners = [], []
    for name, found in live:
        owner = np.full(found.frame.height, -1, dtype=np.int32)  # -1: in a base already
        for rel, start, n in found.spans():
            if name > throughs[rel]:
                owner[start : start + n] = rank[rel]
        frames.append(found.frame)
        owners.append(owner)
    owner = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
    if not (owner >= 0).any():
        return None, []
    whole = (
        pl.concat(frames)
        .with_columns(pl.Series("_part", owner))
        .filter(pl.col("_part") >= 0)
        .sort("_part", "symbol", "ts", maintain_order=True, multithreaded=False)
    )
    counts = np.bincount(owner[owner >= 0], minlength=len(rels)).tolist()
    rows = [[rel, n] for rel, n in zip(rels, counts, strict=True) if n]
    return whole.drop("_part"), rows


def _delta_parts(frame: pl.DataFrame, index: list[list[Any]]) -> _Parts:
    """Return a delta file's rows per partition: slices of `frame`, which they remember
    (with their offset) so that a read of many partitions gathers from the file once."""
    parts, start = {}, 0
    for rel, runs in index:
        rows = sum(n for _, n in runs)
        part = _Indexed(frame.slice(start, rows), [(s, n) for s, n in runs])
        part.source = (frame, start)
        parts[rel] = part
        start += rows
    return _Parts(frame, parts)


def _by_timeframe(bars: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Return a batch's rows per timeframe (one group, without a group-by, when it has one)."""
    tf = bars["timeframe"]
    first = tf[0]
    if first is not None and not tf.null_count() and (tf == first).all():  # Series: no plan
        return [(str(first), bars)]
    tf_col = pl.col("timeframe")
    if bars.select((tf_col == tf_col.first()).all()).item():
        return [(str(bars["timeframe"][0]), bars)]
    return [(str(t), part) for (t,), part in bars.group_by(tf_col, maintain_order=True)]


def _part_of(split: Split, i: int, tf: str, arrow: ArrowBatch) -> _Partition:
    """Return partition `i` of a split as the merge path takes it."""
    lo, hi = int(split.bounds[i]), int(split.bounds[i + 1])
    starts = split.offsets[lo:hi].tolist()
    runs = [
        (symbol, start, start + n)
        for symbol, start, n in zip(
            split.symbols[lo:hi], starts, split.counts[lo:hi].tolist(), strict=True
        )
    ]
    bucket, month = split.keys[i]
    key = (tf, bucket, month_text(month) if month is not None else None)
    firsts, lasts = split.firsts[lo:hi].tolist(), split.lasts[lo:hi].tolist()
    return _Partition(key, split.frame, runs, arrow, firsts, lasts)


def _lasts_of(partition: _Indexed | PartitionView) -> dict[str, int]:
    """Return the last ts of each symbol of a decoded partition (base and deltas)."""
    if isinstance(partition, _Indexed):
        return dict(partition.lasts())
    out: dict[str, int] = {}
    for rows in [partition.base, *partition.deltas]:
        for symbol in rows.index:
            last = rows.last_us(symbol)
            if last is not None and last > out.get(symbol, last - 1):
                out[symbol] = last
    return out


def _join_tiers(cold: list[pl.DataFrame], hot: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Return one symbol's cold and hot frames (each sorted by ts) as frames in ts order.

    A bar in both tiers (an interrupted archival, or a bar ingested again after its month
    was archived) appears once: the hot copy wins.
    """
    if not cold or not hot or cold[-1]["ts"][-1] < hot[0]["ts"][0]:
        return [*cold, *hot]
    both = pl.concat([*cold, *hot])
    return [both.unique(subset=["ts"], keep="last").sort("ts")]


def _prune_empty_dirs(start: Path, stop: Path) -> None:
    """Remove empty partition folders from `start` up to (not including) `stop`."""
    here = start
    while here != stop and here.is_relative_to(stop):
        try:
            here.rmdir()
        except OSError:  # not empty (or already gone): stop climbing
            return
        here = here.parent


def _ts_slice(df: pl.DataFrame, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    """Return the rows with `start <= ts < end` of a file sorted by ts (a zero-copy slice)."""
    if start is None and end is None:
        return df
    # numpy on the physical microseconds: polars' search_sorted builds a frame per call
    ts = df["ts"].to_physical().to_numpy()
    lo = int(np.searchsorted(ts, _epoch_us(start))) if start is not None else 0
    hi = int(np.searchsorted(ts, _epoch_us(end))) if end is not None else df.height
    return df.slice(lo, max(hi - lo, 0))


def _months(start: datetime, end: datetime) -> list[str]:
    """Return the month partitions ("YYYY-MM") from `start`'s to `end`'s, both included."""
    out, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _epoch_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
