"""What every vendor format shares: requests, replies, the bar feed and price adjustment.

A format module turns a `SimRequest` plus the `Feed` into a `Reply` with pure functions;
the server owns sockets, faults and counters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from quantivista.config import ProviderFaultSettings, RateWindow
from quantivista.model.timeframe import TimeframeLike
from quantivista.providers.simulator.market import HISTORY_START, SimulatedMarket

__all__ = [
    "EASTERN",
    "Feed",
    "Reply",
    "SimRequest",
    "VendorFormat",
    "json_reply",
    "text_reply",
]

EASTERN = "America/New_York"
EASTERN_TZ = ZoneInfo(EASTERN)


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One vendor call as the formats see it (no sockets, no framework types)."""

    provider: str
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    base_url: str  # http://host:port/<provider>, without a trailing slash


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, body bytes, media type and extra headers."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(obj: Any, status: int = 200, *, indent: int | None = None) -> Reply:
    """Return `obj` as a JSON reply (compact unless `indent`)."""
    sep = (",", ": ") if indent else (",", ":")
    text = json.dumps(obj, indent=indent, separators=sep, allow_nan=False)
    return Reply(status, text.encode(), "application/json;charset=utf-8")


def text_reply(text: str, status: int = 200, media_type: str = "text/plain") -> Reply:
    """Return a plain-text reply."""
    return Reply(status, text.encode(), f"{media_type};charset=utf-8")


Handler = Callable[[SimRequest, "Feed"], Reply]


@dataclass(frozen=True, slots=True)
class VendorFormat:
    """One vendor: its routes and how it says 'rate limited', 'error' and 'down'."""

    name: str
    routes: tuple[tuple[str, Handler], ...]
    rate_limited: Callable[[RateWindow, int], Reply]
    error_body: Callable[[SimRequest, np.random.Generator], Reply]

    def server_error(self, status: int) -> Reply:
        """Return the 5xx a proxy in front of the vendor would send."""
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        return text_reply(f"{status} {reason.get(status, 'Server Error')}", status)


def _mix(values: np.ndarray, salt: int) -> np.ndarray:
    """Return a uniform in [0, 1) per value (splitmix64: stable, vectorized, no RNG state)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(salt) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def stable_salt(*parts: object) -> int:
    """Return a 63-bit integer derived from `parts` (the same on every run and platform)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Feed:
    """The market as one provider serves it: raw bars with that provider's bar faults."""

    def __init__(
        self,
        market: SimulatedMarket,
        provider: str,
        faults: ProviderFaultSettings,
        on_fault: Callable[[str, int], None],
    ) -> None:
        self.market = market
        self.provider = provider
        self.faults = faults
        self._on_fault = on_fault

    @property
    def last_session(self) -> date:
        """Return the last session the market has closed."""
        last: date = self.market.sessions[-1]
        return last

    def knows(self, symbol: str) -> bool:
        """Say whether the market ever listed `symbol`."""
        return symbol.upper() in self.market._by_symbol

    def bars(
        self, symbol: str, start: date, end: date, timeframe: TimeframeLike = "1d"
    ) -> pl.DataFrame:
        """Return raw bars in [start, end] with this provider's outliers and gaps."""
        start = max(start, self.market.sessions[0])
        end = min(end, self.last_session)
        if end < start:
            return self.market.bars(symbol, self.last_session, self.last_session).clear()
        df = self.market.bars(symbol, start, end, timeframe)
        f = self.faults
        if df.is_empty() or (f.outlier_rate == 0 and f.missing_bar_rate == 0):
            return df
        salt = stable_salt(self.provider, symbol.upper(), str(timeframe))
        ts = df["ts"].dt.epoch("s").to_numpy()
        miss = _mix(ts, salt) < f.missing_bar_rate
        outlier = _mix(ts, salt + 1) < f.outlier_rate
        up = _mix(ts, salt + 2) < 0.5
        scale = np.where(outlier, np.where(up, f.outlier_factor, 1.0 / f.outlier_factor), 1.0)
        df = df.with_columns(pl.col("open", "high", "low", "close", "vwap") * pl.Series(scale))
        df = df.with_columns(pl.col("open", "high", "low", "close").round(4))
        kept = df.filter(pl.Series(~miss))
        if int(outlier.sum()):
            self._on_fault("outlier_bar", int((outlier & ~miss).sum()))
        if int(miss.sum()):
            self._on_fault("missing_bar", int(miss.sum()))
        return kept

    def adjustments(self, symbol: str) -> pl.DataFrame:
        """Return per session: `split_factor` and `total_factor` (splits and dividends).

        Divide a raw price by `split_factor` for the split-adjusted price; multiply the raw
        close by `total_factor` for the split-and-dividend-adjusted close (CRSP/Yahoo style).
        """
        return _adjustments(self.market, symbol.upper())


