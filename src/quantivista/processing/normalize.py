"""Normalization of provider data into canonical bars: symbols, time, numbers, units, basis.

All functions are vectorized Polars; none loops over rows. Canonical conventions:
- symbols are upper case and separate a share class with a dot (`BRK.B`);
- `ts` is the bar start in UTC; daily (and coarser) bars are stamped 00:00 UTC of the
  exchange-local session date;
- prices are raw (as traded) in the major currency unit (GBP, not pence); volume in shares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from quantivista.errors import InvalidInputError, SchemaError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import FrameLike, coerce_bars, to_polars
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.providers.base import AdjustmentBasis
from quantivista.reference.calendars import TradingCalendar

__all__ = [
    "MINOR_UNITS",
    "SHARE_CLASS_SEPARATORS",
    "align_to_grid",
    "from_canonical_symbols",
    "harmonize",
    "localize_ts",
    "normalize_units",
    "parse_numbers",
    "to_canonical_symbols",
    "to_raw_prices",
]

# how each provider writes "Berkshire Hathaway class B"
SHARE_CLASS_SEPARATORS: dict[str, str] = {
    "canonical": ".",
    "polygon": ".",
    "alpaca": ".",
    "iex": ".",
    "lean": ".",
    "synthetic": ".",
    "yahoo": "-",
    "tiingo": "-",
    "stooq": "-",
    "eodhd": "-",
    "alpha_vantage": "-",
    "nasdaq": "/",
    "bloomberg": " ",
}
# minor currency units some venues quote in -> (major unit, divisor)
MINOR_UNITS: dict[str, tuple[str, float]] = {
    "GBp": ("GBP", 100.0),
    "GBX": ("GBP", 100.0),
    "ZAc": ("ZAR", 100.0),
    "ZAC": ("ZAR", 100.0),
    "ILA": ("ILS", 100.0),
}
_NULL_TOKENS = ["", "-", "--", "N/A", "NA", "n/a", "null", "None", "NaN", "nan"]
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
_PRICES = ("open", "high", "low", "close", "vwap")


def _separator(provider: str) -> str:
    try:
        return SHARE_CLASS_SEPARATORS[provider.lower()]
    except KeyError as exc:
        raise InvalidInputError(
            "unknown provider symbol convention", provider=provider,
            known=sorted(SHARE_CLASS_SEPARATORS),
        ) from exc  # fmt: skip


def to_canonical_symbols(symbols: pl.Expr, provider: str) -> pl.Expr:
    """Return canonical symbols (`BRK.B`) from a provider's (`BRK-B`, `BRK/B`, `BRK B`)."""
    sep = _separator(provider)
    clean = symbols.str.strip_chars().str.to_uppercase()
    if sep == ".":
        return clean
    # only a trailing 1-2 letter class after the separator; Yahoo's ".L" suffixes stay
    return clean.str.replace(rf"^([A-Z0-9]+){re.escape(sep)}([A-Z]{{1,2}})$", "${1}.${2}")


def from_canonical_symbols(symbols: pl.Expr, provider: str) -> pl.Expr:
    """Return a provider's symbols from canonical ones (the inverse of the above)."""
    sep = _separator(provider)
    if sep == ".":
        return symbols
    return symbols.str.replace(r"^([A-Z0-9]+)\.([A-Z]{1,2})$", f"${{1}}{sep}${{2}}", literal=False)


