"""Enrich bars: corporate-action adjustment, reference data, FX to a reporting currency.

    enriched = enrich(bars, actions, reference, rates, reporting_currency="USD")

Adds, for every bar (vectorized joins, no per-row work):
- `adj_factor`, `adj_close`: the back-adjustment (splits and dividends) known now;
- `instrument_id`, `name`, `asset_class`, `exchange`, `currency`, `sector`, `industry`: the
  instrument the ticker named on the bar's date (point in time);
- `reporting_currency`, `fx_rate`, `close_rc`: the close in the reporting currency (the last
  known rate at the bar's time; null when no rate is known, never a guess);
- `source`: attribution (`<provider>` and where the bar came from).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from quantivista.actions.adjust import adjust_bars
from quantivista.errors import QuantiVistaError

__all__ = ["ENRICHMENT_COLUMNS", "enrich", "fx_rates"]

ENRICHMENT_COLUMNS = (
    "adj_factor", "adj_close", "instrument_id", "name", "asset_class", "exchange", "currency",
    "sector", "industry", "reporting_currency", "fx_rate", "close_rc", "source",
)  # fmt: skip
_REFERENCE = ("instrument_id", "name", "asset_class", "exchange", "currency", "sector", "industry")


def enrich(
    bars: pl.DataFrame,
    actions: pl.DataFrame,
    reference: pl.DataFrame,
    rates: pl.DataFrame | None,
    *,
    reporting_currency: str = "USD",
    source: str = "",
) -> pl.DataFrame:
    """Return `bars` with the enrichment columns.

    `reference` has one row per symbol (symbol + the reference columns, point in time
    resolved by the caller); `rates` has currency, ts, rate (one unit of currency in the
    reporting currency), or None when only the reporting currency is expected.
    """
    if bars.is_empty():
        return bars.with_columns(
            [pl.lit(None, pl.String).alias(c) for c in ENRICHMENT_COLUMNS if c not in bars.columns]
        )
    adjusted = adjust_bars(bars.select("symbol", "ts", "close"), actions)
    out = bars.with_columns(
        adj_close=adjusted["close"],
        adj_factor=adjusted["close"] / bars["close"],
    )
    ref = reference.select("symbol", *_REFERENCE).unique("symbol", keep="last")
    out = out.join(ref, on="symbol", how="left", maintain_order="left")
    currency = pl.col("currency").fill_null(reporting_currency)
    out = out.with_columns(currency=currency, reporting_currency=pl.lit(reporting_currency))
    if rates is not None and rates.height:
        out = (
            out.with_row_index("_row")
            .sort("ts")
            .join_asof(
                rates.sort("ts"),
                on="ts",
                by="currency",
                strategy="backward",
                check_sortedness=False,  # both sides sorted by ts just above
            )
            .sort("_row")
            .drop("_row")
        )
    else:
        out = out.with_columns(rate=pl.lit(None, pl.Float64))
    same = pl.col("currency") == pl.col("reporting_currency")
    fx = pl.when(same).then(1.0).otherwise(pl.col("rate"))
    return out.with_columns(
        fx_rate=fx,
        close_rc=pl.col("close") * fx,
        source=pl.concat_str(
            [pl.col("provider").fill_null("unknown"), pl.lit(f" via {source}" if source else "")]
        ),
    ).drop("rate")


def fx_rates(
    currencies: list[str], reporting_currency: str, rate_of: Callable[[str, str], pl.DataFrame]
) -> pl.DataFrame | None:
    """Return currency, ts, rate for every non-reporting currency `rate_of(c, to)` knows."""
    frames = []
    for ccy in currencies:  # a loop over currencies, not rows
        if ccy == reporting_currency:
            continue
        try:
            series = rate_of(ccy, reporting_currency)
        except QuantiVistaError as exc:  # no series: those bars get a null rate
            if exc.is_retryable():  # the store away is no missing series
                raise
            continue
        frames.append(series.select(pl.lit(ccy).alias("currency"), "ts", "rate"))
    return pl.concat(frames) if frames else None
