"""Multi-timeframe rollups: agree with the simulated market and follow base-bar corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import InvalidInputError
from quantivista.model.schema import coerce_bars
from quantivista.platform import Platform
from quantivista.processing.rollup import rollup
from quantivista.providers.simulator.market import SimulatedMarket

OHLCV = ["symbol", "ts", "open", "high", "low", "close", "volume", "trades"]


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    return SimulatedMarket(seed=3, universe_size=3, as_of="2024-01-31")


def _minutes(market: SimulatedMarket, start: str, end: str) -> tuple[str, pl.DataFrame]:
    symbol = market.symbols()[0]
    raw = market.minutes(symbol, start, end)
    at = datetime(2024, 2, 1, tzinfo=UTC)
    return symbol, coerce_bars(raw, provider="sim", job_id="j", ingested_at=at)


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "1d"])
def test_rollup_matches_the_simulated_market(market: SimulatedMarket, timeframe: str) -> None:
    # 2023-11-24 closes early (13:00 New York): short last buckets
    symbol, base = _minutes(market, "2023-11-22", "2023-11-27")
    mine = rollup(base, market.calendar, timeframe)
    theirs = market.bars(symbol, "2023-11-22", "2023-11-27", timeframe)
    assert mine.height == theirs.height > 0
    # the market draws daily trades and vwap apart from its minutes; OHLCV must agree
    cols = [c for c in OHLCV if c != "trades"] if timeframe == "1d" else OHLCV
    assert_frame_equal(mine.select(cols), theirs.select(cols), check_dtypes=False)
    if timeframe != "1d":
        assert (mine["vwap"] - theirs["vwap"]).abs().max() < 1e-3  # the market rounds
    else:
        day = base.filter(pl.col("ts").dt.convert_time_zone("America/New_York").dt.day() == 22)
        want = (day["vwap"] * day["volume"]).sum() / day["volume"].sum()
        assert mine["vwap"][0] == pytest.approx(want)
        assert mine["trades"][0] == day["trades"].sum()
    assert set(mine["timeframe"]) == {timeframe}


def test_rollups_follow_corrections_of_their_sessions_only(
    market: SimulatedMarket, tmp_path: Path
) -> None:
    clock = TestClock(datetime(2024, 2, 1, tzinfo=UTC))
    settings = Settings(data_dir=tmp_path, storage={"rollups": ("5m", "1h", "1d")})
    symbol, base = _minutes(market, "2024-01-08", "2024-01-09")
    with Platform.from_settings(settings, clock=clock) as p:
        p.write_bars(base.drop("ingested_at", "job_id"), source="sim")
        first = p.bars(symbol, "2024-01-08", "2024-01-09", "1d")
        assert first.height == 2
        assert p.bars(symbol, "2024-01-08", "2024-01-09", "5m").height == 2 * 78
        assert p.bars(symbol, "2024-01-08", "2024-01-09", "1h").height == 2 * 7
        t_fix = clock.now() + timedelta(hours=1)
        clock.advance(3600)
        # a late print on the 9th: the 15:59 bar (New York) gets a much higher high
        late = base.filter(pl.col("ts") == datetime(2024, 1, 9, 20, 59, tzinfo=UTC))
        fixed = late.with_columns(high=pl.col("high") * 1.5).drop("ingested_at", "job_id")
        p.write_bars(fixed, source="sim")
        daily = p.bars(symbol, "2024-01-08", "2024-01-09", "1d")
        assert daily["high"][1] == pytest.approx(late["high"][0] * 1.5)
        assert daily.row(0) == first.row(0)  # the 8th was not rebuilt: same knowledge time
        assert daily["ingested_at"].to_list() == [first["ingested_at"][0], t_fix]
        hours = p.bars(symbol, "2024-01-09", "2024-01-09", "1h")
        assert hours["ingested_at"].to_list() == [first["ingested_at"][1]] * 6 + [t_fix]
        # as of before the correction, the daily bar is what it was
        before = p.bars(
            symbol, "2024-01-08", "2024-01-09", "1d", as_of=t_fix - timedelta(seconds=1)
        )
        assert_frame_equal(before, first)


INTRADAY = Path(__file__).parents[1] / "fixtures" / "intraday"


@pytest.mark.parametrize("rollup_session", ["regular", "extended"])
def test_stored_rollups_and_reads_follow_the_session(tmp_path: Path, rollup_session: str) -> None:
    from quantivista.model.flags import QualityFlag
    from quantivista.providers import alpha_vantage, polygon, yahoo

    body = (INTRADAY / "polygon_aggs_QVX_1minute_extended.json").read_bytes()
    minutes = polygon.parse_aggs(body, "QVX", "1m")[0]
    daily = alpha_vantage.parse_time_series(
        (INTRADAY / "alpha_vantage_daily_QVX.json").read_bytes(), "QVX"
    )[0]
    hourly = yahoo.parse_chart((INTRADAY / "yahoo_chart_QVX_60m_regular.json").read_bytes(), "QVX")[
        0
    ]
    settings = Settings(
        data_dir=tmp_path,
        storage={"rollups": ("1h", "1d")},
        intraday={"rollup_session": rollup_session},
    )
    clock = TestClock(datetime(2021, 1, 4, tzinfo=UTC))
    cols = ["ts", "open", "high", "low", "close", "volume"]
    outside = int(QualityFlag.OUTSIDE_SESSION)
    with Platform.from_settings(settings, clock=clock) as p:
        p.write_bars(minutes.drop("ingested_at", "job_id"), source="polygon")
        span = ("QVX", "2020-08-28", "2020-11-27")
        assert p.bars(*span, "1m").height == 390 + 390 + 210  # regular by default
        every = p.bars(*span, "1m", session="extended")
        assert every.height == minutes.height
        assert every.filter((pl.col("quality_flags") & outside) != 0).height == minutes.height - 990
        assert_frame_equal(p.bars(*span, "1d").select(cols), daily.select(cols))
        assert_frame_equal(p.bars(*span, "1h").select(cols), hourly.select(cols))
        narrow = p.bars(*span, "1h", columns=["symbol", "ts", "close"])
        assert narrow.columns == ["symbol", "ts", "close"]
        assert narrow["close"].to_list() == hourly["close"].to_list()
        extended = p.bars(*span, "1h", session="extended")
        if rollup_session == "regular":
            assert_frame_equal(extended, p.bars(*span, "1h"))
        else:
            assert extended.height > hourly.height
            assert extended["volume"].sum() == minutes["volume"].sum()
        with pytest.raises(InvalidInputError):
            p.bars(*span, "1h", session="overnight")
