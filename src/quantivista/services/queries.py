"""Queries: bars (raw or adjusted, now or as of a time), actions, what the store holds."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from quantivista.actions.adjust import Adjust, DividendConvention
from quantivista.actions.view import AdjustedReader
from quantivista.clock import Clock
from quantivista.errors import InvalidInputError
from quantivista.model.flags import QualityFlag
from quantivista.model.symbols import canonical_symbol
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.processing.rollup import Session, check_session
from quantivista.providers.base import request_range
from quantivista.quality.freshness import freshness
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import ActionStore
from quantivista.timeutil import DateLike, to_date, to_utc

__all__ = ["BarQuery", "QueryService", "status_by_timeframe", "symbol_list"]

_OUTSIDE = int(QualityFlag.OUTSIDE_SESSION)


def status_by_timeframe(stats: pl.DataFrame) -> pl.DataFrame:
    """Return what the store holds per timeframe (symbols, rows, first, last, bytes), from
    `QueryService.status` (per timeframe and symbol), sorted by timeframe."""
    return (
        stats.group_by("timeframe")
        .agg(
            symbols=pl.len(),
            rows=pl.col("rows").sum(),
            first=pl.col("first_ts").min(),
            last=pl.col("last_ts").max(),
            bytes=pl.col("bytes").sum(),
        )
        .sort("timeframe")
    )


def symbol_list(symbols: str | Sequence[str]) -> list[str]:
    """Return the distinct canonical symbols (`model.symbols`) of a string or a list.

    Refuse none given, and any that breaks the symbol rule (`InvalidInputError`).
    """
    items = [symbols] if isinstance(symbols, str) else list(symbols)
    cleaned = [canonical_symbol(s) for s in items if s and s.strip()]
    if not cleaned:
        raise InvalidInputError("no symbols given")
    return list(dict.fromkeys(cleaned))


@dataclass(frozen=True, slots=True)
class BarQuery:
    """A read of stored bars.

    `start` and `end` are inclusive user bounds (a date as `end` includes that whole day).
    Two points in time, named apart: `known_at` is knowledge time (the bars exactly as the
    store knew them then); `effective_on` is the day whose corporate actions adjust the
    bars and whose meaning of each ticker applies (default: today).
    """

    symbols: list[str]
    timeframe: Timeframe = field(default_factory=lambda: Timeframe.parse("1d"))
    start: datetime | None = None
    end: datetime | None = None
    columns: tuple[str, ...] | None = None
    adjust: Adjust = "none"
    dividend_convention: DividendConvention = "crsp"
    known_at: datetime | None = None
    effective_on: date | None = None
    follow_renames: bool = True
    session: Session = "regular"

    @classmethod
    def of(
        cls,
        symbols: str | Sequence[str],
        start: DateLike | None = None,
        end: DateLike | None = None,
        timeframe: TimeframeLike = "1d",
        *,
        columns: Sequence[str] | None = None,
        adjust: Adjust = "none",
        dividend_convention: DividendConvention = "crsp",
        known_at: DateLike | None = None,
        effective_on: DateLike | None = None,
        follow_renames: bool = True,
        session: str = "regular",
    ) -> BarQuery:
        """Build a query from user-style arguments (strings, dates, datetimes)."""
        lo = request_range(start, start)[0] if start is not None else None
        hi = request_range(end, end)[1] if end is not None else None
        if lo is not None and hi is not None and hi <= lo:
            raise InvalidInputError("end is before start", start=str(start), end=str(end))
        return cls(
            symbols=symbol_list(symbols),
            timeframe=Timeframe.parse(timeframe),
            start=lo,
            end=hi,
            columns=tuple(columns) if columns else None,
            adjust=adjust,
            dividend_convention=dividend_convention,
            known_at=to_utc(known_at) if known_at is not None else None,
            effective_on=to_date(effective_on) if effective_on is not None else None,
            follow_renames=follow_renames,
            session=check_session(session),
        )


class QueryService:
    """Read bars and actions; owns the adjusted-view cache (invalidated by store events)."""

    def __init__(
        self,
        bars: BarStore,
        actions: ActionStore,
        calendar: Callable[[], TradingCalendar],
        clock: Clock,
        epoch: Callable[[], Hashable] | None = None,
    ) -> None:
        self.store = bars
        self.action_store = actions
        self.calendar = calendar
        self.clock = clock
        self.reader = AdjustedReader(bars, actions, epoch=epoch)

    def invalidate(self, *_: object) -> None:
        """Drop cached adjusted views (subscribed to the store's ingest events)."""
        self.reader.invalidate()

    def bars(self, query: BarQuery) -> pl.DataFrame:
        """Return stored bars in the canonical schema, sorted by symbol and ts."""
        # actions whose ex-date had come by the knowledge time adjust an as-of read
        effective = query.effective_on
        if effective is None and query.known_at is not None:
            effective = query.known_at.date()
        columns = query.columns
        regular = query.session == "regular" and query.timeframe.is_intraday
        if regular and columns is not None and "quality_flags" not in columns:
            columns = (*columns, "quality_flags")
        out = self.reader.read(
            query.symbols,
            query.timeframe,
            query.start,
            query.end,
            columns,
            adjust=query.adjust,
            dividend_convention=query.dividend_convention,
            effective_on=effective,
            follow_renames=query.follow_renames,
            known_at=query.known_at,
        )
        if not regular:
            return out
        outside = (out["quality_flags"] & _OUTSIDE) != 0
        if outside.any():  # the usual regular-hours read needs no filtered copy
            out = out.filter(~outside)
        return out if columns == query.columns else out.drop("quality_flags")

    def latest(self, symbol: str, timeframe: TimeframeLike = "1d") -> dict[str, Any] | None:
        """Return the newest stored bar of `symbol` as JSON-ready data, or None."""
        tf = Timeframe.parse(timeframe)
        recent = self.clock.now() - timedelta(days=14 if tf.seconds is None or tf.seconds >=
                                              86400 else 4)  # fmt: skip
        for start in (recent, None):  # the usual case reads two weeks; the rest, everything
            df = self.store.read([symbol.strip()], tf, start)
            if df.height:
                row = df.row(-1, named=True)
                return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
        return None

    def actions(self, symbols: str | Sequence[str] | None = None) -> pl.DataFrame:
        """Return stored corporate actions (of some symbols, or all) by ex-date."""
        return self.action_store.for_symbols(None if symbols is None else symbol_list(symbols))

    def status(self) -> pl.DataFrame:
        """Return rows, time span and bytes per (timeframe, symbol)."""
        return self.store.stats()

    def freshness(
        self,
        symbols: str | Sequence[str] | None = None,
        timeframe: TimeframeLike = "1d",
        max_behind: int = 0,
    ) -> pl.DataFrame:
        """Return per stored symbol its latest bar, the bar the calendar expects now, the lag."""
        tf = str(Timeframe.parse(timeframe))
        stats = self.store.stats().filter(pl.col("timeframe") == tf)
        if symbols is not None:
            stats = stats.filter(pl.col("symbol").is_in(symbol_list(symbols)))
        latest = stats.select("symbol", ts="last_ts")
        return freshness(latest, self.calendar(), self.clock.now(), tf, max_behind)
