"""Dictionary-encoded strings of the lake's Parquet files: same data, written as given."""

from __future__ import annotations

import random
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.config import StorageSettings
from quantivista.storage.lake.encoding import ArrowBatch, to_arrow
from quantivista.storage.lake.files import atomic_write_parquet

SCHEMA = {"symbol": pl.String, "timeframe": pl.String, "close": pl.Float64,
          "provider": pl.String, "job_id": pl.String}  # fmt: skip
names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=4)


def _frame(symbols: list[str], providers: list[str | None]) -> pl.DataFrame:
    n = len(symbols)
    return pl.DataFrame(
        {
            "symbol": symbols,
            "timeframe": ["1d"] * n,
            "close": [float(i) for i in range(n)],
            "provider": providers,
            "job_id": ["j1"] * n,
        },
        schema=SCHEMA,
    )


@settings(max_examples=60, deadline=None)
@given(
    runs=st.lists(st.tuples(names, st.integers(1, 5)), min_size=1, max_size=6,
                  unique_by=lambda r: r[0]),
    provider=st.one_of(st.none(), names,
                       st.lists(st.one_of(st.none(), names), min_size=30, max_size=30)),
)  # fmt: skip
def test_partition_tables_hold_the_batch_rows(
    runs: list[tuple[str, int]], provider: str | list[str | None] | None
) -> None:
    symbols = [s for s, k in runs for _ in range(k)]
    n = len(symbols)
    providers = provider[:n] if isinstance(provider, list) else [provider] * n
    df = _frame(symbols, providers)
    batch = ArrowBatch(df)
    # rows of the batch in reverse run order: the table follows the runs it is given
    bounds, start = [], 0
    for s, k in runs:
        bounds.append((s, start, start + k))
        start += k
    wanted = list(reversed(bounds))
    table = batch.partition(wanted)
    expected = pl.concat([df.slice(lo, hi - lo) for _, lo, hi in wanted])
    assert pl.from_arrow(
        table.cast(pa.schema([(f.name, _plain(f.type)) for f in table.schema]))
    ).equals(expected)  # type: ignore[union-attr]
    assert pa.types.is_dictionary(table.schema.field("symbol").type)
    assert pa.types.is_dictionary(table.schema.field("job_id").type)
    constant = len(set(providers)) == 1 and providers[0] is not None
    assert pa.types.is_dictionary(table.schema.field("provider").type) == constant
    # and through a Parquet file, as readers see it: plain strings, the same rows
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.parquet"
        atomic_write_parquet(table, path, StorageSettings())
        assert pl.read_parquet(path).equals(expected)
        atomic_write_parquet(df, path, StorageSettings())
        assert pl.read_parquet(path).equals(df)


def _plain(t: pa.DataType) -> pa.DataType:
    return pa.large_string() if pa.types.is_dictionary(t) or pa.types.is_string_view(t) else t


def test_repeated_strings_are_dictionary_pages(tmp_path: Path) -> None:
    df = _frame(["A"] * 3 + ["B"] * 2, ["p"] * 5)
    table = to_arrow(df, [("A", 3), ("B", 2)])
    assert table["symbol"].to_pylist() == df["symbol"].to_list()
    path = tmp_path / "f.parquet"
    atomic_write_parquet(table, path, StorageSettings())
    meta = pq.read_metadata(path).row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    for name in ("symbol", "timeframe", "provider", "job_id"):
        assert "RLE_DICTIONARY" in cols[name].encodings, name
        assert cols[name].compression == "UNCOMPRESSED", name  # a few bytes: not worth a codec
    assert cols["close"].compression == "ZSTD"
    assert pl.read_parquet(path).equals(df)


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=80), st.randoms())
@settings(max_examples=50, deadline=None)
def test_a_partition_of_many_runs_holds_their_rows_in_run_order(
    lengths: list[int], rng: random.Random
) -> None:
    """Above a few runs the rows are taken instead of sliced: the same table either way."""
    n = sum(lengths) + 1
    frame = pl.DataFrame({"symbol": ["X"] * n, "close": [float(i) for i in range(n)]})
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    runs = [
        (f"S{i:03d}", lo, lo + k) for i, (lo, k) in enumerate(zip(starts, lengths, strict=True))
    ]
    rng.shuffle(runs)  # runs come in file order, not batch order
    table = ArrowBatch(frame).partition(runs)
    want = [float(x) for _, lo, hi in runs for x in range(lo, hi)]
    assert table["close"].to_pylist() == want
    assert table["symbol"].to_pylist() == [s for s, lo, hi in runs for _ in range(lo, hi)]


@pytest.mark.parametrize(("codec", "split"), [("zstd", True), ("lz4", True), ("none", False)])
def test_floats_are_byte_stream_split_only_under_a_codec(
    tmp_path: Path, codec: Any, split: bool
) -> None:
    """Uncompressed, PLAIN floats are as small and decode as a copy (cold reads)."""
    df = _frame(["A"] * 3 + ["B"] * 2, ["p"] * 5)
    path = tmp_path / "f.parquet"
    atomic_write_parquet(df, path, StorageSettings(compression=codec))
    meta = pq.read_metadata(path).row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert ("BYTE_STREAM_SPLIT" in cols["close"].encodings) == split
    assert pl.read_parquet(path).equals(df)
