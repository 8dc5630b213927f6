"""The lake against a model: random upsert sequences over shared bucket files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake

D1 = Timeframe.parse("1d")
SYMBOLS = ["A", "B/C", "Ä", "BRK.B", "X Y", "AAPL"]  # the lake stores any string
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 1, tzinfo=UTC)

Row = tuple[str, int, int]  # symbol, day, close
Model = dict[tuple[str, int], tuple[float, datetime]]  # key -> (close, ingested_at)

batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from(SYMBOLS), st.integers(0, 9), st.integers(1, 3)),
        min_size=1,
        max_size=12,
    ),
    min_size=1,
    max_size=5,
)


def _frame(rows: list[Row], at: datetime) -> pl.DataFrame:
    closes = [float(c) for _, _, c in rows]
    return coerce_bars(
        {
            "symbol": [s for s, _, _ in rows],
            "ts": [DAY0 + timedelta(days=d) for _, d, _ in rows],
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": [1.0] * len(rows),
        },
        timeframe="1d",
        provider="p",
        job_id="j",
        ingested_at=at,
    )


def _apply(model: Model, rows: list[Row], at: datetime) -> None:
    last: dict[tuple[str, int], float] = {}
    for symbol, day, close in rows:  # the last row of a key in a batch wins
        last[(symbol, day)] = float(close)
    for key, close in last.items():
        old = model.get(key)
        if old is None or old[0] != close:
            model[key] = (close, at)


def _as_rows(df: pl.DataFrame) -> list[tuple[str, int, float, datetime]]:
    return [
        (s, (ts - DAY0).days, c, at)
        for s, ts, c, at in df.select("symbol", "ts", "close", "ingested_at").iter_rows()
    ]


def _expected(model: Model) -> list[tuple[str, int, float, datetime]]:
    # reads are sorted by symbol in byte order (UTF-8), then ts
    keys = sorted(model, key=lambda k: (k[0].encode(), k[1]))
    return [(s, d, *model[(s, d)]) for s, d in keys]


@settings(max_examples=40, deadline=None)
@given(batches=batches, buckets=st.sampled_from([1, 2, 64]))
def test_random_upserts_read_back_like_the_model_now_and_as_of(
    batches: list[list[Row]], buckets: int
) -> None:
    with TemporaryDirectory() as tmp:
        lake = ParquetLake(Path(tmp), StorageSettings(write_threads=2, buckets=buckets))
        model: Model = {}
        snapshots: list[tuple[datetime, Model]] = []
        for i, rows in enumerate(batches):
            at = T0 + timedelta(hours=i)
            lake.upsert(_frame(rows, at))
            _apply(model, rows, at)
            snapshots.append((at, dict(model)))
        assert _as_rows(lake.read(SYMBOLS, D1)) == _expected(model)
        # another process (cold cache) reads the same
        assert _as_rows(ParquetLake(Path(tmp)).read(SYMBOLS, D1)) == _expected(model)
        # without a cache, files are read filtered to the wanted symbols
        uncached = ParquetLake(Path(tmp), StorageSettings(cache_mb=0))
        assert _as_rows(uncached.read(SYMBOLS, D1)) == _expected(model)
        for symbol in SYMBOLS[:3]:
            one = {k: v for k, v in model.items() if k[0] == symbol}
            assert _as_rows(uncached.read([symbol], D1)) == _expected(one)
        for at, snapshot in snapshots:
            assert _as_rows(lake.read(SYMBOLS, D1, as_of=at)) == _expected(snapshot)
        assert lake.symbols(D1) == sorted({s for s, _ in model})
