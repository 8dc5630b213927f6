"""`pick_as_of` against its definition: per key, the newest version valid at the instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.model.schema import BAR_POLARS_SCHEMA, PL_UTC_TS
from quantivista.storage.base import (
    HISTORY_POLARS_SCHEMA,
    arrow_micros,
    pick_as_of,
    pick_as_of_arrow,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)

# a version: (symbol, day, ingested hour, superseded hour or None: current)
versions = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.integers(0, 30),
        st.integers(0, 6),
        st.one_of(st.none(), st.integers(0, 8)),
    ),
    max_size=40,
)


def _frame(rows: list[tuple[str, int, int, int | None]], schema: pl.Schema) -> pl.DataFrame:
    data = {
        "symbol": [r[0] for r in rows],
        "timeframe": ["1d"] * len(rows),
        "ts": [T0 + r[1] * DAY for r in rows],
        "close": [float(r[2]) for r in rows],
        "ingested_at": [T0 + timedelta(hours=r[2]) for r in rows],
    }
    if "superseded_at" in schema:
        data["superseded_at"] = [T0 + timedelta(hours=r[3] or 0) for r in rows]
    frame = pl.DataFrame(data).with_columns(pl.col("close").alias("open"))
    return frame.select(
        [
            pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
            for c, t in schema.items()
        ]
    )


def _definition(current: pl.DataFrame, history: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    cur = current.filter(pl.col("ingested_at") <= as_of)
    old = history.filter((pl.col("ingested_at") <= as_of) & (pl.col("superseded_at") > as_of))
    both = pl.concat([cur, old.select(cur.columns)])
    return both.sort("symbol", "ts", "ingested_at").unique(
        subset=["symbol", "ts"], keep="last", maintain_order=True
    )


@settings(max_examples=300, deadline=None)
@given(rows=versions, hour=st.integers(0, 8), one=st.booleans())
def test_pick_as_of_matches_its_definition(
    rows: list[tuple[str, int, int, int | None]], hour: int, one: bool
) -> None:
    if one:  # the single-symbol path (a lake read of one symbol)
        rows = [("A", *r[1:]) for r in rows]
    current_rows: dict[tuple[str, int], tuple[str, int, int, int | None]] = {}
    for r in rows:
        if r[3] is None:
            current_rows[(r[0], r[1])] = r  # one current version a key
    current = _frame(sorted(current_rows.values()), BAR_POLARS_SCHEMA)
    # history: superseded versions, some copies of a current row (a crash between renames)
    history = _frame([r for r in rows if r[3] is not None], HISTORY_POLARS_SCHEMA)
    as_of = T0 + timedelta(hours=hour, minutes=30)
    got = pick_as_of(current, history, as_of)
    assert_frame_equal(got, _definition(current, history, as_of))


def test_pick_as_of_replaces_a_corrected_bar_with_its_old_version() -> None:
    current = _frame([("A", 0, 1, None), ("A", 1, 5, None), ("A", 2, 1, None)], BAR_POLARS_SCHEMA)
    history = _frame([("A", 1, 1, 5)], HISTORY_POLARS_SCHEMA)
    got = pick_as_of(current, history, T0 + timedelta(hours=3))
    assert got["ingested_at"].to_list() == [T0 + timedelta(hours=1)] * 3
    assert got["ts"].to_list() == [T0, T0 + DAY, T0 + 2 * DAY]


@settings(max_examples=300, deadline=None)
@given(
    rows=versions,
    hour=st.integers(0, 8),
    parts=st.integers(1, 3),
    window=st.tuples(st.integers(0, 30), st.integers(0, 31)),
)
def test_pick_as_of_arrow_matches_pick_as_of_for_one_symbol(
    rows: list[tuple[str, int, int, int | None]],
    hour: int,
    parts: int,
    window: tuple[int, int],
) -> None:
    rows = [("A", *r[1:]) for r in rows]
    current_rows: dict[int, tuple[str, int, int, int | None]] = {}
    for r in rows:
        if r[3] is None:
            current_rows[r[1]] = r
    # a window of the current rows, as a read of [start, end) slices them
    lo, hi = min(window), max(window)
    current = _frame(
        [r for r in sorted(current_rows.values()) if lo <= r[1] < hi], BAR_POLARS_SCHEMA
    )
    history = _frame([r for r in rows if r[3] is not None], HISTORY_POLARS_SCHEMA)
    as_of = T0 + timedelta(hours=hour, minutes=30)
    # history as the lake holds it: several files, each in its own order
    chunks = [history[i::parts] for i in range(parts)]
    newest = pl.CompatLevel.newest()
    got = pick_as_of_arrow(
        current.to_arrow(compat_level=newest),
        [c.to_arrow(compat_level=newest) for c in chunks],
        as_of,
    )
    assert got is not None  # few versions: never in 64 runs
    frame = pl.from_arrow(got)
    assert isinstance(frame, pl.DataFrame)
    assert_frame_equal(frame, pick_as_of(current, history, as_of))


def test_pick_as_of_arrow_declines_timestamps_with_nulls() -> None:
    current = _frame([("A", 0, 1, None), ("A", 1, 1, None)], BAR_POLARS_SCHEMA)
    history = _frame([("A", 1, 0, 1)], HISTORY_POLARS_SCHEMA)
    history = history.with_columns(superseded_at=pl.lit(None, PL_UTC_TS))
    got = pick_as_of_arrow(current.to_arrow(), [history.to_arrow()], T0 + timedelta(hours=2))
    assert got is None


def test_arrow_micros_reads_sliced_and_chunked_timestamps() -> None:
    stamps = pl.Series([T0 + k * DAY for k in range(6)], dtype=PL_UTC_TS)
    arrow = stamps.to_arrow()
    want = stamps.dt.epoch("us").to_numpy()
    assert arrow_micros(arrow).tolist() == want.tolist()
    assert arrow_micros(arrow.slice(2, 3)).tolist() == want[2:5].tolist()
    chunked = pa.chunked_array([arrow.slice(0, 2), arrow.slice(4, 2)])
    assert arrow_micros(chunked).tolist() == [*want[:2], *want[4:]]
    assert arrow_micros(arrow.slice(0, 0)).size == 0