@lru_cache(maxsize=256)
def _adjustments(market: SimulatedMarket, symbol: str) -> pl.DataFrame:
    inst = market.instrument(symbol)
    tickers = [t for t in (inst.former_symbol, inst.symbol) if t]
    daily = pl.concat([market.daily(t, HISTORY_START, market.sessions[-1]) for t in tickers]).sort(
        "ts"
    )
    days = daily.select(session=pl.col("ts").dt.date(), prev_close=pl.col("close").shift(1))
    acts = market.actions(symbol)
    splits = acts.filter(pl.col("action_type") == "split").select(
        session=pl.col("ex_date"), ratio=pl.col("ratio")
    )
    divs = acts.filter(pl.col("action_type").is_in(["dividend", "special_dividend"])).select(
        session=pl.col("ex_date"), amount=pl.col("amount")
    )
    out = (
        days.join(splits, on="session", how="left")
        .join(divs, on="session", how="left")
        .with_columns(
            pl.col("ratio").fill_null(1.0),
            div_mult=(1.0 - pl.col("amount").fill_null(0.0) / pl.col("prev_close")).fill_null(1.0),
        )
    )
    # factor of day t = product of the events strictly after t
    later_splits = pl.col("ratio").reverse().cum_prod().reverse().shift(-1, fill_value=1.0)
    split_mult = 1.0 / pl.col("ratio")
    later_total = (
        (pl.col("div_mult") * split_mult).reverse().cum_prod().reverse().shift(-1, fill_value=1.0)
    )
    return out.select(
        "session",
        split_factor=later_splits,
        total_factor=later_total,
        dividend=pl.col("amount"),
        split_ratio=pl.col("ratio"),
    )


def with_adjustments(feed: Feed, symbol: str, bars: pl.DataFrame) -> pl.DataFrame:
    """Join `split_factor` and `total_factor` onto bars by the session of each bar."""
    table = feed.adjustments(symbol)
    # daily and coarser bars are stamped 00:00 UTC of their session date
    session = (
        pl.when(pl.col("timeframe").is_in(["1d", "1w", "1mo"]))
        .then(pl.col("ts").dt.date())
        .otherwise(feed.market.calendar.session_of(pl.col("ts")))
    )
    return bars.with_columns(session=session).join(table, on="session", how="left")


def session_opens(feed: Feed, bars: pl.DataFrame) -> pl.Series:
    """Return the UTC open (epoch seconds) of each bar's session (Yahoo's daily stamps)."""
    sched = feed.market.calendar.schedule.select("session", "open")
    joined = bars.select(session=pl.col("ts").dt.date()).join(sched, on="session", how="left")
    return joined["open"].dt.epoch("s")


def eastern_midnight(ts: pl.Expr) -> pl.Expr:
    """Return 00:00 America/New_York of each bar's date (daily stamps of Finnhub, Polygon)."""
    return ts.dt.date().cast(pl.Datetime("us")).dt.replace_time_zone(EASTERN)


def eastern_text(ts: pl.Expr, fmt: str) -> pl.Expr:
    """Return timestamps as naive US/Eastern wall-clock text."""
    return ts.dt.convert_time_zone(EASTERN).dt.strftime(fmt)


def parse_day(text: str) -> date:
    """Parse YYYY-MM-DD (raises ValueError)."""
    return date.fromisoformat(text)


def epoch_to_date(seconds: float) -> date:
    """Return the US/Eastern calendar date of epoch seconds (clamped to 1970..2100)."""
    clamped = min(max(seconds, 86_400.0), 4_102_444_800.0)
    return datetime.fromtimestamp(clamped, tz=EASTERN_TZ).date()


def request_id(req: SimRequest) -> str:
    """Return a stable 32-hex request id derived from the request."""
    return hashlib.blake2b(
        f"{req.provider}|{sorted(req.query.items())}|{sorted(req.path_params.items())}".encode(),
        digest_size=16,
    ).hexdigest()
