"""The store contract every backend fulfils (the embedded lake and PostgreSQL).

Knowledge time: every bar carries `ingested_at`, the instant the store learned its current
values. A backend keeps each superseded version (replaced by an upsert or removed by a
delete) with `superseded_at`, so `read(..., as_of=T)` can return exactly what the store
held at T: for each key the version with `ingested_at <= T < superseded_at`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from quantivista.model.schema import BAR_POLARS_SCHEMA, PL_UTC_TS, series_in_blocks
from quantivista.model.timeframe import Timeframe, TimeframeLike

__all__ = [
    "HISTORY_POLARS_SCHEMA",
    "REPORT_SCHEMA",
    "STATS_SCHEMA",
    "BarStore",
    "RetentionPolicy",
    "UpsertStats",
    "apply_retention",
    "arrow_micros",
    "latest_per_key",
    "pick_as_of",
    "pick_as_of_arrow",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SLICE_RUNS = 64  # row runs above which one gather beats stacking slices
# a superseded bar version: the bar as it was, plus when it stopped being current
HISTORY_POLARS_SCHEMA = pl.Schema({**BAR_POLARS_SCHEMA, "superseded_at": PL_UTC_TS})

STATS_SCHEMA = pl.Schema(
    {
        "timeframe": pl.String(),
        "symbol": pl.String(),
        "rows": pl.Int64(),
        "first_ts": PL_UTC_TS,
        "last_ts": PL_UTC_TS,
        "bytes": pl.Int64(),
        "files": pl.UInt32(),
    }
)

# one row per storage tier (hot, history, cold): what `qv storage-report` shows
REPORT_SCHEMA = pl.Schema(
    {
        "tier": pl.String(),
        "files": pl.Int64(),
        "rows": pl.Int64(),
        "bytes": pl.Int64(),
        "raw_bytes": pl.Int64(),
        "compression_ratio": pl.Float64(),
    }
)


@dataclass(slots=True)
class UpsertStats:
    """What an upsert changed."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    partitions_written: int = 0

    def __iadd__(self, other: UpsertStats) -> UpsertStats:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.partitions_written += other.partitions_written
        return self

    @property
    def written(self) -> int:
        """Return the rows that are new or changed."""
        return self.inserted + self.updated


class BarStore(Protocol):
    """Bars keyed by (symbol, timeframe, ts); writes are idempotent upserts."""

    def upsert(self, bars: pl.DataFrame) -> UpsertStats:
        """Insert new bars and replace changed ones; identical bars are left untouched.

        A replaced bar's old version goes to history with `superseded_at` set to the new
        version's `ingested_at`; unchanged bars keep their `ingested_at` and `job_id`.
        """
        ...

    def read(
        self,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: Sequence[str] | None = None,
        as_of: datetime | None = None,
    ) -> pl.DataFrame:
        """Return bars of `symbols` with `start <= ts < end`, sorted by symbol and ts.

        With `as_of`, return the versions the store held at that instant instead.
        """
        ...

    def recent(
        self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime
    ) -> pl.DataFrame:
        """Return what `read(symbols, timeframe, start, end)` returns, answered the fastest
        way a store has for its newest bars (a writer's validation history, see
        `pipeline.recent`); a store with no faster way answers with its `read`."""
        ...

    def delete(
        self,
        timeframe: Timeframe,
        symbols: Sequence[str] | None = None,
        before: datetime | None = None,
        *,
        at: datetime,
    ) -> int:
        """Delete bars (of some symbols or all, those with ts < `before` or all) at time `at`.

        Deleted bars stay visible to as-of reads before `at`. Return the rows deleted.
        """
        ...

    def expire(self, timeframe: Timeframe, before: datetime) -> int:
        """Drop bars with ts < `before`, history included (retention); return current rows."""
        ...

    def symbols(self, timeframe: Timeframe | None = None) -> list[str]:
        """Return the symbols stored (for one timeframe, or any), sorted."""
        ...

    def prepare(self, symbols: Sequence[str], timeframe: Timeframe, at: datetime) -> int:
        """Make ready for the first bars of `symbols` around `at` (a live stream calls it
        when a symbol's first trade arrives, before its first bar closes), so that their
        first write costs what every later small write does; store no bars. Return how
        many pieces of storage were made (0 where a backend needs nothing)."""
        ...

    def stats(self) -> pl.DataFrame:
        """Return one row per (timeframe, symbol) in `STATS_SCHEMA`."""
        ...

    def storage_report(self) -> pl.DataFrame:
        """Return one row per storage tier in `REPORT_SCHEMA` (rows, bytes, compression)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long bars of each timeframe stay in the store, e.g. `{"1m": 730 days}`."""

    keep: Mapping[str, timedelta] = field(default_factory=dict)

    def cutoff(self, timeframe: TimeframeLike, now: datetime) -> datetime | None:
        """Return the oldest ts kept for `timeframe` at `now` (None: keep everything)."""
        span = self.keep.get(str(Timeframe.parse(timeframe)))
        return None if span is None else now - span


