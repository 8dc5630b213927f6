"""The public API of DESIGN.md on the embedded defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import quantivista as qv
from quantivista.errors import InvalidInputError, SchemaError


def _bars(symbol: str = "QVTEST", days: int = 5) -> pl.DataFrame:
    ts = [datetime(2024, 1, d, tzinfo=UTC) for d in (2, 3, 4, 5, 8)][:days]
    n = len(ts)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": ["1d"] * n,
            "ts": ts,
            "open": [10.0 + i for i in range(n)],
            "high": [11.0 + i for i in range(n)],
            "low": [9.0 + i for i in range(n)],
            "close": [10.5 + i for i in range(n)],
            "volume": [1000.0] * n,
        }
    )


@pytest.fixture
def p(tmp_path: Path) -> qv.Platform:
    platform = qv.Platform.open(tmp_path / "data")
    yield platform  # type: ignore[misc]
    platform.close()


def test_write_bars_round_trips_polars_frames(p: qv.Platform) -> None:
    report = p.write_bars(_bars(), source="my-vendor")
    assert report.total_records == report.valid_records == 5
    back = p.bars("QVTEST", "2024-01-01", "2024-01-31")
    assert back.columns == list(qv.BAR_POLARS_SCHEMA.names())
    assert back["close"].to_list() == [10.5, 11.5, 12.5, 13.5, 14.5]
    assert (back["provider"] == "my-vendor").all()
    assert back["ingested_at"].null_count() == 0


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_write_bars_takes_pandas_and_arrow(p: qv.Platform, kind: str) -> None:
    frame = _bars().to_pandas() if kind == "pandas" else _bars().to_arrow()
    assert isinstance(frame, pd.DataFrame | pa.Table)
    report = p.write_bars(frame)
    assert report.valid_records == 5
    assert p.bars("QVTEST").height == 5


def test_bad_rows_go_to_quarantine_with_their_reason(p: qv.Platform) -> None:
    bad = _bars().with_columns(
        high=pl.when(pl.col("ts").dt.day() == 3).then(1.0).otherwise(pl.col("high")),
        volume=pl.when(pl.col("ts").dt.day() == 4).then(-5.0).otherwise(pl.col("volume")),
    )
    report = p.write_bars(bad)
    assert report.invalid_records == 2
    assert p.bars("QVTEST").height == 3
    q = p.quarantine("QVTEST").sort("ts")
    assert q.height == 2
    assert q["rule"].to_list() == ["ohlc_inconsistent", "negative_volume"]
    assert {e.rule for e in report.validation_errors} >= {"ohlc_inconsistent", "negative_volume"}


def test_frames_outside_the_schema_are_refused_and_store_nothing(p: qv.Platform) -> None:
    with pytest.raises(SchemaError, match="close"):
        p.write_bars(_bars().drop("close"))
    with pytest.raises(SchemaError, match="numeric"):
        p.write_bars(_bars().with_columns(pl.col("open").cast(pl.String)))
    with pytest.raises(SchemaError):
        p.write_bars(_bars().with_columns(pl.col("ts").dt.replace_time_zone(None)))
    assert p.status().is_empty()


def test_reads_select_columns_and_ranges(p: qv.Platform) -> None:
    p.write_bars(pl.concat([_bars("AAAAAA"), _bars("BBBBBB")]))
    both = p.bars(["BBBBBB", "AAAAAA"], start="2024-01-03", end="2024-01-04")
    assert both["symbol"].to_list() == ["AAAAAA", "AAAAAA", "BBBBBB", "BBBBBB"]
    slim = p.bars("AAAAAA", columns=["ts", "close"])
    assert slim.columns == ["ts", "close"]
    assert p.bars("AAAAAA", end=datetime(2024, 1, 3, tzinfo=UTC)).height == 2
    with pytest.raises(InvalidInputError):
        p.bars([])


def test_status_and_jobs_describe_the_store(p: qv.Platform) -> None:
    p.write_bars(_bars())
    status = p.status()
    assert status.filter(pl.col("symbol") == "QVTEST")["rows"].item() == 5
    assert p.jobs() == [] or all(j.job_id for j in p.jobs())


def test_actions_are_written_and_read_back(p: qv.Platform) -> None:
    actions = pl.DataFrame(
        {
            "symbol": ["QVTEST", "QVTEST"],
            "action_type": ["split", "dividend"],
            "ex_date": [datetime(2024, 1, 4).date(), datetime(2024, 1, 5).date()],
            "ratio": [2.0, None],
            "amount": [None, 0.25],
            "currency": [None, "USD"],
        }
    )
    assert p.write_actions(actions, provider="file") == 2
    assert p.write_actions(actions, provider="file") == 0
    got = p.actions("QVTEST")
    assert got["action_type"].to_list() == ["split", "dividend"]
    with pytest.raises(SchemaError):
        p.write_actions(actions.with_columns(action_type=pl.lit("mystery")))


def test_open_accepts_settings_overrides(tmp_path: Path) -> None:
    with qv.Platform.open(tmp_path / "x", ingest={"calendar": "XLON"}) as plat:
        assert plat.calendar().mic == "XLON"
        assert plat.root == tmp_path / "x"
