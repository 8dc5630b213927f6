from __future__ import annotations

import re
from datetime import date

import numpy as np
import polars as pl
import pytest

from quantivista.errors import SymbolNotFoundError
from quantivista.model.schema import coerce_bars
from quantivista.providers.simulator import SimulatedMarket
from quantivista.reference.calendars import get_calendar


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    """A 12-instrument market that has closed through 2026-11-20 (overrides the shared one)."""
    return SimulatedMarket(seed=7, universe_size=12, as_of="2026-11-23")


def _ordinary(market: SimulatedMarket) -> str:
    inst = next(i for i in market.instruments if not (i.former_symbol or i.delisted_on))
    return inst.symbol


def test_same_seed_same_market_and_another_seed_another(market: SimulatedMarket) -> None:
    again = SimulatedMarket(seed=7, universe_size=12, as_of="2026-11-23")
    other = SimulatedMarket(seed=8, universe_size=12, as_of="2026-11-23")
    sym = _ordinary(market)
    assert again.daily(sym, "2020-01-01", "2020-12-31").equals(
        market.daily(sym, "2020-01-01", "2020-12-31")
    )
    assert [i.symbol for i in other.instruments] != [i.symbol for i in market.instruments]


def test_a_date_keeps_its_bars_and_actions_as_the_calendar_advances() -> None:
    """The market as of two "today"s agrees on every date both have (a test that passed on
    one day and failed on the next, with the same code, was this not holding)."""
    early = SimulatedMarket(seed=7, universe_size=12, as_of="2024-03-01")
    late = SimulatedMarket(seed=7, universe_size=12, as_of="2026-12-04")
    common = early.sessions[-1]
    assert late.sessions.head(len(early.sessions)).equals(early.sessions)
    for sym in early.symbols(common):
        for tf in ("1d", "1w"):
            a = early.bars(sym, "2010-01-01", common, tf)
            b = late.bars(sym, "2010-01-01", common, tf)
            assert a.height > 0 and a.equals(b), (sym, tf)
    assert early.minutes(sym, common, common).equals(late.minutes(sym, common, common))
    before = late.actions().filter(pl.col("ex_date") <= common)
    assert early.actions().equals(before)
    splits = before.filter(pl.col("action_type") == "split")
    assert splits.height >= 3  # the dated story (reverse and forward splits) and random ones
    assert late.actions().filter(pl.col("ex_date") > common).height > 0  # later ones do come
    rows = early.regimes().height
    assert early.regimes().equals(late.regimes().head(rows))


def test_tickers_are_fictional_six_letter_and_unique(market: SimulatedMarket) -> None:
    tickers = market.ticker_history()["symbol"].to_list()
    assert len(tickers) == len(set(tickers)) == market.universe_size + 1  # one rename
    assert all(re.fullmatch(r"[A-Z]{6}", t) for t in tickers)


def test_daily_bars_follow_the_xnys_calendar_and_stop_before_as_of(
    market: SimulatedMarket,
) -> None:
    sym = _ordinary(market)
    bars = market.daily(sym, "2024-06-01", "2026-12-31")
    days = bars["ts"].dt.date()
    expected = get_calendar("XNYS").sessions("2024-06-01", "2026-11-20")
    assert days.to_list() == expected.to_list()
    assert date(2024, 7, 4) not in days.to_list()
    assert days.max() == date(2026, 11, 20)
    assert (bars["ts"].dt.hour() == 0).all()


def test_daily_bars_are_consistent_and_fit_the_canonical_schema(market: SimulatedMarket) -> None:
    frames = [market.daily(s, "2010-01-01", "2026-11-20") for s in market.symbols("2020-01-02")]
    bars = coerce_bars(pl.concat(frames))
    assert bars.height > 10 * 4000
    assert (bars["low"] <= np.minimum(bars["open"], bars["close"])).all()
    assert (bars["high"] >= np.maximum(bars["open"], bars["close"])).all()
    assert (bars["low"] > 0).all()
    assert (bars["volume"] > 0).all()
    assert not bars.select("symbol", "ts").is_duplicated().any()


def test_returns_are_fat_tailed_with_volatility_clusters(market: SimulatedMarket) -> None:
    rets = []
    for sym in market.symbols("2026-11-20"):
        close = market.daily(sym, "2010-01-01", "2026-11-20")["close"].to_numpy()
        r = np.diff(np.log(close))
        rets.append(r[np.abs(r) < 0.5])  # leave out split days
    r = np.concatenate(rets)
    excess_kurtosis = ((r - r.mean()) ** 4).mean() / r.var() ** 2 - 3
    assert excess_kurtosis > 1.0
    a = np.abs(rets[0])
    lag1 = np.corrcoef(a[:-1], a[1:])[0, 1]
    assert lag1 > 0.05  # calm and stressed regimes make big moves cluster
    assert set(market.regimes()["regime"].unique().to_list()) == {0, 1}


def test_one_minute_bars_add_up_to_the_daily_bar(market: SimulatedMarket) -> None:
    sym = _ordinary(market)
    minutes = market.bars(sym, "2026-11-16", "2026-11-20", "1m")
    daily = market.daily(sym, "2026-11-16", "2026-11-20")
    rolled = (
        minutes.group_by(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date())
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .sort("ts")
    )
    cols = ["open", "high", "low", "close", "volume"]
    assert rolled.select(cols).equals(daily.select(cols))
    assert minutes.height == 5 * 390
    assert (minutes["low"] <= np.minimum(minutes["open"], minutes["close"])).all()
    assert (minutes["high"] >= np.maximum(minutes["open"], minutes["close"])).all()


