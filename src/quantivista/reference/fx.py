"""FX rates stored like bars, currency conversion with triangulation, consistency checks.

An FX series is a bar series whose symbol is the pair, base then quote ("EURUSD": the
close is the USD price of one EUR). A rate X->Y is looked up directly (XY), inverted (YX),
or triangulated through USD (X->USD x USD->Y). Bars are converted with the latest rate at
or before each bar (`join_asof` backward), so no future rate leaks into the past.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.timeframe import Timeframe
from quantivista.reference.currencies import CURRENCIES
from quantivista.storage.base import BarStore

__all__ = ["FxRates", "is_pair"]

_PIVOT = "USD"
_PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")


def is_pair(symbol: str) -> bool:
    """Return whether `symbol` names a currency pair of two known ISO 4217 codes."""
    s = symbol.upper().replace("/", "")
    return len(s) == 6 and s[:3] in CURRENCIES and s[3:] in CURRENCIES and s[:3] != s[3:]


class FxRates:
    """A set of FX close series (symbol, ts, close), with conversion between any currencies."""

    def __init__(self, rates: pl.DataFrame) -> None:
        self.rates = (
            rates.select(pl.col("symbol").str.replace("/", "").str.to_uppercase(), "ts", "close")
            .filter(pl.col("close") > 0)
            .sort("symbol", "ts")
        )
        self.pairs = set(self.rates["symbol"].unique().to_list())

    @classmethod
    def from_store(cls, store: BarStore, timeframe: str = "1d") -> FxRates:
        """Load every stored currency-pair series of a timeframe."""
        tf = Timeframe.parse(timeframe)
        pairs = [s for s in store.symbols(tf) if is_pair(s)]
        return cls(store.read(pairs, tf, columns=["symbol", "ts", "close"]))

    def _direct(self, base: str, quote: str) -> pl.DataFrame | None:
        if base + quote in self.pairs:
            return self.rates.filter(pl.col("symbol") == base + quote).select("ts", rate="close")
        if quote + base in self.pairs:
            inv = self.rates.filter(pl.col("symbol") == quote + base)
            return inv.select("ts", rate=1.0 / pl.col("close"))
        return None

    def rate(self, base: str, quote: str) -> pl.DataFrame:
        """Return ts, rate: the price of one `base` in `quote`, triangulated via USD if needed."""
        base, quote = base.upper(), quote.upper()
        if base == quote:
            raise InvalidInputError("a rate needs two different currencies", currency=base)
        direct = self._direct(base, quote)
        if direct is not None:
            return direct
        first, second = self._direct(base, _PIVOT), self._direct(_PIVOT, quote)
        if first is None or second is None:
            raise NotFoundError(f"no FX series for {base}{quote}, directly or through USD")
        joined = first.join_asof(
            second.rename({"rate": "_second"}), on="ts", strategy="backward"
        ).drop_nulls()
        return joined.select("ts", rate=pl.col("rate") * pl.col("_second"))

    def convert(
        self, bars: pl.DataFrame, to: str, currency: str | Mapping[str, str]
    ) -> pl.DataFrame:
        """Return `bars` with prices in currency `to` (volumes unchanged).

        `currency` is the bars' currency, or a mapping symbol -> currency. Bars before the
        first available rate get null prices rather than a guessed rate.
        """
        to = to.upper()
        if isinstance(currency, str):
            by_symbol = {s: currency.upper() for s in bars["symbol"].unique().to_list()}
        else:
            by_symbol = {s: c.upper() for s, c in currency.items()}
        missing = sorted(set(bars["symbol"].unique().to_list()) - set(by_symbol))
        if missing:
            raise InvalidInputError("no currency known for some symbols", symbols=missing)
        order = bars.columns
        keyed = bars.with_row_index("_row").with_columns(
            _ccy=pl.col("symbol").replace_strict(by_symbol, return_dtype=pl.String())
        )
        frames = []
        for ccy in keyed["_ccy"].unique().to_list():  # a loop over currencies, not rows
            part = keyed.filter(pl.col("_ccy") == ccy)
            if ccy == to:
                frames.append(part.with_columns(_rate=pl.lit(1.0)))
                continue
            rates = self.rate(ccy, to).sort("ts").rename({"rate": "_rate"})
            frames.append(part.sort("ts").join_asof(rates, on="ts", strategy="backward"))
        out = pl.concat(frames).sort("_row")
        updates = [(pl.col(c) * pl.col("_rate")).alias(c) for c in _PRICE_COLUMNS if c in order]
        return out.with_columns(updates).select(order)

    def triangular_check(self, tolerance: float = 1e-3) -> pl.DataFrame:
        """Flag days where a stored cross rate disagrees with its USD legs.

        For every stored pair XY with X, Y != USD whose USD legs exist, returns rows
        (symbol, ts, close, implied, deviation, inconsistent) with implied = X->USD x
        USD->Y and `inconsistent` when |close / implied - 1| > tolerance.
        """
        frames = []
        for pair in sorted(self.pairs):  # a loop over pairs, not rows
            base, quote = pair[:3], pair[3:]
            if _PIVOT in (base, quote):
                continue
            first, second = self._direct(base, _PIVOT), self._direct(_PIVOT, quote)
            if first is None or second is None:
                continue
            implied = first.join(second, on="ts", suffix="_2").select(
                "ts", implied=pl.col("rate") * pl.col("rate_2")
            )
            cross = self.rates.filter(pl.col("symbol") == pair).join(implied, on="ts")
            frames.append(cross)
        schema = {
            "symbol": pl.String(),
            "ts": self.rates.schema["ts"],
            "close": pl.Float64(),
            "implied": pl.Float64(),
        }
        found = pl.DataFrame(schema=schema) if not frames else pl.concat(frames)
        deviation = pl.col("close") / pl.col("implied") - 1.0
        return found.with_columns(deviation=deviation).with_columns(
            inconsistent=pl.col("deviation").abs() > tolerance
        )
