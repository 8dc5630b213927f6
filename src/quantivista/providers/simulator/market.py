"""A deterministic, seeded market model on a real exchange calendar.

Daily closes follow a one-factor model: a market return with two volatility regimes
(a Markov chain: calm and stressed) plus an idiosyncratic Student-t shock per instrument,
so returns have fat tails and volatility clusters. Corporate actions act on the raw close:
splits divide it by the ratio and cash dividends drop it by the dividend on the ex-date.
Intraday bars are drawn on demand per (instrument, session) from their own seed, as a
Brownian bridge from the daily open to the daily close that touches the daily high and
low exactly, with U-shaped volume that sums to the daily volume; coarser intraday and
weekly/monthly bars are aggregated from these, so every timeframe agrees with every other.

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

__all__ = ["HISTORY_START", "SimInstrument", "SimulatedMarket"]

HISTORY_START = date(2010, 1, 4)
_SECTORS = (
    "Technology", "Health Care", "Financials", "Energy", "Industrials",
    "Consumer Staples", "Consumer Discretionary", "Utilities", "Materials", "Real Estate",
)  # fmt: skip
# fixed dates keep the story stable across runs: both lie inside "the last five years"
_SYMBOL_CHANGE_ON = date(2023, 6, 1)
_MERGER_ON = date(2024, 9, 3)
_SPECIAL_DIVIDEND_ON = date(2022, 12, 1)
_STUDENT_DF = 4.0
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
    bars do not exist yet (the market has closed through the day before).
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
        last = min(self.as_of - timedelta(days=1), self.calendar.last_session)
        self.sessions: pl.Series = self.calendar.sessions(HISTORY_START, last)
        self._session_np = self.sessions.to_numpy().astype("datetime64[D]")
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

    # -- daily paths (all instruments at once) --------------------------------------------
    @cached_property
    def _paths(self) -> dict[str, np.ndarray]:
        n_days, n_inst = len(self._session_np), self.universe_size
        rng = np.random.default_rng([self.seed, 2])
        # market regimes: a two-state Markov chain (calm, stressed)
        switch = rng.random(n_days)
        regime = np.zeros(n_days, dtype=np.int8)
        for t in range(1, n_days):  # a scalar chain: one pass over days, not over rows
            prev = regime[t - 1]
            regime[t] = (
                (1 if switch[t] < 0.012 else 0) if prev == 0 else (0 if switch[t] < 0.06 else 1)
            )
        vol_mult = np.where(regime == 1, 2.3, 0.85)
        scale = np.sqrt((_STUDENT_DF - 2) / _STUDENT_DF)
        market = 0.0003 + 0.009 * vol_mult * rng.standard_t(_STUDENT_DF, n_days) * scale
        beta = rng.uniform(0.6, 1.5, n_inst)
        idio = rng.uniform(0.008, 0.022, n_inst)
        drift = rng.normal(0.0002, 0.0003, n_inst)
        shocks = rng.standard_t(_STUDENT_DF, (n_days, n_inst)) * scale
        log_ret = drift + beta * market[:, None] + idio * vol_mult[:, None] * shocks
        log_ret[0] = 0.0
        start_price = np.exp(rng.uniform(np.log(8.0), np.log(400.0), n_inst))

        split_ratio = np.ones((n_days, n_inst))
        div_yield = np.zeros((n_days, n_inst))
        self._schedule_actions(rng, split_ratio, div_yield)
        close = start_price * np.exp(np.cumsum(log_ret, axis=0))
        close = close * np.cumprod((1.0 - div_yield) / split_ratio, axis=0)
        close = np.round(np.maximum(close, 0.05), 2)
        prev_close = np.vstack([close[:1], close[:-1]])
        # the dividend paid is the part of the pre-ex-date value the close gave up
        pre_ex = prev_close * np.exp(log_ret) / split_ratio
        dividends = np.round(pre_ex * div_yield, 4)
        gap = np.exp(rng.normal(0.0, 0.004, (n_days, n_inst)) * vol_mult[:, None])
        open_ = np.where(np.arange(n_days)[:, None] == 0, close, prev_close / split_ratio * gap)
        open_ = np.round(np.maximum(open_ - dividends, 0.05), 2)
        span = idio * vol_mult[:, None] * 0.8
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, (n_days, n_inst))) * span)
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, (n_days, n_inst))) * span)
        high = np.maximum(np.round(high, 2), np.maximum(open_, close))
        low = np.minimum(np.maximum(np.round(low, 2), 0.01), np.minimum(open_, close))
        adv = np.exp(rng.uniform(np.log(2e5), np.log(2e7), n_inst))
        volume = np.round(
            adv
            * np.exp(rng.normal(0, 0.35, (n_days, n_inst)) + 1.5 * np.abs(log_ret) / idio * 0.1)
            * np.cumprod(split_ratio, axis=0)
        )
        return {
            "open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "split": split_ratio, "dividend": dividends, "regime": regime,
        }  # fmt: skip

    def _schedule_actions(
        self, rng: np.random.Generator, split_ratio: np.ndarray, div_yield: np.ndarray
    ) -> None:
        n_days = split_ratio.shape[0]
        months = self.sessions.dt.month().to_numpy()
        days = self.sessions.dt.day().to_numpy()
        # quarterly dividends for about half the universe: first session on/after the 10th
        quarter_start = np.isin(months, (2, 5, 8, 11)) & (days >= 10)
        first_in_month = quarter_start & ~np.concatenate([[False], quarter_start[:-1]])
        ex_days = np.flatnonzero(first_in_month)
        payers = np.flatnonzero(rng.random(self.universe_size) < 0.5)
        for i in payers:
            div_yield[ex_days, i] = rng.uniform(0.002, 0.009)
        # forward splits for a few names, a reverse split for one
        for i in np.flatnonzero(rng.random(self.universe_size) < 0.15):
            t = int(rng.integers(n_days // 10, n_days - 5))
            split_ratio[t, i] = float(rng.choice([2.0, 3.0, 4.0, 1.5]))
        if n_days > 20:
            split_ratio[n_days * 2 // 3, self.universe_size - 1] = 0.1  # 1-for-10 reverse split
        special = self._session_on_or_after(_SPECIAL_DIVIDEND_ON)
        if special is not None:
            t = int(np.searchsorted(self._session_np, np.datetime64(special, "D")))
            div_yield[t, 0] = 0.05  # a 5% special dividend (instrument 0 is also the acquirer)

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
        p, i = self._paths, inst.index
        o, h, lw, c, v = (p[k][lo:hi, i] for k in ("open", "high", "low", "close", "volume"))
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
        p = self._paths
        special = self._session_on_or_after(_SPECIAL_DIVIDEND_ON)
        frames: list[pl.DataFrame] = []
        for inst in insts:
            i = inst.index
            rows: list[dict[str, object]] = []
            lo, hi = 0, len(self._session_np)
            if inst.delisted_on is not None:
                hi = self._index_of(inst.delisted_on)
            for t in np.flatnonzero(p["split"][lo:hi, i] != 1.0):
                rows.append(
                    {
                        "action_type": "split",
                        "ex_date": self.sessions[int(t)],
                        "ratio": float(p["split"][t, i]),
                    }
                )
            for t in np.flatnonzero(p["dividend"][lo:hi, i] > 0):
                d = self.sessions[int(t)]
                kind = "special_dividend" if (i, d) == (0, special) else "dividend"
                rows.append(
                    {
                        "action_type": kind,
                        "ex_date": d,
                        "amount": float(p["dividend"][t, i]),
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
                        "amount": float(p["close"][hi - 1, i]),
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
        return pl.DataFrame({"session": self.sessions, "regime": self._paths["regime"]})


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