def localize_ts(
    df: pl.DataFrame, tz: str, timeframe: TimeframeLike, column: str = "ts"
) -> pl.DataFrame:
    """Turn exchange-local timestamps (naive, or aware in any zone) into canonical UTC `ts`.

    Intraday bars: local wall time -> UTC (a wall time skipped by a DST change raises).
    Daily and coarser bars: the local session date -> 00:00 UTC of that date.
    """
    tf = Timeframe.parse(timeframe)
    col = df.schema[column]
    expr = pl.col(column)
    if col == pl.Date:
        if tf.is_intraday:
            raise SchemaError("intraday bars need a time of day", column=column)
        return df.with_columns(expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    if not isinstance(col, pl.Datetime):
        raise SchemaError(f"column {column!r} must be a date or datetime", dtype=str(col))
    local = (
        expr.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        if col.time_zone is None
        else expr.dt.convert_time_zone(tz)
    )
    if tf.is_intraday:
        out = df.with_columns(local.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    else:
        out = df.with_columns(
            local.dt.date().cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(column)
        )
    bad = out[column].null_count() - df[column].null_count()
    if bad:
        raise SchemaError("local times that do not exist in the time zone", tz=tz, rows=bad)
    return out


def parse_numbers(df: pl.DataFrame, columns: tuple[str, ...] | list[str]) -> pl.DataFrame:
    """Parse string number columns: `1,234.5`, `$12`, `(3.5)` (negative), `1.2M`, `N/A`.

    Null tokens become null; anything else unparseable raises SchemaError (never nulled).
    """
    exprs = []
    for name in columns:
        if name not in df.columns or df.schema[name] != pl.String:
            continue
        s = pl.col(name).str.strip_chars()
        null = s.is_in(_NULL_TOKENS) | s.is_null()
        negative = s.str.starts_with("(") & s.str.ends_with(")")
        body = s.str.replace_all(r"[,$£€\s()]", "")
        suffix = body.str.extract(r"([KMBT])$", 1)
        number = body.str.replace(r"[KMBT]$", "").cast(pl.Float64, strict=False)
        scale = suffix.replace_strict(_SUFFIX, default=1.0, return_dtype=pl.Float64)
        value = number * scale * pl.when(negative).then(-1.0).otherwise(1.0)
        exprs.append(
            pl.when(null).then(None).otherwise(value).alias(name),
        )
        bad = df.filter(~null.fill_null(True) & value.is_null()).select(pl.col(name))
        if bad.height:
            raise SchemaError(
                f"column {name!r} holds values that are not numbers",
                examples=bad[name].head(5).to_list(),
            )
    return df.with_columns(exprs) if exprs else df


def normalize_units(
    df: pl.DataFrame, currency: str | None = None, volume_scale: float = 1.0
) -> pl.DataFrame:
    """Convert minor-unit prices (GBp/GBX pence, ZAc, ILA) to the major unit; scale volume.

    The currency comes from a `currency` column when present (per row), else from the
    argument. The output carries a `currency` column with the major unit.
    `volume_scale` multiplies volume (e.g. 1000 for a provider that reports thousands).
    """
    if "currency" in df.columns:
        cur = pl.col("currency")
    elif currency is not None:
        cur = pl.lit(currency)
    else:
        raise InvalidInputError("give the price currency or a currency column")
    divisor = cur.replace_strict(
        {k: v[1] for k, v in MINOR_UNITS.items()}, default=1.0, return_dtype=pl.Float64
    )
    major = cur.replace({k: v[0] for k, v in MINOR_UNITS.items()})
    prices = [pl.col(c) / divisor for c in _PRICES if c in df.columns]
    out = df.with_columns(*prices, currency=major)
    if volume_scale != 1.0 and "volume" in out.columns:
        out = out.with_columns(pl.col("volume") * volume_scale)
    return out


def to_raw_prices(
    df: pl.DataFrame,
    basis: AdjustmentBasis,
    actions: pl.DataFrame,
    dividend_convention: str = "prev_close",
) -> pl.DataFrame:
    """Undo a provider's adjustment: return raw (as traded) prices and volumes.

    `actions` is in the canonical action schema (split ratio = new shares per old share,
    cash dividend per share on the ex-date). Going back from the newest bar, the inverse
    factor g steps at each ex-date as g_before = S x g_after + b, with b = D / A_prev for
    the CRSP/Yahoo/Lean convention (`prev_close`: f = 1 - D / C_prev) and b = S x D / A_ex
    for the Alpha Vantage/Quandl one (`ex_close`: f = C_ex / (C_ex + D)), A being the
    adjusted close. The recurrence is solved with cumulative products, not a loop.
    Prices are multiplied by g; volume is divided by the split factor only.
    """
    if basis is AdjustmentBasis.RAW or df.is_empty():
        return df
    if dividend_convention not in ("prev_close", "ex_close"):
        raise InvalidInputError("dividend_convention is prev_close or ex_close")
    bars = df.with_columns(_date=pl.col("ts").dt.date()).sort("symbol", "_date")
    kinds = ["split", "stock_dividend"]
    if basis is AdjustmentBasis.SPLITS_AND_DIVIDENDS:
        kinds += ["dividend", "special_dividend"]
    ev = (
        actions.filter(pl.col("action_type").is_in(kinds))
        .group_by("symbol", "ex_date")
        .agg(
            S=pl.when(pl.col("action_type").is_in(["split", "stock_dividend"]))
            .then(pl.col("ratio"))
            .otherwise(1.0)
            .product(),
            D=pl.when(pl.col("action_type").is_in(["dividend", "special_dividend"]))
            .then(pl.col("amount"))
            .otherwise(0.0)
            .sum(),
        )
        .sort("symbol", "ex_date")
    )
    # adjusted closes the dividend term needs: on the ex-date, and on the bar before it
    closes = bars.select("symbol", "_date", A="close")
    ev = ev.join_asof(
        closes.rename({"_date": "ex_date", "A": "A_ex"}), on="ex_date", by="symbol",
        strategy="forward",
    ).join_asof(
        closes.rename({"_date": "prev", "A": "A_prev"}).with_columns(
            ex_key=pl.col("prev")
        ), left_on="ex_date", right_on="ex_key", by="symbol", strategy="backward",
        allow_exact_matches=False,
    )  # fmt: skip
    b = (
        pl.col("D") / pl.col("A_prev")
        if dividend_convention == "prev_close"
        else pl.col("S") * pl.col("D") / pl.col("A_ex")
    )
    # newest event first: g_k = P_k (1 + sum_{j<=k} b_j / P_j), P_k = prod_{j<=k} S_j
    ev = (
        ev.sort("symbol", "ex_date", descending=[False, True])
        .with_columns(b=b.fill_null(0.0))
        .with_columns(P=pl.col("S").cum_prod().over("symbol"))
        .with_columns(g=pl.col("P") * (1 + (pl.col("b") / pl.col("P")).cum_sum().over("symbol")))
        .select("symbol", "ex_date", "g", "P")
        .sort("symbol", "ex_date")
    )
    # a bar uses the factor of the first event after its date
    joined = bars.join_asof(
        ev, left_on="_date", right_on="ex_date", by="symbol", strategy="forward",
        allow_exact_matches=False,
    ).with_columns(pl.col("g", "P").fill_null(1.0))  # fmt: skip
    prices = [pl.col(c) * pl.col("g") for c in _PRICES if c in df.columns]
    return joined.with_columns(*prices, volume=pl.col("volume") / pl.col("P")).select(df.columns)


def harmonize(
    frame: FrameLike,
    *,
    columns: Mapping[str, str],
    provider: str,
    timeframe: TimeframeLike,
    tz: str = "UTC",
    symbol: str | None = None,
) -> pl.DataFrame:
    """Rename a provider's columns to canonical ones, parse numbers and time, coerce.

    `columns` maps provider names to canonical ones (`{"Date": "ts", "Adj Close": ...}`);
    unmapped columns are dropped. `symbol` fills a missing symbol column.
    """
    df = to_polars(frame)
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise SchemaError("mapped columns missing from the frame", columns=unknown)
    df = df.select([pl.col(k).alias(v) for k, v in columns.items()])
    if "symbol" not in df.columns:
        if symbol is None:
            raise SchemaError("no symbol column and no symbol given")
        df = df.with_columns(symbol=pl.lit(symbol))
    df = df.with_columns(to_canonical_symbols(pl.col("symbol"), provider))
    df = parse_numbers(df, ["open", "high", "low", "close", "volume", "vwap", "trades"])
    if df.schema["ts"] == pl.String:
        df = df.with_columns(pl.col("ts").str.to_datetime(time_unit="us", strict=True))
    df = localize_ts(df, tz, timeframe)
    return coerce_bars(df, timeframe=timeframe, provider=provider)


def align_to_grid(
    bars: pl.DataFrame,
    timeframe: TimeframeLike,
    calendar: TradingCalendar | None = None,
    *,
    snap: bool = False,
) -> pl.DataFrame:
    """Check intraday bars against the timeframe grid (session-open based with a calendar).

    Off-grid bars get the MISALIGNED_TS bit (the validator quarantines them), or with
    `snap=True` are moved down to their grid slot and get TS_SNAPPED instead: explicit
    either way, never silent.
    """
    tf = Timeframe.parse(timeframe)
    if not tf.is_intraday or bars.is_empty():
        return bars
    step = int(tf.seconds or 60) * 1_000_000
    if calendar is None:
        origin = pl.lit(0, pl.Int64)
        df = bars
    else:
        opens = calendar.schedule.select(
            _day=pl.col("session"), _open=pl.col("open").dt.epoch("us")
        )
        df = bars.with_columns(_day=calendar.session_of(pl.col("ts"))).join(
            opens, on="_day", how="left", maintain_order="left"
        )
        origin = pl.col("_open").fill_null(0)
    us = pl.col("ts").dt.epoch("us")
    offset = (us - origin) % step
    snapped = (us - offset).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    off = offset != 0
    bit = int(QualityFlag.TS_SNAPPED if snap else QualityFlag.MISALIGNED_TS)
    out = df.with_columns(
        ts=pl.when(off).then(snapped).otherwise(pl.col("ts")) if snap else pl.col("ts"),
        quality_flags=pl.when(off)
        .then(pl.col("quality_flags") | pl.lit(bit, pl.UInt32))
        .otherwise(pl.col("quality_flags")),
    )
    return out.select(bars.columns)
