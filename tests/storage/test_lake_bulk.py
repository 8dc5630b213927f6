"""Bulk reads as stored (lake.bulk): the rows ParquetLake.read gives, deltas included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.bulk import stored_schema, stored_tables

D1 = Timeframe.parse("1d")
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(40)]


def _bars(symbols: list[str], first: int, days: int) -> pl.DataFrame:
    ts = [DAY0 + timedelta(days=first + d) for d in range(days)]
    close = np.arange(len(symbols) * days, dtype=float) + 100
    frame = pl.DataFrame({"symbol": np.repeat(symbols, days), "ts": ts * len(symbols),
                          "open": close, "high": close + 1, "low": close - 1, "close": close,
                          "volume": np.full(close.size, 10.0)})  # fmt: skip
    return coerce_bars(frame, timeframe="1d", provider="t", job_id=f"j{first}",
                       ingested_at=datetime.now(UTC))  # fmt: skip


def _read(lake: ParquetLake, symbols: list[str], start: datetime | None,
          end: datetime | None) -> tuple[pl.DataFrame, list[list[str]]]:  # fmt: skip
    fell_back: list[list[str]] = []

    def fallback(names: list[str]) -> pa.Table:
        fell_back.append(names)
        return lake.read(names, D1, start, end).to_arrow()

    tables = stored_tables(lake, symbols, D1, start, end, fallback=fallback)
    assert tables is not None
    read = list(tables)
    for table in read:  # Parquet and Arrow IPC base files alike
        assert table.schema.equals(stored_schema()) or fell_back
    got = [pl.from_arrow(t) for t in read]
    frames = [g.with_columns(pl.col(pl.Categorical).cast(pl.String)) for g in got
              if isinstance(g, pl.DataFrame)]  # fmt: skip
    for frame in frames:  # each table: sorted by symbol and ts, as stored
        assert frame.equals(frame.sort("symbol", "ts"))
    return pl.concat(frames).sort("symbol", "ts"), fell_back


@pytest.mark.parametrize("daily_format", ["arrow", "parquet"])
def test_bulk_tables_are_the_lake_read_with_and_without_deltas(
    tmp_path: Path, daily_format: str
) -> None:
    settings = StorageSettings(
        buckets=4, write_threads=1, delta_files=100, daily_format=daily_format
    )
    lake = ParquetLake(tmp_path, settings)
    lake.upsert(_bars(SYMBOLS, 0, 60))
    wanted = SYMBOLS[3:31]
    for start, end in ((None, None), (DAY0 + timedelta(days=10), DAY0 + timedelta(days=50))):
        got, fell_back = _read(lake, wanted, start, end)
        assert not fell_back  # no deltas: every bucket read from its file as stored
        assert_frame_equal(got, lake.read(wanted, D1, start, end))
        assert set(got["symbol"]) == set(wanted)
    lake.upsert(_bars(SYMBOLS[:2], 60, 5))  # an append: a delta file for those buckets
    assert lake.delta_files("1d")
    got, fell_back = _read(lake, wanted + SYMBOLS[:2], None, None)
    assert fell_back and all(set(f) & set(SYMBOLS[:2]) for f in fell_back)  # theirs only
    expected = lake.read(wanted + SYMBOLS[:2], D1)
    assert_frame_equal(got, expected)
    assert got.filter(pl.col("symbol") == SYMBOLS[0]).height == 65  # the appended days too


def test_bulk_tables_are_none_for_intraday_partitions(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(buckets=4, write_threads=1))
    none = stored_tables(lake, SYMBOLS, Timeframe.parse("1m"), None, None,
                         fallback=lambda names: pa.table({}))  # fmt: skip
    assert none is None


def _text(chunks: list[list[str | None]]) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(c, pa.string_view()) for c in chunks])


def test_text_columns_in_runs_encode_to_the_dictionary_of_their_values() -> None:
    from quantivista.storage.lake.bulk import _dictionary

    long_a, long_b = "a-provider-name-longer-than-12", "another-long-job-id-0123456789"
    chunks: list[list[str | None]] = [
        ["1d"] * 40 + [long_a] * 30 + [long_b] * 20,
        [long_a] * 50 + ["1d"] * 30,  # the same texts again, in this chunk's own buffers
    ]
    column = _text(chunks)
    sliced = column.slice(25, 120)  # a slice starts inside a chunk (an offset)
    for text in (column, sliced):
        encoded = _dictionary(text)
        assert isinstance(encoded, pa.DictionaryArray)  # from runs, not hashed row by row
        assert encoded.to_pylist() == text.to_pylist()
        values = encoded.dictionary.to_pylist()
        assert sorted(values) == sorted(set(text.to_pylist()))  # each value once
        assert encoded.dictionary.type == pa.string()


def test_text_columns_in_many_runs_or_with_nulls_are_hashed_row_by_row() -> None:
    from quantivista.storage.lake.bulk import _dictionary

    alternating = _text([["x", "y-but-a-much-longer-text"] * 40])
    with_nulls = _text([["1d"] * 40 + [None] * 40])
    for text in (alternating, with_nulls):
        encoded = _dictionary(text)
        assert encoded.to_pylist() == text.to_pylist()
        assert pa.types.is_dictionary(encoded.type)
        assert encoded.type.value_type == pa.string()


def test_bulk_tables_of_files_with_several_providers_and_jobs(tmp_path: Path) -> None:
    settings = StorageSettings(buckets=2, write_threads=1, delta_files=0)  # appends rewrite
    lake = ParquetLake(tmp_path, settings)
    lake.upsert(_bars(SYMBOLS[:20], 0, 30))
    later = _bars(SYMBOLS[20:], 0, 30).with_columns(
        provider=pl.lit("a-provider-name-longer-than-12"), job_id=pl.lit("j-another-long-job-id")
    )
    lake.upsert(later)  # the same buckets: each file holds both providers and jobs
    tables = stored_tables(lake, SYMBOLS, D1, None, None, fallback=lambda names: pa.table({}))
    assert tables is not None
    read = list(tables)
    for table in read:
        assert table.schema.equals(stored_schema())
        for name in ("provider", "job_id"):
            dictionary = table.column(name).chunk(0).dictionary.to_pylist()
            assert len(dictionary) == len(set(dictionary)) == 2
    got, _ = _read(lake, SYMBOLS, None, None)
    assert_frame_equal(got, lake.read(SYMBOLS, D1))
