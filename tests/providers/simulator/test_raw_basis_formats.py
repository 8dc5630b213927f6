"""The simulator's split-adjusted Finnhub candles, undone by `to_raw_basis`, are the market's.

The stage that will call `to_raw_basis` between the router and the store does not exist
yet; this checks the pieces it will join on one format: the simulator serves daily candles
split-adjusted as of its last session, the Finnhub client declares `SPLITS` for daily bars,
and the market's own actions undo them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from quantivista.config import ProviderFaultSettings
from quantivista.processing.normalize import to_raw_basis
from quantivista.providers.finnhub import FinnhubProvider, parse_candles
from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.formats.common import Feed, SimRequest
from quantivista.providers.simulator.formats.finnhub import candle

from .helpers import SETTINGS

MARKET = SimulatedMarket(SETTINGS.seed, 60, as_of=SETTINGS.as_of)
SPLIT_ACTIONS = MARKET.actions().filter(pl.col("action_type") == "split")
RATIOS = sorted(set(SPLIT_ACTIONS["ratio"].to_list()))  # forward splits and a 1-for-10


def _candles(symbol: str, resolution: str, first: datetime, last: datetime) -> bytes:
    feed = Feed(MARKET, "finnhub", ProviderFaultSettings(), lambda kind, n: None)
    query = {
        "symbol": symbol, "resolution": resolution, "token": "t",
        "from": str(int(first.timestamp())), "to": str(int(last.timestamp())),
    }  # fmt: skip
    reply = candle(SimRequest("finnhub", {}, query, {}, "http://127.0.0.1:1/finnhub"), feed)
    assert reply.status == 200 and json.loads(reply.body)["s"] == "ok"
    return reply.body


@pytest.mark.parametrize(
    "ratio", [r for r in (2.0, 3.0, 4.0, 1.5, 0.1) if r in SPLIT_ACTIONS["ratio"]]
)
def test_simulated_finnhub_daily_candles_come_back_as_the_markets_raw_bars(ratio: float) -> None:
    split = SPLIT_ACTIONS.filter(pl.col("ratio") == ratio).row(0, named=True)
    symbol, ex = split["symbol"], split["ex_date"]
    first = datetime(ex.year, ex.month, ex.day, tzinfo=UTC) - timedelta(days=20)
    last = first + timedelta(days=40)
    candles = parse_candles(_candles(symbol, "D", first, last), symbol, "1d")
    basis = FinnhubProvider.capabilities.basis_for("1d")
    # the simulator adjusts as of its last session: the stage passes the payload's received
    # date, which is on or after it
    out = to_raw_basis(candles, basis, MARKET.actions(symbol), as_of_day=MARKET.as_of)
    raw = MARKET.daily(symbol, candles["ts"].min(), candles["ts"].max())  # type: ignore[arg-type]
    assert out.unresolved == 0 and out.converted >= 1
    for column in ("open", "high", "low", "close"):
        assert out.bars[column].to_list() == pytest.approx(raw[column].to_list(), rel=1e-12)
    # Finnhub's volumes are whole shares: split-adjusted, then rounded, then divided back
    # by the later splits' product P, a volume is exact to within 0.5 / P shares
    slack = (0.5 / out.factors["volume_factor"]).to_list()
    diffs = (out.bars["volume"] - raw["volume"]).abs().to_list()
    assert all(d <= s + 1e-6 for d, s in zip(diffs, slack, strict=True))


def test_simulated_finnhub_intraday_candles_are_raw_already() -> None:
    symbol = SPLIT_ACTIONS["symbol"][0]
    day = MARKET.sessions[-1]
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    candles = parse_candles(_candles(symbol, "5", start, start + timedelta(days=1)), symbol, "5m")
    basis = FinnhubProvider.capabilities.basis_for("5m")
    out = to_raw_basis(candles, basis, MARKET.actions(symbol), as_of_day=MARKET.as_of)
    assert out.converted == 0 and out.bars.equals(candles)
