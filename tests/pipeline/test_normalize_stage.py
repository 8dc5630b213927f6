"""The normalize stage end to end: adjusted vendors' bars are stored as raw prices.

Finnhub (split-adjusted daily candles) through the provider simulator over local sockets,
and Stooq's real recorded SPY download (splits and dividends adjusted) through a local HTTP
server, each ingested by `Platform.ingest` with the real client.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import polars as pl
import pytest

from providers.conftest import LocalServer, Route, Seen
from providers.simulator.helpers import SETTINGS
from quantivista.actions.lean import read_lean_daily
from quantivista.clock import TestClock
from quantivista.config import ProviderEndpointSettings, Settings
from quantivista.model.jobs import JobStatus
from quantivista.model.schema import coerce_actions
from quantivista.platform import Platform
from quantivista.providers.simulator import run_simulator
from quantivista.providers.simulator.wiring import settings_for_simulator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STOOQ = FIXTURES / "providers" / "stooq" / "spy_us_daily_2018-02-26_2026-02-09.csv"
FETCHED = datetime(2026, 2, 9, 21, 0, tzinfo=UTC)  # the day the Stooq file was downloaded


# -- Finnhub through the simulator ---------------------------------------------------------
def test_finnhub_split_adjusted_candles_are_stored_as_the_markets_raw_bars(
    tmp_path: Path,
) -> None:
    with run_simulator(SETTINGS) as sim:
        market = sim.market
        splits = market.actions().filter(pl.col("action_type") == "split")
        split = splits.sort("ex_date").row(-2, named=True)  # one with sessions after it
        symbol, ex = split["symbol"], split["ex_date"]
        first, last = ex - timedelta(days=40), ex + timedelta(days=40)
        # received after the simulator's last session: its candles are adjusted as of then
        after = market.sessions[-1] + timedelta(days=1)
        clock = TestClock(datetime(after.year, after.month, after.day, 12, tzinfo=UTC))
        settings = settings_for_simulator(Settings(data_dir=tmp_path / "qv"), sim, ["finnhub"])
        with Platform.from_settings(settings, clock=clock) as p:
            p.write_actions(market.actions(symbol))  # Finnhub sends none: known beforehand
            job = p.ingest(symbol, first, last, providers=["finnhub"])
            stored = p.bars(symbol, first, last)
            adjusted = p.bars(symbol, first, last, adjust="splits")
        raw = market.daily(symbol, first, last)
    assert job.status is JobStatus.SUCCEEDED, job.error_details
    assert stored.height == raw.height > 40
    for column in ("open", "high", "low", "close"):
        assert stored[column].to_list() == pytest.approx(raw[column].to_list(), rel=1e-9)
    # whole-share volumes, adjusted then rounded by the vendor: exact to 0.5 / factor, the
    # factor being the product of the ratios of the splits after the bar (a 1-for-10: 5 shares)
    later = market.actions(symbol).filter(pl.col("action_type") == "split")
    day = raw["ts"].dt.date()
    factor = pl.Series([1.0] * raw.height)
    for ex_date, ratio in later.select("ex_date", "ratio").iter_rows():
        factor = factor * pl.select(pl.when(day < ex_date).then(ratio).otherwise(1.0)).to_series()
    assert ((stored["volume"] - raw["volume"]).abs() <= 0.5 / factor).all()
    assert (stored["close"] != adjusted["close"]).any()  # the split is inside the window


# -- Stooq's real SPY download -------------------------------------------------------------
def _stooq_route(seen: Seen) -> Route:
    """Serve the recorded file filtered to the asked range, as Stooq's /q/d/l/ does."""
    query = parse_qs("&".join(f"{k}={v[0]}" for k, v in seen.query.items()))
    lo, hi = query["d1"][0], query["d2"][0]
    frame = pl.read_csv(STOOQ, schema_overrides={"Date": pl.String})
    days = frame["Date"].str.replace_all("-", "")
    body = frame.filter((days >= lo) & (days <= hi)).write_csv()
    return Route(200, body.encode(), {"Content-Type": "text/csv"})


