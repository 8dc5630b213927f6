"""TableStream: one Arrow IPC stream from tables encoded one by one (dictionaries replaced)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from quantivista.model.schema import BAR_POLARS_SCHEMA, coerce_bars
from quantivista.services.encode import TableStream, arrow_table
from quantivista.storage.lake.bulk import stored_schema


def _bars(symbols: list[str], provider: str) -> pl.DataFrame:
    ts = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 4)]
    prices = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 9.0}
    frame = pl.DataFrame(
        {"symbol": [s for s in symbols for _ in ts], "ts": ts * len(symbols), **prices}
    )
    return coerce_bars(frame, timeframe="1d", provider=provider, job_id="j1")


def test_tables_with_other_dictionaries_make_one_readable_stream() -> None:
    first, second = _bars(["A", "B"], "p1"), _bars(["C"], "p2")
    stream = TableStream(stored_schema())
    # one table as a lake file reads (dictionaries of strings), one from polars (cast)
    stored = arrow_table(first).cast(stored_schema())
    body = b"".join([*stream.feed(stored), *stream.feed(arrow_table(second)), stream.finish()])
    read = pa.ipc.open_stream(body).read_all()
    assert read.schema == stored_schema()
    got = pl.DataFrame(pl.from_arrow(read)).with_columns(pl.col(pl.Categorical).cast(pl.String))
    assert got.equals(pl.concat([first, second]).select(BAR_POLARS_SCHEMA.names()))
    assert got["provider"].to_list() == ["p1"] * 6 + ["p2"] * 3  # the second dictionary


def test_an_empty_stream_has_the_schema() -> None:
    read = pa.ipc.open_stream(TableStream(stored_schema()).finish()).read_all()
    assert read.num_rows == 0 and read.schema == stored_schema()


def test_large_columns_are_sent_from_the_tables_memory() -> None:
    frame = _bars([f"S{i:03d}" for i in range(3000)], "p1")  # 9,000 rows: 72 kB a column
    table = arrow_table(frame).cast(stored_schema())
    stream = TableStream(stored_schema())
    pieces = stream.feed(table)
    close = table.column("close").chunk(0).buffers()[1]
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert any(pa.py_buffer(v).address == close.address for v in views)  # not a copy
    body = b"".join([*pieces, *stream.feed(table.slice(5, 10)), stream.finish()])
    read = pa.ipc.open_stream(body).read_all()
    assert read.equals(pa.concat_tables([table, table.slice(5, 10)]))
