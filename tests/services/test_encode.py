"""Arrow bodies: dictionary-encoded text columns read back as the frame they came from."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from quantivista.services.encode import arrow_stream, arrow_table


def _frame(symbols: list[str]) -> pl.DataFrame:
    n = len(symbols)
    return pl.DataFrame(
        {
            "symbol": symbols,
            "timeframe": ["1d"] * n,
            "close": [float(i) for i in range(n)],
            "provider": [None if i % 3 == 0 else "p" for i in range(n)],
        }
    )


@given(st.lists(st.sampled_from(["A", "B", "CC", "D.E"]), min_size=1, max_size=60))
def test_arrow_table_round_trips_any_order_of_symbols(symbols: list[str]) -> None:
    df = _frame(symbols)
    table = arrow_table(df)
    assert pa.types.is_dictionary(table.schema.field("symbol").type)
    dictionary = table.column("symbol").chunk(0).dictionary.to_pylist()
    assert len(dictionary) == len(set(dictionary))  # no entry twice, sorted input or not
    back = pl.DataFrame(pl.from_arrow(table)).with_columns(
        pl.col("symbol", "provider", "timeframe").cast(pl.String)
    )
    assert back.equals(df)
    assert table.column_names == df.columns


def test_arrow_stream_of_sorted_runs_reads_back_whole() -> None:
    df = _frame(["A"] * 5 + ["B"] * 7 + ["C"] * 3)
    body = b"".join(arrow_stream(df, rows=4))
    read = pa.ipc.open_stream(body).read_all()
    assert read.column("symbol").chunk(0).dictionary.to_pylist() == ["A", "B", "C"]
    back = pl.DataFrame(pl.from_arrow(read)).with_columns(
        pl.col("symbol", "provider", "timeframe").cast(pl.String)
    )
    assert back.equals(df)
