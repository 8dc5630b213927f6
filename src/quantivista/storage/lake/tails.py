"""Tails: the last rows of each symbol of a partition, so appends need not decode history.

Every write of a partition's base file first writes its tail beside it,

    timeframe=1d/bucket=007/data.parquet      the base file (footer: qv.tail = <token>)
    timeframe=1d/bucket=007/tail.arrow        its symbols' last `TAIL_ROWS` rows (same token;
                                              Arrow IPC: cheap to write and read whole)

Two questions of every append are answered from the tails and the live deltas (which the
writing process holds decoded) instead of the whole base, which for a 10-year daily bucket
is a hundred times the tail and need not fit in the cache: "does this row come after the
symbol's last stored bar?" (the append check) and "what are the symbol's bars just before
the batch?" (the validation's warm-up, `ParquetLake.recent`).

An Arrow IPC base (`data.arrow`) has no tail file: its tail is sliced from the mapped base.

A tail is trusted only when its token equals the token in its base's footer, read through
one handle of the base: a crash between the tail's rename and the base's (or a base written
by a version without tails) leaves a mismatch, and callers fall back to the base itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.storage.lake.deltas import THROUGH_KEY, Rows
from quantivista.storage.lake.files import footer_metadata, handle_identity, read_ipc

__all__ = ["TAIL_FILE", "TAIL_KEY", "TAIL_ROWS", "Tail", "load_tail", "new_token", "tail_rows"]

TAIL_FILE = "tail.arrow"
TAIL_KEY = "qv.tail"  # a base's and its tail's footer: the write they belong to
# rows per symbol: the validation's warm-up looks back 3 x spike_window bars (60 by default;
# daily bars: 60 calendar days, ~42 sessions); a longer look back reads the base instead
TAIL_ROWS = 96


def new_token() -> str:
    """Return the token that ties a base file to its tail."""
    return uuid4().hex[:16]


def tail_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Return the last `TAIL_ROWS` rows of each symbol of a frame sorted by symbol and ts."""
    return frame.group_by("symbol", maintain_order=True).tail(TAIL_ROWS)


class Tail:
    """A partition's tail, decoded and indexed, and what it can answer."""

    __slots__ = ("horizon", "rows", "through")

    def __init__(self, rows: Rows, through: str | None) -> None:
        self.rows = rows
        self.through = through  # the base's: deltas up to this one are in it
        # the earliest `start` the tail answers for every symbol: a symbol cut to its last
        # TAIL_ROWS rows may have older rows in the base
        self.horizon: int | None = None
        cut = [s for s, (_, n) in rows.index.items() if n >= TAIL_ROWS]
        if cut:
            firsts = rows.frame["ts"].gather([rows.index[s][0] for s in cut]).to_physical()
            self.horizon = int(firsts.max())  # type: ignore[arg-type]

    def covers(self, lo: int) -> bool:
        """Say whether the tail holds every base row with ts >= `lo` (epoch microseconds)."""
        return self.horizon is None or lo >= self.horizon

    def estimated_size(self) -> int:
        """Return the decoded size (what the cache budgets)."""
        return self.rows.estimated_size() + 1


def load_tail(base: Path, index: Callable[[pl.DataFrame], Rows]) -> tuple[object, Tail | None]:
    """Return the base file's identity and its tail (None: missing or not the base's).

    Raises `FileNotFoundError` when the base is gone.
    """
    with open(base, "rb") as handle:
        identity = handle_identity(handle)
        meta = footer_metadata(handle)
    token = meta.get(TAIL_KEY)
    if token is None:
        return identity, None
    try:
        tail_meta, table = read_ipc(base.parent / TAIL_FILE)
    except FileNotFoundError:
        return identity, None
    if tail_meta.get(TAIL_KEY) != token:
        return identity, None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return identity, Tail(index(frame), meta.get(THROUGH_KEY))