@pytest.fixture
def stooq_platform(tmp_path: Path) -> Iterator[Platform]:
    server = LocalServer()
    server.routes["/q/d/l/"] = _stooq_route
    settings = Settings(
        data_dir=tmp_path / "qv",
        providers={"stooq": ProviderEndpointSettings(base_url=server.url)},
        resilience={"limits": {"stooq": []}},
    )
    with Platform.from_settings(settings, clock=TestClock(FETCHED)) as p:
        # what the store knew: Lean's raw SPY closes (to 2021-03-31) and SPY's dividends
        p.write_bars(read_lean_daily(FIXTURES / "corporate_actions/lean/daily/spy.zip", "SPY"),
                     source="lean")  # fmt: skip
        yield p
    server.close()


def _dividends(leave_out: tuple[str, ...] = ()) -> pl.DataFrame:
    df = pl.read_csv(
        FIXTURES / "corporate_actions" / "spy_dividends_2018-2025.csv", try_parse_dates=True
    )
    df = df.filter(~pl.col("ex_date").cast(pl.String).is_in(list(leave_out)))
    return coerce_actions(df.drop("source"))


def test_stooq_prices_that_disagree_with_the_known_dividends_are_held_not_stored(
    stooq_platform: Platform,
) -> None:
    p = stooq_platform
    p.write_actions(_dividends())  # every SPY dividend to 2025, as the store knows them
    before = p.bars("SPY")
    job = p.ingest("SPY", "2018-02-26", "2026-02-09", providers=["stooq"])
    # Stooq's 2026 file reflects about three fewer dividends than happened: made raw with
    # the real ones its closes sit 0.79% above the traded ones. Nothing wrong is stored.
    held = p.quarantine(job_id=job.job_id)
    assert job.status is JobStatus.PARTIAL and job.records_failed == held.height == 2000
    assert set(held["rule"]) == {"basis_mismatch"}
    reason = held["reason"][0]
    assert reason.startswith("made raw, the vendor's splits_and_dividends") and "0.7" in reason
    assert p.bars("SPY").equals(before)  # Lean's raw bars untouched, nothing added


def test_stooq_prices_become_the_traded_ones_when_their_basis_is_known(
    stooq_platform: Platform,
) -> None:
    p = stooq_platform
    # the dividends Stooq's download reflects (the three 2025 ones it lacks left out)
    p.write_actions(_dividends(leave_out=("2025-06-20", "2025-09-19", "2025-12-19")))
    lean = p.bars("SPY", "2018-02-26", "2021-03-31").select("ts", lean_close="close")
    job = p.ingest("SPY", "2018-02-26", "2026-02-09", providers=["stooq"])
    assert job.status is JobStatus.SUCCEEDED, job.error_details
    stored = p.bars("SPY", "2018-02-26", "2026-02-09")
    assert stored.height == 2000 and set(stored["provider"]) == {"stooq"}
    both = stored.join(lean, on="ts")
    rel = (both["close"] / both["lean_close"] - 1).abs()
    assert both.height == 780 and float(rel.max()) < 2.5e-4  # type: ignore[arg-type]
    adjusted_close = pl.read_csv(STOOQ).filter(pl.col("Date") == "2019-06-03")["Close"][0]
    day = stored.filter(pl.col("ts") == datetime(2019, 6, 3, tzinfo=UTC))
    assert day["close"][0] > adjusted_close  # raw is above the dividend-adjusted close


def test_a_stooq_window_whose_later_dividends_have_no_stored_close_is_held(
    stooq_platform: Platform,
) -> None:
    p = stooq_platform
    p.write_actions(_dividends())
    job = p.ingest("SPY", "2022-01-01", "2022-03-31", providers=["stooq"])
    held = p.quarantine(job_id=job.job_id)
    assert job.status is JobStatus.PARTIAL and held.height == job.records_failed > 0
    assert set(held["rule"]) == {"unresolved_adjustment"}
    assert p.bars("SPY", "2022-01-01", "2022-03-31").is_empty()
    assert held["ts"].max() < datetime(2022, 4, 1, tzinfo=UTC)  # type: ignore[operator]
