"""A deterministic, seeded market model on a real exchange calendar.

Daily closes follow a one-factor model: a market return with two volatility regimes
(a Markov chain: calm and stressed) plus an idiosyncratic Student-t shock per instrument,
so returns have fat tails and volatility clusters. Corporate actions act on the raw close:
splits divide it by the ratio and cash dividends drop it by the dividend on the ex-date.
Intraday bars are drawn on demand per (instrument, session) from their own seed, as a
Brownian bridge from the daily open to the daily close that touches the daily high and
low exactly, with U-shaped volume that sums to the daily volume; coarser intraday and
weekly/monthly bars are aggregated from these, so every timeframe agrees with every other.

The market does not move with the calendar: each instrument draws from its own stream, one
value per calendar day of a fixed grid (`HISTORY_START`..`HISTORY_END`), and `as_of` only
cuts the sessions. A date's bars and actions are the same whichever day the market is built
on; only sessions (and actions) after the old `as_of` are added.

Tickers are six letters, which no US listing uses: they cannot be mistaken for real ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import numpy as np
import polars as pl

from quantivista.errors import SymbolNotFoundError
from quantivista.model.schema import ACTION_POLARS_SCHEMA, BAR_COLUMNS, BAR_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.timeutil import DateLike, to_date

__all__ = ["HISTORY_END", "HISTORY_START", "SimInstrument", "SimulatedMarket"]

HISTORY_START = date(2010, 1, 4)
# the paths are drawn on every calendar day of [HISTORY_START, HISTORY_END] and cut at `as_of`,
# so a date's bars and actions stay the same as the calendar advances
HISTORY_END = date(2045, 12, 31)
_GRID_DAYS = (HISTORY_END - HISTORY_START).days + 1
_SECTORS = (
    "Technology", "Health Care", "Financials", "Energy", "Industrials",
    "Consumer Staples", "Consumer Discretionary", "Utilities", "Materials", "Real Estate",
)  # fmt: skip
# fixed dates keep the story stable across runs and days (the paths are cut at `as_of`)
_SYMBOL_CHANGE_ON = date(2023, 6, 1)
_MERGER_ON = date(2024, 9, 3)
_SPECIAL_DIVIDEND_ON = date(2022, 12, 1)
_REVERSE_SPLIT_ON = date(2021, 3, 1)
_FORWARD_SPLIT_ON = date(2021, 11, 9)
_STUDENT_DF = 4.0
_T_SCALE = float(np.sqrt((_STUDENT_DF - 2) / _STUDENT_DF))  # Student-t draws with variance 1
_SPLIT_CHANCE_PER_YEAR = 0.012
_PROVIDER = "synthetic"


@dataclass(frozen=True, slots=True)
class SimInstrument:
    """One simulated company: an id that never changes and the tickers it traded under."""

    index: int
    instrument_id: str
    name: str
    sector: str
    symbol: str  # the ticker it trades under today (or last traded under)
    former_symbol: str | None
    renamed_on: date | None
    delisted_on: date | None  # first session it no longer trades
    acquirer: str | None


def _ticker(rng: np.random.Generator) -> str:
    letters = rng.integers(0, 26, size=6)
    return "".join(chr(65 + int(x)) for x in letters)


class SimulatedMarket:
    """The market behind the `synthetic` provider and the provider simulator.

    Everything is derived from `seed` and `universe_size`; `as_of` is the first date whose
    bars do not exist yet (the market has closed through the day before), and changes only
    how much of the (fixed) history is visible.
    """

    def __init__(
        self,
        seed: int = 42,
        universe_size: int = 60,
        *,
        calendar: str = "XNYS",
        as_of: DateLike | None = None,
    ) -> None:
        if universe_size < 2:
            raise ValueError("a simulated universe needs at least two instruments")
        self.seed = seed
        self.universe_size = universe_size
        self.calendar: TradingCalendar = get_calendar(calendar)
        self.as_of = to_date(as_of) if as_of is not None else datetime.now(UTC).date()
        last = min(self.as_of - timedelta(days=1), self.calendar.last_session, HISTORY_END)
        self.sessions: pl.Series = self.calendar.sessions(HISTORY_START, last)
        self._session_np = self.sessions.to_numpy().astype("datetime64[D]")
        self._paths: dict[int, dict[str, np.ndarray]] = {}
        self.instruments: list[SimInstrument] = self._make_instruments()
        self._by_symbol: dict[str, SimInstrument] = {}
        for inst in self.instruments:
            self._by_symbol[inst.symbol] = inst
            if inst.former_symbol:
                self._by_symbol[inst.former_symbol] = inst

    # -- the universe --------------------------------------------------------------------
    def _make_instruments(self) -> list[SimInstrument]:
        rng = np.random.default_rng([self.seed, 1])
        seen: set[str] = set()
        tickers: list[str] = []
        while len(tickers) < self.universe_size + 1:  # one spare for the renamed company
            t = _ticker(rng)
            if t not in seen:
                seen.add(t)
                tickers.append(t)
        renamed, merged, acquirer = 1, 2, 0
        out = []
        for i in range(self.universe_size):
            sector = _SECTORS[int(rng.integers(0, len(_SECTORS)))]
            name = f"{tickers[i].title()} {('Holdings', 'Corp', 'Group', 'Systems')[i % 4]}"
            out.append(
                SimInstrument(
                    index=i,
                    instrument_id=f"SIM{i:05d}",
                    name=name,
                    sector=sector,
                    symbol=tickers[self.universe_size] if i == renamed else tickers[i],
                    former_symbol=tickers[i] if i == renamed else None,
                    renamed_on=self._session_on_or_after(_SYMBOL_CHANGE_ON)
                    if i == renamed
                    else None,
                    delisted_on=self._session_on_or_after(_MERGER_ON) if i == merged else None,
                    acquirer=tickers[acquirer] if i == merged else None,
                )
            )
        return out

    def _session_on_or_after(self, day: date) -> date | None:
        idx = int(np.searchsorted(self._session_np, np.datetime64(day, "D")))
        return None if idx >= len(self._session_np) else self.sessions[idx]

    def instrument(self, symbol: str) -> SimInstrument:
        """Return the instrument that traded (or trades) under `symbol`."""
        try:
            return self._by_symbol[symbol.upper()]
        except KeyError:
            raise SymbolNotFoundError(
                f"unknown simulated symbol {symbol!r}", provider=_PROVIDER, symbol=symbol
            ) from None

    def ticker_history(self) -> pl.DataFrame:
        """Return (instrument_id, symbol, valid_from, valid_to) with inclusive bounds."""
        rows: list[dict[str, object]] = []
        first = self.sessions[0]
        for inst in self.instruments:
            last_day = self._previous_session(inst.delisted_on) if inst.delisted_on else None
            if inst.former_symbol and inst.renamed_on:
                rows.append(
                    {
                        "instrument_id": inst.instrument_id,
                        "symbol": inst.former_symbol,
                        "valid_from": first,
                        "valid_to": self._previous_session(inst.renamed_on),
                    }
                )
                rows.append(
                    {
                        "instrument_id": inst.instrument_id,
                        "symbol": inst.symbol,
                        "valid_from": inst.renamed_on,
                        "valid_to": last_day,
                    }
                )
            else:
                rows.append(
                    {
                        "instrument_id": inst.instrument_id,
                        "symbol": inst.symbol,
                        "valid_from": first,
                        "valid_to": last_day,
                    }
                )
        return pl.DataFrame(
            rows,
            schema={
                "instrument_id": pl.String,
                "symbol": pl.String,
                "valid_from": pl.Date,
                "valid_to": pl.Date,
            },
        )

    def symbols(self, on: DateLike | None = None) -> list[str]:
        """Return the tickers trading on `on` (default: the last simulated session)."""
        day = to_date(on) if on is not None else self.sessions[-1]
        hist = self.ticker_history().filter(
            (pl.col("valid_from") <= day)
            & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= day))
        )
        return hist["symbol"].to_list()

    def _previous_session(self, day: date) -> date:
        idx = int(np.searchsorted(self._session_np, np.datetime64(day, "D"))) - 1
        previous: date = self.sessions[max(idx, 0)]
        return previous

    # -- daily paths (one instrument at a time, on a fixed calendar-day grid) ----------------
    @cached_property
    def _market(self) -> dict[str, np.ndarray]:
        """Return the market factor on the grid (every calendar day from `HISTORY_START` to
        `HISTORY_END`) and the regime of each session. Nothing here depends on `as_of` or on
        the trading calendar, so a day's draw never moves when sessions are added."""
        rng = np.random.default_rng([self.seed, 2])
        weekday = (np.arange(_GRID_DAYS) + HISTORY_START.weekday()) % 7 < 5
        # market regimes: a two-state Markov chain (calm, stressed) that moves on weekdays
        switch = np.where(weekday, rng.random(_GRID_DAYS), 1.0)
        regime = np.zeros(_GRID_DAYS, dtype=np.int8)
        for t in range(1, _GRID_DAYS):  # a scalar chain: one pass over days, not over rows
            prev = regime[t - 1]
            regime[t] = (
                (1 if switch[t] < 0.012 else 0) if prev == 0 else (0 if switch[t] < 0.06 else 1)
            )
        vol_mult = np.where(regime == 1, 2.3, 0.85)
        shock = rng.standard_t(_STUDENT_DF, _GRID_DAYS) * _T_SCALE
        market = np.where(weekday, 0.0003 + 0.009 * vol_mult * shock, 0.0)
        return {"weekday": weekday, "vol_mult": vol_mult, "market": market, "regime": regime}

    def _path(self, i: int) -> dict[str, np.ndarray]:
        """Return instrument `i`'s daily bars and actions over `self.sessions` (cached).

        The instrument draws from its own stream, one value per grid day, and a session's
        return is the sum of the weekday returns since the session before; so its bars on a
        date depend only on that date and the days before it, never on `as_of`.
        """
        found = self._paths.get(i)
        if found is not None:
            return found
        m = self._market
        rng = np.random.default_rng([self.seed, 3, i])
        beta, idio = rng.uniform(0.6, 1.5), rng.uniform(0.008, 0.022)
        drift, start_price = rng.normal(0.0002, 0.0003), np.exp(rng.uniform(np.log(8), np.log(400)))
        adv = np.exp(rng.uniform(np.log(2e5), np.log(2e7)))
        shocks = rng.standard_t(_STUDENT_DF, _GRID_DAYS) * _T_SCALE
        gap_z, high_z, low_z, volume_z = rng.normal(0.0, 1.0, (4, _GRID_DAYS))
        split_ratio, div_yield = self._schedule_actions(rng, i)
        row = self._grid_rows
        daily = np.where(
            m["weekday"], drift + beta * m["market"] + idio * m["vol_mult"] * shocks, 0.0
        )
        cum = np.cumsum(daily)[row]
        log_ret = np.diff(cum, prepend=cum[:1])  # the first session has no return
        vol_mult = m["vol_mult"][row]
        close = start_price * np.exp(np.cumsum(log_ret))
        close = close * np.cumprod((1.0 - div_yield) / split_ratio)
        close = np.round(np.maximum(close, 0.05), 2)
        prev_close = np.concatenate([close[:1], close[:-1]])
        # the dividend paid is the part of the pre-ex-date value the close gave up
        pre_ex = prev_close * np.exp(log_ret) / split_ratio
        dividends = np.round(pre_ex * div_yield, 4)
        gap = np.exp(gap_z[row] * 0.004 * vol_mult)
        first = np.arange(len(row)) == 0
        open_ = np.where(first, close, prev_close / split_ratio * gap)
        open_ = np.round(np.maximum(open_ - dividends, 0.05), 2)
        span = idio * vol_mult * 0.8
        high = np.maximum(open_, close) * np.exp(np.abs(high_z[row]) * span)
        low = np.minimum(open_, close) * np.exp(-np.abs(low_z[row]) * span)
        high = np.maximum(np.round(high, 2), np.maximum(open_, close))
        low = np.minimum(np.maximum(np.round(low, 2), 0.01), np.minimum(open_, close))
        volume = np.round(
            adv
            * np.exp(volume_z[row] * 0.35 + 1.5 * np.abs(log_ret) / idio * 0.1)
            * np.cumprod(split_ratio)
        )
        path = {
            "open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "split": split_ratio, "dividend": dividends,
        }  # fmt: skip
        return self._paths.setdefault(i, path)

    @cached_property
    def _grid_rows(self) -> np.ndarray:
        """Return each session's row on the calendar-day grid."""
        start = np.datetime64(HISTORY_START, "D")
        return (self._session_np - start).astype(np.int64)

    def _schedule_actions(self, rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Return instrument `i`'s split ratio and dividend yield per session.

        Draws a fixed number of values (one split chance per year of the grid), whatever the
        number of sessions, and places each event on the first session on or after its date.
        """
        n_days = len(self._session_np)
        split_ratio, div_yield = np.ones(n_days), np.zeros(n_days)
        pays, div = rng.random() < 0.5, rng.uniform(0.002, 0.009)
        years = np.arange(HISTORY_START.year + 1, HISTORY_END.year + 1)
        chance, day_of_year = rng.random(len(years)), rng.integers(0, 365, len(years))
        ratio = rng.choice([2.0, 3.0, 4.0, 1.5], len(years))
        # quarterly dividends for about half the universe: first session on/after the 10th
        if pays:
            months = self.sessions.dt.month().to_numpy()
            days = self.sessions.dt.day().to_numpy()
            quarter_start = np.isin(months, (2, 5, 8, 11)) & (days >= 10)
            first_in_month = quarter_start & ~np.concatenate([[False], quarter_start[:-1]])
            div_yield[first_in_month] = div
        # forward splits: about one name in eighty splits in a given year
        hits = chance < _SPLIT_CHANCE_PER_YEAR
        first_day = (years[hits] - 1970).astype("datetime64[Y]").astype("datetime64[D]")
        on = first_day + day_of_year[hits]
        at = np.searchsorted(self._session_np, on)
        split_ratio[at[at < n_days]] = ratio[hits][at < n_days]
        story = self._index_of(_FORWARD_SPLIT_ON)
        if i == 3 and i != self.universe_size - 1 and story < n_days:
            split_ratio[story] = 2.0  # one 2-for-1 split every universe of five or more has
        if i == self.universe_size - 1:  # a 1-for-10 reverse split
            t = self._index_of(_REVERSE_SPLIT_ON)
            if t < n_days:
                split_ratio[t] = 0.1
        special = self._index_of(_SPECIAL_DIVIDEND_ON)
        if i == 0 and special < n_days:
            div_yield[special] = 0.05  # a 5% special dividend (instrument 0 is also the acquirer)
        return split_ratio, div_yield

    def _index_of(self, day: date) -> int:
        """Return the index of the first session on or after `day`."""
        return int(np.searchsorted(self._session_np, np.datetime64(day, "D")))

    def _slice(self, inst: SimInstrument, symbol: str) -> tuple[int, int]:
        """Return the session index range [lo, hi) in which `symbol` means `inst`."""
        lo, hi = 0, len(self._session_np)
        if inst.delisted_on is not None:
            hi = self._index_of(inst.delisted_on)
        if inst.renamed_on is not None:
            cut = int(np.searchsorted(self._session_np, np.datetime64(inst.renamed_on, "D")))
            if symbol.upper() == inst.former_symbol:
                hi = min(hi, cut)
            else:
                lo = cut
        return lo, hi

    def daily(self, symbol: str, start: DateLike, end: DateLike) -> pl.DataFrame:
        """Return raw daily bars of `symbol` for sessions in `[start, end]`."""
        inst = self.instrument(symbol)
        lo, hi = self._slice(inst, symbol)
        s = np.datetime64(to_date(start), "D")
        e = np.datetime64(to_date(end), "D")
        lo = max(lo, int(np.searchsorted(self._session_np, s)))
        hi = min(hi, int(np.searchsorted(self._session_np, e, side="right")))
        if hi <= lo:
            return _empty_bars()
        p = self._path(inst.index)
        o, h, lw, c, v = (p[k][lo:hi] for k in ("open", "high", "low", "close", "volume"))
        return pl.DataFrame(
            {
                "symbol": symbol.upper(),
                "timeframe": "1d",
                "ts": pl.Series(self._session_np[lo:hi]).cast(pl.Datetime("us")),
                "open": o,
                "high": h,
                "low": lw,
                "close": c,
                "volume": v,
                "vwap": np.round((h + lw + 2 * c) / 4, 4),
                "trades": (v / 120).astype(np.int64) + 1,
                "provider": _PROVIDER,
            }
        ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))

    # -- intraday bars (drawn per session, on demand) -------------------------------------
    def minutes(self, symbol: str, start: DateLike, end: DateLike) -> pl.DataFrame:
        """Return 1-minute bars of `symbol` for sessions in `[start, end]`."""
        day = self.daily(symbol, start, end)
        if day.is_empty():
            return _empty_bars()
        inst = self.instrument(symbol)
        table = self.calendar.session_table(start, end).filter(
            pl.col("session").is_in(day["ts"].dt.date().implode())
        )
        frames = []
        for row, (opens, n_min) in enumerate(zip(table["open"], table["minutes"], strict=True)):
            frames.append(self._session_minutes(inst, day.row(row, named=True), opens, int(n_min)))
        return pl.concat(frames).with_columns(symbol=pl.lit(symbol.upper()))

    def _session_minutes(
        self, inst: SimInstrument, bar: dict[str, object], opens: datetime, n: int
    ) -> pl.DataFrame:
        ts0: datetime = bar["ts"]  # type: ignore[assignment]
        digest = hashlib.blake2b(f"{self.seed}|{inst.index}|{ts0:%Y%m%d}".encode(), digest_size=8)
        rng = np.random.default_rng(int.from_bytes(digest.digest(), "little"))
        o, h, lo, c = (float(bar[k]) for k in ("open", "high", "low", "close"))  # type: ignore[arg-type]
        vol = float(bar["volume"])  # type: ignore[arg-type]
        # Brownian bridge in log price from open to close over n steps
        steps = rng.standard_t(_STUDENT_DF, n)
        walk = np.concatenate([[0.0], np.cumsum(steps)])
        k = np.arange(n + 1) / n
        bridge = walk - k * walk[-1]
        lo_log, hi_log, o_log, c_log = np.log(lo), np.log(h), np.log(o), np.log(c)
        path = o_log + k * (c_log - o_log) + bridge * 1e-3
        path[0], path[-1] = o_log, c_log
        path = _stretch(path, lo_log, hi_log, rng)
        prices = np.round(np.exp(path), 2)
        prices[0], prices[-1] = o, c
        m_open, m_close = prices[:-1], prices[1:]
        wiggle = np.abs(rng.normal(0, 0.0004, n))
        m_high = np.minimum(np.maximum(m_open, m_close) * (1 + wiggle), h)
        m_low = np.maximum(np.minimum(m_open, m_close) * (1 - wiggle[::-1]), lo)
        m_high = np.maximum(np.round(m_high, 2), np.maximum(m_open, m_close))
        m_low = np.minimum(np.round(m_low, 2), np.minimum(m_open, m_close))
        # U-shaped volume: heavy at the open and the close, integers summing to the day
        x = (np.arange(n) + 0.5) / n
        weight = (1.0 + 6.0 * (x - 0.5) ** 2 * 4) * np.exp(rng.normal(0, 0.3, n))
        weight[-1] *= 3.0  # the closing auction
        raw = vol * weight / weight.sum()
        m_vol = np.floor(raw)
        m_vol[-1] += vol - m_vol.sum()
        start_us = int(opens.timestamp() * 1_000_000)
        ts = start_us + np.arange(n, dtype=np.int64) * 60_000_000
        return pl.DataFrame(
            {
                "symbol": "",
                "timeframe": "1m",
                "ts": pl.Series(ts).cast(pl.Datetime("us")),
                "open": m_open,
                "high": m_high,
                "low": m_low,
                "close": m_close,
                "volume": m_vol,
                "vwap": np.round((m_high + m_low + 2 * m_close) / 4, 4),
                "trades": (m_vol / 50).astype(np.int64) + 1,
                "provider": _PROVIDER,
            }
        ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))

    def bars(
        self, symbol: str, start: DateLike, end: DateLike, timeframe: TimeframeLike = "1d"
    ) -> pl.DataFrame:
        """Return bars of any supported timeframe for sessions in `[start, end]`.

        Intraday bars tile each session from its open (the last bar of a session can be
        short); weekly and monthly bars are stamped at their first session.
        """
        tf = Timeframe.parse(timeframe)
        text = str(tf)
        if text == "1d":
            return self.daily(symbol, start, end)
        if text == "1m":
            return self.minutes(symbol, start, end)
        if tf.is_intraday:
            base = self.minutes(symbol, start, end)
            if base.is_empty():
                return base
            step = tf.seconds
            assert step is not None
            session = self.calendar.session_of(pl.col("ts"))
            opens = self.calendar.schedule.select(
                pl.col("session").alias("_session"), pl.col("open").alias("_open")
            )
            grouped = (
                base.with_columns(_session=session)
                .join(opens, on="_session", how="left")
                .with_columns(
                    _bucket=pl.col("_open")
                    + pl.duration(
                        seconds=((pl.col("ts") - pl.col("_open")).dt.total_seconds() // step) * step
                    )
                )
            )
            return _aggregate(grouped, "_bucket", text)
        if text in ("1w", "1mo"):
            base = self.daily(symbol, start, end)
            if base.is_empty():
                return base
            every = "1w" if text == "1w" else "1mo"
            grouped = base.with_columns(_bucket=pl.col("ts").dt.truncate(every))
            out = _aggregate(grouped, "_bucket", text, stamp_first=True)
            return out
        raise ValueError(f"the simulated market has no {text} bars")

    def actions(self, symbol: str | None = None) -> pl.DataFrame:
        """Return the corporate actions of one instrument (by any of its tickers) or all."""
        insts = [self.instrument(symbol)] if symbol else self.instruments
        special = self._session_on_or_after(_SPECIAL_DIVIDEND_ON)
        frames: list[pl.DataFrame] = []
        for inst in insts:
            i, p = inst.index, self._path(inst.index)
            rows: list[dict[str, object]] = []
            lo, hi = 0, len(self._session_np)
            if inst.delisted_on is not None:
                hi = self._index_of(inst.delisted_on)
            for t in np.flatnonzero(p["split"][lo:hi] != 1.0):
                rows.append(
                    {
                        "action_type": "split",
                        "ex_date": self.sessions[int(t)],
                        "ratio": float(p["split"][t]),
                    }
                )
            for t in np.flatnonzero(p["dividend"][lo:hi] > 0):
                d = self.sessions[int(t)]
                kind = "special_dividend" if (i, d) == (0, special) else "dividend"
                rows.append(
                    {
                        "action_type": kind,
                        "ex_date": d,
                        "amount": float(p["dividend"][t]),
                        "currency": "USD",
                    }
                )
            if inst.renamed_on is not None and inst.renamed_on < self.as_of:
                rows.append(
                    {
                        "action_type": "symbol_change",
                        "ex_date": inst.renamed_on,
                        "new_symbol": inst.symbol,
                    }
                )
            if inst.delisted_on is not None and inst.delisted_on < self.as_of:
                rows.append(
                    {
                        "action_type": "merger",
                        "ex_date": inst.delisted_on,
                        "new_symbol": inst.acquirer,
                        "amount": float(p["close"][hi - 1]),
                        "currency": "USD",
                    }
                )
                rows.append({"action_type": "delisting", "ex_date": inst.delisted_on})
            if not rows:
                continue
            df = pl.DataFrame(rows, schema_overrides={"ex_date": pl.Date}, strict=False)
            df = df.with_columns(
                # the ticker in use on the ex-date; a rename is filed under the old ticker
                symbol=pl.when(
                    pl.lit(inst.renamed_on is not None)
                    & (
                        (pl.col("ex_date") < pl.lit(inst.renamed_on or date.max))
                        | (pl.col("action_type") == "symbol_change")
                    )
                )
                .then(pl.lit(inst.former_symbol))
                .otherwise(pl.lit(inst.symbol)),
                provider=pl.lit(_PROVIDER),
            )
            frames.append(_with_action_schema(df))
        if not frames:
            return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)
        return pl.concat(frames).sort("symbol", "ex_date", "action_type")

    def regimes(self) -> pl.DataFrame:
        """Return the market regime of each session (0 calm, 1 stressed)."""
        return pl.DataFrame(
            {"session": self.sessions, "regime": self._market["regime"][self._grid_rows]}
        )


def _stretch(path: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Map path values monotonically so the path's extremes become exactly `lo` and `hi`.

    Values between the endpoints stay put; the excursions above the higher endpoint are
    scaled to reach `hi`, those below the lower one to reach `lo`.
    """
    top, bottom = max(path[0], path[-1]), min(path[0], path[-1])
    out = path.copy()
    interior = np.arange(1, len(path) - 1)
    for bound, edge, sign in ((hi, top, 1.0), (lo, bottom, -1.0)):
        if abs(bound - edge) < 1e-12 or len(interior) == 0:
            continue
        excursion = sign * (path - edge)
        peak = excursion.max()
        if peak <= 1e-12:  # the bridge never left the endpoints on this side: make it touch
            k = int(rng.choice(interior))
            out[k] = bound
            continue
        mask = excursion > 0
        out[mask] = edge + sign * excursion[mask] / peak * abs(bound - edge)
    return out


def _aggregate(
    grouped: pl.DataFrame, bucket: str, timeframe: str, *, stamp_first: bool = False
) -> pl.DataFrame:
    ts = pl.col("ts").first() if stamp_first else pl.col(bucket).first()
    return (
        grouped.group_by(bucket, maintain_order=True)
        .agg(
            pl.col("symbol").first(),
            ts.alias("ts"),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            ((pl.col("vwap") * pl.col("volume")).sum() / pl.col("volume").sum())
            .round(4)
            .alias("vwap"),
            pl.col("trades").sum(),
            pl.col("provider").first(),
        )
        .with_columns(timeframe=pl.lit(timeframe))
        .select(_BAR_OUT)
    )


# the canonical columns a vendor can know: quality flags and lineage are ours to add
_BAR_OUT = [c for c in BAR_COLUMNS if c not in ("quality_flags", "ingested_at", "job_id")]


def _empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema={k: BAR_POLARS_SCHEMA[k] for k in _BAR_OUT})


def _with_action_schema(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in ACTION_POLARS_SCHEMA.items()
    )
