"""Quality scores per (symbol, timeframe, session date, job): the trend kept with the data.

Every validated batch writes one file into its job's folder; a stream validates a
micro-batch a second, each its own job: unbounded folders, every one listed and opened by
every read. So small files are compacted, like the bars' deltas: once a process has added
`_COMPACT_FILES` of them, a background thread folds every small file into one file of
`_compacted/` (tier 1), and `_FANOUT` files of a tier into one of the next: a row is
rewritten once per tier (a few times however long the stream runs), and a read opens at
most `_FANOUT` files per tier. `compact()` does the same on demand (`qv compact`).

A compacted file's footer names the files it holds (`REPLACES_KEY`); it is renamed into
place before they are removed, and reads leave out any file a compacted file names: a
crash in between counts every row once, and the next compaction removes the leftovers.
Compactions take turns under a lock file; adds need none (each writes a new file).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.schema import STORED_SCORE_SCHEMA, utc_lit
from quantivista.ops.foreground import FOREGROUND
from quantivista.storage.lake.deltas import Folder
from quantivista.storage.lake.files import (
    atomic_write_parquet,
    ensure_dir,
    flocked,
    fsync_path,
    is_temporary,
)
from quantivista.storage.lake.layout import LakeLayout

__all__ = ["ParquetScoreStore", "latest_scores", "score_runs"]

# one file per batch. Big batches (daily bars score one row per bar) store runs of days
# with the same score as one row with a list of dates (`<uuid>.runs.parquet`): a clean
# batch of 500 symbols is 500 rows, not a million, and its file is written 10x faster
_BIG = 100_000
_RUNS = ".runs.parquet"
_RUN_KEY = ("symbol", "timeframe", "job_id", "rows", "rejected", "flagged", "missing", "score")
_COMPACTED = "_compacted"  # compacted files: `part-<tier>-<time ns>-<uuid>.parquet`
# Constants, not settings (like the bars' `_FOLD_ROWS` and `_MERGED_DELTAS`): they trade
# nothing a deployment would pick differently. A read opens at most 64 small files per
# writing process plus 8 per tier, and a row is rewritten once per tier; tests patch them.
_COMPACT_FILES = 64  # small files a process adds before it compacts them (in the background)
_FANOUT = 8  # files of one tier that are compacted into one of the next
REPLACES_KEY = "qv.replaces"  # a compacted file's footer: the files it holds (relative)
_ARROW_SCHEMA = pl.DataFrame(schema=STORED_SCORE_SCHEMA).to_arrow().schema
_SORT_KEY = ("symbol", "timeframe", "date", "job_id", "scored_at")  # a compacted file's order
_READ_GROUP = 8  # small files a compaction reads per polars scan (see `_sorted_rows`)
_CREATE_ATTEMPTS = 16  # a write's retries when a compaction removes its emptied job folder


class ParquetScoreStore:
    """Parquet files, one per validated batch: `quality/scores/job_id=<id>/<uuid>.parquet`.

    A big batch's file is `<uuid>.runs.parquet`: one row per run of days with the same
    score, the days as a list; `read` turns it back into one row per day.
    """

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        layout = LakeLayout(Path(root))
        self.dir = layout.scores
        self._lock_file = layout.locks / "scores.lock"
        self.settings = settings or StorageSettings()
        self._added = 0  # small files added since this process last compacted
        self._compactor = Folder(lambda _: self.compact())

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one batch, validated at `at`; return how many rows were written."""
        if scores.is_empty():
            return 0
        job = str(scores["job_id"][0])
        frame = scores.with_columns(scored_at=utc_lit(at)).select(STORED_SCORE_SCHEMA.names())
        if frame.schema != STORED_SCORE_SCHEMA:  # a validated batch's scores match already
            frame = frame.cast(STORED_SCORE_SCHEMA)
        folder = self.dir / f"job_id={job}"
        if frame.height >= _BIG:
            _write(score_runs(frame), folder / f"{uuid4().hex}{_RUNS}", self.settings.fsync)
        else:
            _write(frame, folder / f"{uuid4().hex}.parquet", self.settings.fsync)
            self._added += 1
            if self._added >= _COMPACT_FILES:
                self._added = 0
                self._compactor.submit(self.dir)
        return frame.height

    def compact(self) -> int:
        """Fold the small score files into compacted ones (see the module); return the
        files removed."""
        ensure_dir(self.dir)
        ensure_dir(self._lock_file.parent)
        with flocked(self._lock_file):
            removed = self._sweep()
            small = [p for p in self._small_files("*") if not p.name.endswith(_RUNS)]
            if small:
                self._fold(small, 1)
                removed += len(small)
            top = max((int(p.name.split("-")[1]) for p in self._compacted()), default=0)
            tier = 1
            while tier <= top:
                files = self._compacted(tier)
                if len(files) >= _FANOUT:
                    self._fold(files, tier + 1)
                    removed += len(files) - 1
                    top = max(top, tier + 1)
                tier += 1
        return removed

    def close(self) -> None:
        """Let a background compaction finish."""
        self._compactor.wait()

    def _fold(self, files: list[Path], tier: int) -> None:
        """Write `files` as one compacted file of `tier`, then remove them (under the lock)."""
        FOREGROUND.wait_idle()
        rows = _sorted_rows(files, tier)
        folder = self.dir / _COMPACTED
        FOREGROUND.wait_idle()
        path = folder / f"part-{tier:02d}-{time.time_ns():020d}-{uuid4().hex[:12]}.parquet"
        names = [p.relative_to(self.dir).as_posix() for p in files]
        atomic_write_parquet(rows, path, self.settings, {REPLACES_KEY: json.dumps(names)})
        for p in files:
            p.unlink(missing_ok=True)
            if p.parent != folder:
                with contextlib.suppress(OSError):  # not empty (another file of the job)
                    p.parent.rmdir()  # an emptied job folder (an add makes it again)

    def _sweep(self) -> int:
        """Remove the files a compacted file holds that a crash left behind."""
        gone = 0
        for name in self._replaced():
            path = self.dir / name
            if path.exists():
                path.unlink()
                gone += 1
        return gone

    def _compacted(self, tier: int | None = None) -> list[Path]:
        pattern = f"part-{tier:02d}-*.parquet" if tier is not None else "part-*.parquet"
        return sorted(p for p in (self.dir / _COMPACTED).glob(pattern) if not is_temporary(p))

    def _small_files(self, job: str) -> list[Path]:
        found = self.dir.glob(f"job_id={job}/*.parquet")
        return sorted(p for p in found if not is_temporary(p))

    def _replaced(self) -> set[str]:
        """Return the files (relative) that compacted files hold: never read again."""
        out: set[str] = set()
        for path in self._compacted():
            try:
                meta = pq.read_metadata(path).metadata or {}
            except FileNotFoundError:  # compacted again meanwhile
                continue
            found = meta.get(REPLACES_KEY.encode())
            if found is not None:
                out.update(json.loads(found))
        return out

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores, optionally of some symbols, one job or one timeframe."""
        compacted = self._compacted()
        files = self._small_files(job_id or "*")
        if compacted:  # crash-left files a compacted one holds are read there
            replaced = self._replaced()
            files = [p for p in files if p.relative_to(self.dir).as_posix() not in replaced]
            compacted = [p for p in compacted if f"{_COMPACTED}/{p.name}" not in replaced]
        files += compacted
        if not files:
            return pl.DataFrame(schema=STORED_SCORE_SCHEMA)
        rows = [p for p in files if not p.name.endswith(_RUNS)]
        runs = [p for p in files if p.name.endswith(_RUNS)]
        parts = [pl.scan_parquet(rows, hive_partitioning=False)] if rows else []
        if runs:
            lf_runs = pl.scan_parquet(runs, hive_partitioning=False).explode("date")
            parts.append(lf_runs.select(STORED_SCORE_SCHEMA.names()))
        lf = pl.concat(parts)
        if job_id and compacted:
            lf = lf.filter(pl.col("job_id") == job_id)
        if symbols:
            lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
        if timeframe:
            lf = lf.filter(pl.col("timeframe") == timeframe)
        return lf.sort("symbol", "timeframe", "date", "scored_at").collect()

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's (re-ingests win)."""
        return latest_scores(self.read(symbols, None, timeframe))


