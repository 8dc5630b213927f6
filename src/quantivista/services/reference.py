"""Reference data: instruments, calendars, Lean imports and custom benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quantivista.actions.lean import (
    factor_file_actions,
    map_file_actions,
    map_file_history,
    read_factor_file,
    read_lean_daily,
    read_map_file,
)
from quantivista.benchmarks import INDICES, compare, custom_benchmark, period_returns
from quantivista.benchmarks.custom import Rebalance, Weighting
from quantivista.errors import NotFoundError
from quantivista.reference.calendars import TradingCalendar
from quantivista.reference.fx import FxRates
from quantivista.reference.instruments import InstrumentMaster
from quantivista.services.queries import BarQuery, QueryService
from quantivista.services.writes import WriteService
from quantivista.timeutil import DateLike

__all__ = ["BenchmarkResult", "LeanImport", "ReferenceService"]


@dataclass(frozen=True)
class LeanImport:
    """What a Lean import stored."""

    tickers: list[str]
    bars: int
    actions: int


@dataclass(frozen=True)
class BenchmarkResult:
    """A custom benchmark's levels, its yearly returns, and a comparison if asked."""

    levels: pl.DataFrame
    yearly: pl.DataFrame
    against: dict[str, Any] | None


class ReferenceService:
    """Instruments, exchange calendars, vendor reference files and benchmarks."""

    def __init__(
        self,
        instruments: InstrumentMaster,
        calendar: Callable[[str | None], TradingCalendar],
        queries: QueryService,
        writes: WriteService,
    ) -> None:
        self.instruments = instruments
        self._calendar = calendar
        self.queries = queries
        self.writes = writes

    def calendar(self, mic: str | None = None) -> TradingCalendar:
        """Return an exchange's trading calendar (default: the ingest calendar)."""
        return self._calendar(mic)

    def import_lean_equity(self, root: str | Path, symbol: str) -> LeanImport:
        """Import `symbol` from a Lean `equity/usa` folder: bars, actions and ticker history.

        Reads `map_files/<symbol>.csv` (when present), `factor_files/<symbol>.csv` and
        `daily/<ticker>.zip` of every ticker the map file names. Bars are stored under the
        ticker in use (reads follow the renames); the instrument master gets the history
        under the instrument id `symbol`.
        """
        base, sym = Path(root), symbol.lower()
        map_path = base / "map_files" / f"{sym}.csv"
        factor_path = base / "factor_files" / f"{sym}.csv"
        if map_path.exists():
            rows = read_map_file(map_path)
            history = map_file_history(rows)
            actions = map_file_actions(rows)
            self.instruments.load_ticker_history(symbol.upper(), history)
        else:
            history = None
            actions = pl.DataFrame()
        tickers = (
            history["ticker"].unique(maintain_order=True).to_list()
            if history is not None
            else [symbol.upper()]
        )
        if factor_path.exists():
            factors = factor_file_actions(read_factor_file(factor_path), symbol, history=history)
            actions = pl.concat([actions, factors]) if actions.height else factors
        bars = 0
        for ticker in tickers:  # a loop over files, not rows
            path = base / "daily" / f"{ticker.lower()}.zip"
            if path.exists():
                report = self.writes.write_bars(read_lean_daily(path, ticker), source="lean")
                bars += report.total_records
        if not bars and not actions.height:
            raise NotFoundError(f"no Lean files for {symbol} under {base}")
        written = self.writes.write_actions(actions, provider="lean") if actions.height else 0
        return LeanImport(tickers, bars, written)

    def fx_rates(
        self, base: str, quote: str, start: DateLike | None = None, end: DateLike | None = None
    ) -> pl.DataFrame:
        """Return ts, rate of one `base` in `quote` from stored FX bars (via USD if needed)."""
        rates = FxRates.from_store(self.queries.store).rate(base, quote)
        lo = BarQuery.of("X", start, end)
        if lo.start is not None:
            rates = rates.filter(pl.col("ts") >= lo.start)
        if lo.end is not None:
            rates = rates.filter(pl.col("ts") < lo.end)
        return rates

    def index_levels(
        self, name: str, start: DateLike | None = None, end: DateLike | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Return a stored index's daily bars (by id like SPX, or ticker) and yearly returns."""
        known = INDICES.filter(
            (pl.col("instrument_id") == name.upper()) | (pl.col("symbol") == name.upper())
        )
        symbol = str(known["symbol"][0]) if known.height else name.upper()
        bars = self.queries.bars(BarQuery.of(symbol, start, end))
        if bars.is_empty():
            raise NotFoundError(f"no bars stored for the benchmark {name} ({symbol})")
        return bars, period_returns(bars.select("ts", level="close"), "1y")

    def benchmark(
        self,
        symbols: Sequence[str],
        weights: Weighting = "equal",
        *,
        rebalance: Rebalance = "quarterly",
        total_return: bool = False,
        start: DateLike | None = None,
        end: DateLike | None = None,
        against: str | None = None,
    ) -> BenchmarkResult:
        """Build a custom benchmark from stored bars, with yearly returns and a comparison."""
        raw = self.queries.bars(BarQuery.of(symbols, start, end))
        missing = sorted(set(symbols) - set(raw["symbol"].unique().to_list()))
        if missing:
            raise NotFoundError(
                f"no bars stored in that range for {', '.join(missing)}", symbols=missing
            )
        levels = custom_benchmark(
            raw,
            weights,
            rebalance=rebalance,
            total_return=total_return,
            actions=self.queries.actions(symbols),
        )
        stats = None
        if against is not None:
            other = self.queries.bars(BarQuery.of(against, start, end, adjust="all"))
            if other.is_empty():
                raise NotFoundError(f"no bars stored in that range for {against}")
            stats = compare(levels, other.select("ts", level="close"))
        return BenchmarkResult(levels, period_returns(levels, "1y"), stats)
