"""TableStream: one Arrow IPC stream from tables encoded one by one (dictionaries replaced)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
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


def test_measure_gives_the_bytes_feed_returns_without_encoding() -> None:
    tables = [
        arrow_table(_bars(["A", "B"], "p1")).cast(stored_schema()),
        arrow_table(_bars(["C"], "a-provider-name-longer-than-12")),  # cast by the stream
        arrow_table(_bars([f"S{i:03d}" for i in range(3000)], "p1")).cast(stored_schema()),
    ]
    stream = TableStream(stored_schema())
    measured = [stream.measure(t) for t in tables]
    fed = [sum(len(p) for p in stream.feed(t)) for t in tables]
    assert fed[0] == measured[0] + stream.schema_size  # the first carries the schema
    assert fed[1:] == measured[1:]
    whole = TableStream(stored_schema())
    stream_body = b"".join([*(p for t in tables for p in whole.feed(t)), whole.finish()])
    assert len(stream_body) == stream.length(sum(measured))
    assert pa.ipc.open_stream(stream_body).read_all().num_rows == sum(t.num_rows for t in tables)


def test_neighbouring_buffers_of_a_mapped_file_go_as_one_piece(tmp_path: Path) -> None:
    rows = 20_000
    numbers = {name: np.arange(rows, dtype=np.float64) + i for i, name in enumerate("abcdef")}
    path = tmp_path / "t.arrow"
    with pa.ipc.new_file(str(path), pa.table(numbers).schema) as writer:
        writer.write_table(pa.table(numbers))
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    stream = TableStream(table.schema)
    pieces = stream.feed(table)
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert len(views) == 1 and len(views[0]) == 6 * rows * 8  # six columns, one range
    first = table.column("a").chunk(0).buffers()[1]
    assert pa.py_buffer(views[0]).address == first.address  # the file's memory, not a copy
    expected = table.to_pylist()[:3]
    del table, first, source
    gc.collect()  # the pieces keep the mapping alive
    read = pa.ipc.open_stream(b"".join([*pieces, stream.finish()])).read_all()
    assert read.num_rows == rows and read.to_pylist()[:3] == expected
    assert read.column("f").to_numpy()[-1] == rows - 1 + 5