def latest_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Return one score per (symbol, timeframe, date) of `read`'s output: the latest one's."""
    return (
        scores.sort("scored_at", maintain_order=True)
        .group_by("symbol", "timeframe", "date", maintain_order=True)
        .last()
        .sort("symbol", "timeframe", "date")
    )


def score_runs(frame: pl.DataFrame) -> pl.DataFrame:
    """Return `frame` as runs of consecutive rows that differ only in their date.

    One row per run with the dates as a list (exploding it gives `frame` back, in order).
    Columns that hold one value throughout are not compared row by row.
    """
    varying = [
        c for c in _RUN_KEY if frame.select(pl.col(c).ne_missing(pl.col(c).first()).any()).item()
    ]
    new = np.ones(frame.height, dtype=bool)
    if varying:
        changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in varying])
        new[1:] = frame.select(changed.slice(1)).to_series().to_numpy()
    starts = np.flatnonzero(new)
    offsets = pa.array(np.append(starts, frame.height).astype(np.int32))
    dates = pa.ListArray.from_arrays(offsets, frame["date"].to_arrow())
    head = frame.drop("date")[starts]
    return head.with_columns(pl.Series("date", dates, dtype=pl.List(pl.Date)))


def _sorted_rows(files: list[Path], tier: int) -> pa.Table:
    """Return the rows of score files (of `tier` - 1) as one Arrow table sorted by key.

    A background compaction must not hold polars' thread pool for long: the writing
    thread's every step is a polars call, and one queued behind a job on that pool waits
    for the whole job (one parallel scan and sort of a compaction's files made
    micro-batches wait 50-250 ms). So polars reads a few small files per scan (its reader
    costs a quarter of pyarrow's per small file), one compacted file per scan, and pyarrow
    sorts (on this thread, without the GIL)."""
    group = _READ_GROUP if tier == 1 else 1
    scans = [
        pl.scan_parquet(files[i : i + group], hive_partitioning=False).collect()
        for i in range(0, len(files), group)
    ]
    rows = scans[0] if len(scans) == 1 else pl.concat(scans, rechunk=False)
    table = rows.to_arrow().cast(_ARROW_SCHEMA)
    keys = [(c, "ascending", "at_start") for c in _SORT_KEY]  # nulls first, as polars'
    return table.sort_by(keys)


def _write(frame: pl.DataFrame, path: Path, fsync: bool) -> None:
    """Write a score file with polars, committing it by atomic rename (fsynced as the
    lake's files are). Polars' writer: a streaming micro-batch's 500 rows cost a third
    of the lake's dictionary-encoding writer's set-up."""
    tmp = path.parent / f".tmp-{uuid4().hex}.parquet"
    try:
        for attempt in range(_CREATE_ATTEMPTS):
            ensure_dir(path.parent)
            try:
                frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=False)
                break
            except FileNotFoundError:  # a compaction removed the emptied job folder meanwhile
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError("cannot write quality scores", path=str(path), error=str(exc)) from exc
