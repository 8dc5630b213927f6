"""Arrow tables for the lake's Parquet writer, with repeated strings dictionary-encoded.

A bar partition repeats a few strings on every row: its symbols (one run each, the file is
sorted), one timeframe, mostly one provider and one job. Parquet stores them
dictionary-encoded anyway; handed an Arrow `DictionaryArray` the writer takes the dictionary
and indices as given instead of hashing every row, so they are built here from what is
already known: the symbol runs of a partition, or a column equal on every row. The files
are the same Parquet (strings in dictionary pages); readers see plain strings.

`ArrowBatch` converts a whole write batch to Arrow once (without those string columns) and
cuts each partition's table out of it with zero-copy slices: converting 64 partition frames
one by one cost ten times as much as converting the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["DICT_COLUMNS", "ArrowBatch", "to_arrow"]

# string columns that repeat per row in the lake's files
DICT_COLUMNS = ("symbol", "timeframe", "provider", "job_id")
Run = tuple[str, int, int]  # symbol, first row, end row (exclusive) in a batch
_SLICED_RUNS = 32  # above this many runs, a partition's rows are taken, not sliced


class ArrowBatch:
    """A polars batch as Arrow, from which partition tables are cut without copying."""

    def __init__(self, df: pl.DataFrame) -> None:
        self.columns = df.columns
        self.constants = {
            name: df[name][0]
            for name in DICT_COLUMNS
            if name != "symbol" and name in df.columns and _is_constant(df[name])
        }
        built = {"symbol", *self.constants} if "symbol" in df.columns else set(self.constants)
        self.table = df.drop(built).to_arrow(compat_level=pl.CompatLevel.newest())

    def partition(self, runs: Sequence[Run]) -> pa.Table:
        """Return the rows of `runs` (one per symbol, in file order) as one table."""
        if len(runs) > _SLICED_RUNS:  # many short runs (a delta): one take, not a concat
            bounds = np.array([(lo, hi) for _, lo, hi in runs], dtype=np.int64)
            rows = self.table.take(_ranges(bounds[:, 0], bounds[:, 1]))
        else:
            pieces = [self.table.slice(lo, hi - lo) for _, lo, hi in runs]
            rows = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        n = rows.num_rows
        arrays: list[pa.Array | pa.ChunkedArray] = []
        for name in self.columns:
            if name == "symbol":
                arrays.append(_from_runs([(s, hi - lo) for s, lo, hi in runs]))
            elif name in self.constants:
                arrays.append(_repeated(self.constants[name], n))
            else:
                arrays.append(rows[name])
        return pa.Table.from_arrays(arrays, names=self.columns)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the row numbers of [start, end) ranges, one after another."""
    lengths = ends - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    out: np.ndarray = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return out


def to_arrow(df: pl.DataFrame, runs: Sequence[tuple[str, int]] | None = None) -> pa.Table:
    """Return `df` as an Arrow table, its repeated string columns dictionary-encoded.

    `runs` lists (symbol, rows) in row order when `df` is known to hold each symbol as one
    block (a sorted partition): the symbol column is then built from it without a scan.
    A string column equal on every row (no nulls) becomes a one-entry dictionary; any other
    column is left as it is, for the writer to encode.
    """
    table = df.to_arrow(compat_level=pl.CompatLevel.newest())
    for name in DICT_COLUMNS:
        if name not in df.columns:
            continue
        if name == "symbol" and runs is not None:
            encoded = _from_runs(runs)
        elif _is_constant(df[name]):
            encoded = _repeated(df[name][0], df.height)
        else:
            continue
        i = table.schema.get_field_index(name)
        table = table.set_column(i, pa.field(name, encoded.type), encoded)
    return table


def _is_constant(column: pl.Series) -> bool:
    return (
        column.dtype == pl.String
        and column.len() > 0
        and column.null_count() == 0
        and bool((column == column[0]).all())
    )


def _from_runs(runs: Sequence[tuple[str, int]]) -> pa.DictionaryArray:
    names = [name for name, _ in runs]
    lengths = np.fromiter((n for _, n in runs), dtype=np.int64, count=len(runs))
    indices = np.repeat(np.arange(len(runs), dtype=np.int32), lengths)
    return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(names, pa.string()))


def _repeated(value: str, rows: int) -> pa.DictionaryArray:
    indices = pa.array(np.zeros(rows, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value], pa.string()))