def apply_retention(store: BarStore, policy: RetentionPolicy, now: datetime) -> dict[str, int]:
    """Expire bars older than each timeframe's retention; return the rows dropped per timeframe."""
    dropped: dict[str, int] = {}
    for name in policy.keep:
        tf = Timeframe.parse(name)
        cutoff = policy.cutoff(tf, now)
        if cutoff is not None:
            dropped[str(tf)] = store.expire(tf, cutoff)
    return dropped


def pick_as_of(current: pl.DataFrame, history: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Return, per (symbol, ts), the version valid at `as_of` from current rows and history.

    `current` holds one row per key, sorted by symbol and ts (as a store holds it); both
    frames hold full bar columns (history also `superseded_at`). A history row left by a
    writer that crashed after writing history but before replacing the data file is a copy
    of a still-current row; taking the newest `ingested_at` per key makes it harmless.

    The choice is numpy on the microseconds and the result a few zero-copy slices: each
    polars filter, gather, sort or `unique` of a few thousand rows costs more than all of
    it (a thread-pool hand-off per call).
    """
    at = _micros(as_of)
    cing = _us(current["ingested_at"])
    cur_ok = cing <= at
    old_ok = (_us(history["ingested_at"]) <= at) & (_us(history["superseded_at"]) > at)
    if not old_ok.any():  # nothing valid then was superseded since
        return current if cur_ok.all() else _take(current, np.flatnonzero(cur_ok))
    old = _columns(_take(history, np.flatnonzero(old_ok)), current.columns)
    if _one_symbol(current, old):
        return _merge_versions(current, cing, cur_ok, old)
    cur = _take(current, np.flatnonzero(cur_ok))
    return (
        pl.concat([cur, old])
        .sort("symbol", "ts", "ingested_at")
        .unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
    )


def _micros(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _us(stamps: pl.Series) -> np.ndarray:
    """Return timestamps as epoch microseconds (numpy int64)."""
    dtype = stamps.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit != "us":
        stamps = stamps.dt.cast_time_unit("us")
    # through Arrow: a fresh process's first polars `to_physical`/`to_numpy` costs ms
    arrow = stamps.to_arrow()
    if arrow.null_count == 0:
        return arrow_micros(arrow)
    return stamps.to_physical().to_numpy()


def arrow_micros(stamps: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return Arrow timestamps (microseconds, no nulls) as epoch microseconds (numpy int64,
    zero-copy for one chunk).

    Read from the values buffer: pyarrow's own `to_numpy` of a timestamp array imports
    pandas, half a second in a fresh process.
    """
    if isinstance(stamps, pa.ChunkedArray):
        # chunk by chunk: `combine_chunks` allocates from Arrow's memory pool, whose first
        # use in a process cost ~10 ms of CPU in one run of three
        parts = [arrow_micros(chunk) for chunk in stamps.chunks]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    values = stamps.buffers()[1]
    if values is None:  # no rows
        return np.empty(0, dtype=np.int64)
    return np.frombuffer(values, np.int64, len(stamps), stamps.offset * 8)


def _take(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """Return `frame[rows]`; rows in a few ascending runs are stacked zero-copy slices."""
    if rows.size == 0:
        return frame.clear()
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    if cuts.size >= _SLICE_RUNS:
        return frame[rows]
    starts = rows[np.concatenate(([0], cuts))].tolist()
    ends = rows[np.concatenate((cuts - 1, [rows.size - 1]))].tolist()
    out = frame.slice(starts[0], ends[0] - starts[0] + 1)
    if len(starts) > 1:
        out = out.clone()
        for lo, hi in zip(starts[1:], ends[1:], strict=True):
            out.vstack(frame.slice(lo, hi - lo + 1), in_place=True)
    return out


def _columns(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Return `frame` with just the columns `names` (in place when it only has extra ones
    at the end: `select` goes through the query engine, a first use of which costs ms)."""
    if frame.columns[: len(names)] != names:
        return frame.select(names)
    out = frame.clone()  # a shallow copy: columns are shared, not copied
    for name in frame.columns[len(names) :]:
        out.drop_in_place(name)
    return out


def _one_symbol(cur: pl.DataFrame, old: pl.DataFrame) -> bool:
    if cur.is_empty():
        return bool(old["symbol"].n_unique() == 1)
    name = cur["symbol"][0]
    return bool(cur["symbol"][-1] == name and (old["symbol"] == name).all())


def _merge_versions(
    cur: pl.DataFrame, cing: np.ndarray, cur_ok: np.ndarray, old: pl.DataFrame
) -> pl.DataFrame:
    """Merge one symbol's old versions into its current rows (sorted by ts, one a ts).

    `cing` is the current rows' `ingested_at` in microseconds, `cur_ok` which of them are
    valid at the instant. The old versions are few (the keys corrected since then).
    """
    cts = _us(cur["ts"]) if cur.height else np.empty(0, dtype=np.int64)
    rows = _version_rows(cts, cing, cur_ok, _us(old["ts"]), _us(old["ingested_at"]))
    return _take(cur.vstack(old), rows)


def _version_rows(
    cts: np.ndarray, cing: np.ndarray, cur_ok: np.ndarray, ots: np.ndarray, oing: np.ndarray
) -> np.ndarray:
    """Return the rows, in ts order, of one symbol's current rows followed by its old
    versions valid at an instant (numbered after the current ones) that are its version
    at the instant.

    `cts`, `cing`: the current rows' ts and `ingested_at` (microseconds, sorted by ts, one
    a ts), `cur_ok` which of them are valid at the instant; `ots`, `oing`: the old ones'
    (at least one, any order).
    """
    order = np.lexsort((oing, ots))  # by ts, the newest version of a ts last
    newest: np.ndarray = order[np.append(ots[order][1:] != ots[order][:-1], True)]
    if cts.size == 0:
        return newest
    at = np.searchsorted(cts, ots[newest])
    near = np.minimum(at, cts.size - 1)
    # a key in both (a crash's copy): the newer version wins, the current one on a tie
    hit = (cts[near] == ots[newest]) & cur_ok[near]
    old_wins = hit & (oing[newest] > cing[near])
    keep_cur = cur_ok.copy()
    keep_cur[near[old_wins]] = False
    keep_old = newest[~hit | old_wins]
    rows = np.concatenate([np.flatnonzero(keep_cur), cts.size + keep_old])
    stamps = np.concatenate([cts, ots])[rows]
    out: np.ndarray = rows[np.argsort(stamps, kind="stable")]
    return out


def pick_as_of_arrow(
    current: pa.Table, history: Sequence[pa.Table], as_of: datetime
) -> pa.Table | None:
    """Return `pick_as_of` of one symbol's rows in Arrow: `current` sorted by ts (one row a
    ts), `history` its superseded versions (tables with `current`'s columns and
    `superseded_at`, rows in any order). The result has `current`'s columns.

    For a fresh process's as-of read of one symbol: numpy on the timestamps' buffers and a
    few zero-copy slices, no polars operation (the first use of each costs ms). Returns
    None where it would not be cheap or cannot be exact here (a timestamp column with
    nulls, a history table of other column types, or the versions in many runs): then
    use `pick_as_of`.
    """
    stamps = [current["ts"], current["ingested_at"]]
    stamps += [t[c] for t in history for c in ("ts", "ingested_at", "superseded_at")]
    if any(s.null_count for s in stamps):
        return None
    at = _micros(as_of)
    cing = arrow_micros(current["ingested_at"])
    cur_ok = cing <= at
    names = current.column_names
    valid = []
    for table in history:
        ok = (arrow_micros(table["ingested_at"]) <= at) & (
            arrow_micros(table["superseded_at"]) > at
        )
        if ok.any():
            taken = _take_arrow(table.select(names), np.flatnonzero(ok))
            if taken is None:
                return None
            valid.append(taken)
    if not valid:  # nothing valid then was superseded since
        return current if cur_ok.all() else _take_arrow(current, np.flatnonzero(cur_ok))
    try:
        both = pa.concat_tables([current, *valid])
    except pa.ArrowInvalid:  # another type of a column (a file of another writer)
        return None
    old = both.slice(current.num_rows)
    cts = arrow_micros(current["ts"])
    rows = _version_rows(
        cts, cing, cur_ok, arrow_micros(old["ts"]), arrow_micros(old["ingested_at"])
    )
    return _take_arrow(both, rows)


def _take_arrow(table: pa.Table, rows: np.ndarray) -> pa.Table | None:
    """Return `table`'s `rows` as zero-copy slices (None: in `_SLICE_RUNS` runs or more;
    pyarrow cannot gather string views)."""
    if rows.size == 0:
        return table.slice(0, 0)
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    if cuts.size >= _SLICE_RUNS:
        return None
    starts = rows[np.concatenate(([0], cuts))].tolist()
    ends = rows[np.concatenate((cuts - 1, [rows.size - 1]))].tolist()
    pieces = [table.slice(lo, hi - lo + 1) for lo, hi in zip(starts, ends, strict=True)]
    return pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)


def latest_per_key(df: pl.DataFrame) -> pl.DataFrame:
    """Return `df` with each symbol one block sorted by ts, one row per key, the last winning.

    Used by every backend on a batch of one timeframe before it is merged.
    """
    if series_in_blocks(df):
        return df  # the common case: providers deliver series in order, without repeats
    # a stable sort puts repeats of a key in arrival order: the last of each run wins (a
    # filter, a fifth of `unique(keep="last", maintain_order=True)`'s cost; a stream's
    # micro-batch carrying a correction of an earlier bar comes this way)
    df = df.sort("symbol", "ts", maintain_order=True)
    sym, ts = pl.col("symbol"), pl.col("ts")
    repeated = sym.eq_missing(sym.shift(-1)) & ts.eq_missing(ts.shift(-1))
    return df.filter(~repeated | (pl.int_range(pl.len()) == pl.len() - 1))
