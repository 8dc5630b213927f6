"""Corporate actions from provider payloads: Alpha Vantage, Yahoo and Polygon shapes.

Each function turns one provider's already-decoded data (a frame or a list of JSON
records) into the canonical action schema; fetching is the providers' job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from quantivista.errors import SchemaError
from quantivista.model.schema import ACTION_COLUMNS, ACTION_POLARS_SCHEMA

__all__ = ["alpha_vantage_actions", "polygon_actions", "yahoo_actions"]


def _finish(frame: pl.DataFrame, provider: str) -> pl.DataFrame:
    for name, dtype in ACTION_POLARS_SCHEMA.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    return (
        frame.with_columns(provider=pl.lit(provider))
        .select(ACTION_COLUMNS)
        .cast(dict(ACTION_POLARS_SCHEMA))  # type: ignore[arg-type]
        .sort("symbol", "ex_date", "action_type")
    )


def _need(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{what} lacks columns: {', '.join(missing)}", columns=frame.columns)


def alpha_vantage_actions(frame: pl.DataFrame, symbol: str | None = None) -> pl.DataFrame:
    """Return the events of an Alpha Vantage TIME_SERIES_DAILY_ADJUSTED frame.

    Needs `timestamp` (or `ts`), `dividend_amount` and `split_coefficient`; `symbol` comes
    from the argument or a `symbol` column.
    """
    df = frame if symbol is None else frame.with_columns(symbol=pl.lit(symbol))
    if "ts" not in df.columns and "timestamp" in df.columns:
        df = df.with_columns(ts=pl.col("timestamp").cast(pl.String).str.to_date())
    _need(df, ["symbol", "ts", "dividend_amount", "split_coefficient"], "Alpha Vantage frame")
    df = df.with_columns(ex_date=pl.col("ts").cast(pl.Date))
    divs = df.filter(pl.col("dividend_amount") > 0).select(
        "symbol", "ex_date", action_type=pl.lit("dividend"), amount="dividend_amount"
    )
    splits = df.filter(
        (pl.col("split_coefficient") != 1.0) & (pl.col("split_coefficient") > 0)
    ).select("symbol", "ex_date", action_type=pl.lit("split"), ratio="split_coefficient")
    out = pl.concat([divs, splits], how="diagonal").with_columns(currency=pl.lit("USD"))
    return _finish(out, "alpha_vantage")


def yahoo_actions(frame: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """Return the events of a Yahoo actions frame (`date`, `dividends`, `stock_splits`).

    Yahoo reports dividends split-adjusted (in today's shares); they are turned back into
    cash per share as paid by multiplying by the splits that came after each ex-date.
    """
    df = frame.rename({c: c.lower().replace(" ", "_") for c in frame.columns})
    _need(df, ["date", "dividends", "stock_splits"], "Yahoo actions frame")
    df = df.with_columns(
        ex_date=pl.col("date").cast(pl.Date),
        _s=pl.when(pl.col("stock_splits") > 0).then(pl.col("stock_splits")).otherwise(1.0),
    ).sort("ex_date")
    # product of the splits strictly after each row
    later = pl.col("_s").reverse().cum_prod().reverse() / pl.col("_s")
    df = df.with_columns(_later=later, symbol=pl.lit(symbol))
    divs = df.filter(pl.col("dividends") > 0).select(
        "symbol",
        "ex_date",
        action_type=pl.lit("dividend"),
        amount=pl.col("dividends") * pl.col("_later"),
    )
    splits = df.filter(pl.col("_s") != 1.0).select(
        "symbol", "ex_date", action_type=pl.lit("split"), ratio="_s"
    )
    return _finish(pl.concat([divs, splits], how="diagonal"), "yahoo")


_POLYGON_TYPES = {"CD": "dividend", "SC": "special_dividend", "LT": "dividend", "ST": "dividend"}


def polygon_actions(
    splits: Sequence[Mapping[str, Any]] = (), dividends: Sequence[Mapping[str, Any]] = ()
) -> pl.DataFrame:
    """Return events from Polygon `/v3/reference/splits` and `/v3/reference/dividends` results."""
    frames = []
    if splits:
        sp = pl.DataFrame(list(splits))
        _need(sp, ["ticker", "execution_date", "split_from", "split_to"], "Polygon splits")
        frames.append(
            sp.select(
                symbol="ticker",
                ex_date=pl.col("execution_date").str.to_date(),
                action_type=pl.lit("split"),
                ratio=pl.col("split_to").cast(pl.Float64) / pl.col("split_from"),
            )
        )
    if dividends:
        dv = pl.DataFrame(list(dividends))
        _need(dv, ["ticker", "ex_dividend_date", "cash_amount"], "Polygon dividends")
        kind = (
            pl.col("dividend_type").replace_strict(_POLYGON_TYPES, default="dividend")
            if "dividend_type" in dv.columns
            else pl.lit("dividend")
        )
        cur = pl.col("currency") if "currency" in dv.columns else pl.lit("USD")
        frames.append(
            dv.select(
                symbol="ticker",
                ex_date=pl.col("ex_dividend_date").str.to_date(),
                action_type=kind,
                amount=pl.col("cash_amount").cast(pl.Float64),
                currency=cur,
            )
        )
    if not frames:
        return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)
    return _finish(pl.concat(frames, how="diagonal"), "polygon")