def test_intraday_volume_is_u_shaped(market: SimulatedMarket) -> None:
    sym = _ordinary(market)
    minutes = market.bars(sym, "2026-10-01", "2026-10-31", "1m")
    idx = minutes.with_columns(
        k=pl.int_range(pl.len()).over(pl.col("ts").dt.date())
    )  # minute of the session
    edge = idx.filter((pl.col("k") < 30) | (pl.col("k") >= 360))["volume"].mean()
    middle = idx.filter(pl.col("k").is_between(150, 240))["volume"].mean()
    assert edge > 2 * middle  # type: ignore[operator]


def test_early_close_sessions_are_short(market: SimulatedMarket) -> None:
    sym = _ordinary(market)
    day = market.bars(sym, "2025-11-28", "2025-11-28", "1m")  # day after Thanksgiving
    assert day.height == 210
    assert day["ts"].max().hour == 17 and day["ts"].max().minute == 59  # type: ignore[union-attr]


@pytest.mark.parametrize(("timeframe", "per_session"), [("5m", 78), ("15m", 26), ("1h", 7)])
def test_coarser_intraday_bars_aggregate_the_minutes(
    market: SimulatedMarket, timeframe: str, per_session: int
) -> None:
    sym = _ordinary(market)
    coarse = market.bars(sym, "2026-11-19", "2026-11-20", timeframe)
    minutes = market.bars(sym, "2026-11-19", "2026-11-20", "1m")
    assert coarse.height == 2 * per_session
    assert coarse["volume"].sum() == minutes["volume"].sum()
    assert coarse["high"].max() == minutes["high"].max()
    assert (coarse["timeframe"] == timeframe).all()


def test_weekly_and_monthly_bars_are_stamped_at_their_first_session(
    market: SimulatedMarket,
) -> None:
    sym = _ordinary(market)
    daily = market.daily(sym, "2026-01-01", "2026-06-30")
    monthly = market.bars(sym, "2026-01-01", "2026-06-30", "1mo")
    weekly = market.bars(sym, "2026-01-01", "2026-06-30", "1w")
    assert monthly.height == 6
    assert monthly["ts"][0] == daily["ts"][0]  # 2026-01-02, the first session of January
    assert monthly["volume"].sum() == daily["volume"].sum() == weekly["volume"].sum()
    assert monthly["close"][-1] == daily["close"][-1]


def test_scheduled_actions_include_every_kind_once_or_more(market: SimulatedMarket) -> None:
    actions = market.actions()
    counts = dict(actions.group_by("action_type").len().iter_rows())
    assert counts["symbol_change"] == 1
    assert counts["merger"] == 1
    assert counts["delisting"] == 1
    assert counts["special_dividend"] == 1
    assert counts["dividend"] > 100
    splits = actions.filter(pl.col("action_type") == "split")
    assert (splits["ratio"] > 1).any() and (splits["ratio"] < 1).any()  # forward and reverse
    recent = actions.filter(pl.col("action_type").is_in(["symbol_change", "merger"]))
    assert (recent["ex_date"] >= date(2021, 11, 23)).all()  # within the last five years


def test_a_split_divides_the_raw_price_by_its_ratio(market: SimulatedMarket) -> None:
    splits = market.actions().filter(pl.col("action_type") == "split")
    for sym, ex, ratio in splits.select("symbol", "ex_date", "ratio").iter_rows():
        bars = market.daily(sym, "2010-01-01", ex)
        before, on = bars["close"][-2], bars["close"][-1]
        assert 0.75 < before / on / ratio < 1.33, (sym, ex, ratio)


def test_the_renamed_company_answers_to_each_ticker_in_its_own_time(
    market: SimulatedMarket,
) -> None:
    change = market.actions().filter(pl.col("action_type") == "symbol_change").row(0, named=True)
    old, new, day = change["symbol"], change["new_symbol"], change["ex_date"]
    assert market.instrument(old) is market.instrument(new)
    old_bars = market.daily(old, "2010-01-01", "2026-11-20")
    new_bars = market.daily(new, "2010-01-01", "2026-11-20")
    assert old_bars["ts"].dt.date().max() < day == new_bars["ts"].dt.date().min()
    assert old in market.symbols(date(2020, 1, 2)) and new not in market.symbols(date(2020, 1, 2))


def test_the_merged_company_stops_trading_on_its_delisting(market: SimulatedMarket) -> None:
    merger = market.actions().filter(pl.col("action_type") == "merger").row(0, named=True)
    bars = market.daily(merger["symbol"], "2010-01-01", "2026-11-20")
    assert bars["ts"].dt.date().max() < merger["ex_date"]
    assert merger["new_symbol"] in market.symbols()
    assert market.daily(merger["symbol"], merger["ex_date"], "2026-11-20").is_empty()
    history = market.ticker_history().filter(pl.col("symbol") == merger["symbol"])
    assert history["valid_to"][0] == bars["ts"].dt.date().max()


def test_unknown_symbols_raise_symbol_not_found(market: SimulatedMarket) -> None:
    with pytest.raises(SymbolNotFoundError, match="ZZZZZZZ"):
        market.daily("ZZZZZZZ", "2020-01-01", "2020-02-01")


def test_a_universe_needs_two_instruments() -> None:
    with pytest.raises(ValueError, match="at least two"):
        SimulatedMarket(universe_size=1)
