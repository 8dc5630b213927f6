"""As-of reads of one symbol from Arrow IPC files, by their symbol indexes.

A fresh process (an API or worker process) asking for one symbol as of an instant reads
the symbol's slice of its partition's base file and of each history file beside it, both
found by the symbol index in the file's schema metadata (`files.IpcBase`), and picks the
versions valid at the instant on the timestamps' buffers (`base.pick_as_of_arrow`): no
polars scan, filter or gather, whose first use in a process costs milliseconds. History
files are written sorted by symbol and ts with their symbol index (`ParquetLake.
_write_history_file`); Parquet history and Arrow IPC history of earlier versions (no
index) are read the general way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from quantivista.storage.base import arrow_micros, pick_as_of_arrow
from quantivista.storage.lake.files import IpcBase

__all__ = ["history_slices", "read_as_of", "symbol_window"]


def symbol_window(
    base: IpcBase, symbols: Collection[str], lo: int | None, hi: int | None
) -> list[pa.Table] | None:
    """Return the rows of `symbols` with `lo <= ts < hi` (epoch microseconds) of an
    indexed Arrow IPC file, one zero-copy slice a symbol with rows there, in file order;
    None if a symbol's rows are not in ts order."""
    out, start = [], 0
    for symbol, n in base.runs:
        if n and symbol in symbols:
            rows = base.rows(start, n)
            ts = arrow_micros(rows.column("ts"))
            if ts.size > 1 and bool((ts[1:] < ts[:-1]).any()):
                return None
            a = int(np.searchsorted(ts, lo)) if lo is not None else 0
            b = int(np.searchsorted(ts, hi)) if hi is not None else n
            if b > a:
                out.append(_table(rows.slice(a, b - a)))
        start += n
    return out


def history_slices(
    path: Path, symbols: Collection[str], lo: int | None, hi: int | None
) -> list[pa.Table] | None:
    """Return the rows of `symbols` with `lo <= ts < hi` of an Arrow IPC history file (see
    `symbol_window`); None if it has no symbol index (or its rows are out of order): read
    it whole. A file removed since it was listed (compaction, retention) has no rows."""
    try:
        with open(path, "rb") as handle:  # one handle: the version it opened is read
            found = IpcBase.indexed(handle)
    except FileNotFoundError:
        return []
    return None if found is None else symbol_window(found, symbols, lo, hi)


def read_as_of(
    base_path: Path,
    history: Sequence[Path],
    symbol: str,
    lo: int | None,
    hi: int | None,
    as_of: datetime,
) -> pa.Table | None:
    """Return `symbol`'s bars with `lo <= ts < hi` as of `as_of`, from its partition's Arrow
    IPC base file (no deltas beside it) and the partition's history files; None where
    this path does not apply (a history file without a symbol index, a base removed
    meanwhile, see also `pick_as_of_arrow`): read the general way then.

    The base is read before the history, as the general read does: a writer writes the
    history of a change before it replaces the base, so no version is missed.
    """
    try:
        with open(base_path, "rb") as handle:
            base = IpcBase(handle)
    except FileNotFoundError:
        return None
    current = symbol_window(base, (symbol,), lo, hi)
    if current is None or len(current) > 1:
        return None
    old: list[pa.Table] = []
    for path in history:
        found = history_slices(path, (symbol,), lo, hi)
        if found is None:
            return None
        old.extend(found)
    rows = current[0] if current else _table(base.rows(0, 0))
    return pick_as_of_arrow(rows, old, as_of)


def _table(rows: pa.RecordBatch | pa.Table) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
