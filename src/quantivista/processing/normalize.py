"""Normalization of provider data into canonical bars: symbols, time, numbers, units, basis.

All functions are vectorized Polars; none loops over rows. Canonical conventions:
- symbols are upper case and separate a share class with a dot (`BRK.B`);
- `ts` is the bar start in UTC; daily (and coarser) bars are stamped 00:00 UTC of the
  exchange-local session date;
- prices are raw (as traded) in the major currency unit (GBP, not pence); volume in shares:
  `to_raw_basis` undoes a vendor's split or split-and-dividend adjustment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from quantivista.actions.adjust import (
    SPLIT_ACTION_TYPES,
    Adjust,
    DividendConvention,
    adjustment_factors,
    check_adjust_args,
    price_events,
)
from quantivista.errors import InvalidInputError, SchemaError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import FrameLike, coerce_bars, to_polars
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.providers.base import PriceBasis
from quantivista.reference.calendars import TradingCalendar
from quantivista.timeutil import DateLike, to_date

__all__ = [
    "MINOR_UNITS",
    "REFERENCE_GAP",
    "SHARE_CLASS_SEPARATORS",
    "RawBasis",
    "align_to_grid",
    "from_canonical_symbols",
    "harmonize",
    "localize_ts",
    "normalize_units",
    "parse_numbers",
    "to_canonical_symbols",
    "to_raw_basis",
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


@dataclass(frozen=True, slots=True)
class RawBasis:
    """What `to_raw_basis` returns: the raw bars and, row by row, what was done to them.

    `bars` has the input's columns, dtypes and row order. `factors` has one row per bar in
    the same order: `price_factor` (what the prices were multiplied by; 1.0 = untouched),
    `volume_factor` (what the volume was divided by) and `unresolved` (True when an action
    after the bar could not be undone, or falls inside a weekly/monthly bar: its prices
    are not raw and should not be stored as such).
    """

    bars: pl.DataFrame
    factors: pl.DataFrame

    @property
    def converted(self) -> int:
        """Return how many bars changed (a price or volume factor other than 1)."""
        f = self.factors
        return (
            f.height
            - f.filter((pl.col("price_factor") == 1.0) & (pl.col("volume_factor") == 1.0)).height
        )

    @property
    def unresolved(self) -> int:
        """Return how many bars still carry an adjustment that could not be undone."""
        return int(self.factors["unresolved"].sum())


# the farthest a dividend's reference close may lie from its ex-date: the longest market
# closures (US 2001-09-11..17, Chinese Golden Week) stay within it; a close older than that
# belongs to another session (a hole in the data), so the dividend is left unresolved
REFERENCE_GAP = timedelta(days=10)

_FACTOR_COLUMNS = pl.Schema(
    {"price_factor": pl.Float64(), "volume_factor": pl.Float64(), "unresolved": pl.Boolean()}
)


def _untouched(bars: pl.DataFrame) -> RawBasis:
    factors = pl.DataFrame(
        {
            "price_factor": pl.repeat(1.0, bars.height, eager=True, dtype=pl.Float64),
            "volume_factor": pl.repeat(1.0, bars.height, eager=True, dtype=pl.Float64),
            "unresolved": pl.repeat(False, bars.height, eager=True, dtype=pl.Boolean),
        },
        schema=_FACTOR_COLUMNS,
    )
    return RawBasis(bars, factors)


def _period_end(bars: pl.DataFrame) -> pl.Expr:
    """Return the first date after each bar's period (the next day for daily and intraday)."""
    day = pl.col("ts").dt.date()
    if "timeframe" not in bars.columns:
        return day + pl.duration(days=1)
    every: dict[str, str] = {}
    for tf in bars["timeframe"].drop_nulls().unique().to_list():
        parsed = Timeframe.parse(tf)
        every[tf] = "1d" if parsed.is_intraday else parsed.polars_every
    if set(every.values()) <= {"1d"}:
        return day + pl.duration(days=1)
    step = pl.col("timeframe").replace_strict(every, default="1d", return_dtype=pl.String)
    return pl.col("ts").dt.offset_by(step).dt.date()


def _closes_used(
    events: pl.DataFrame, bars: pl.DataFrame, convention: DividendConvention, name: str
) -> pl.DataFrame:
    """Attach `name`: the close of the bar each event's dividend factor is computed from.

    CRSP: the last bar strictly before the ex-date; Alpha Vantage: the bar of the ex-date or
    the first one after it (the bars `actions.adjust` takes its closes from), at most
    `REFERENCE_GAP` away from the ex-date: a close from further away is not that session's.
    """
    closes = (
        bars.filter(pl.col("close") > 0)
        .select("symbol", _ref=pl.col("ts").dt.date(), **{name: pl.col("close")})
        .sort("symbol", "_ref")
    )
    crsp = convention == "crsp"
    return (
        events.sort("symbol", "ex_date")
        .join_asof(
            closes,
            left_on="ex_date",
            right_on="_ref",
            by="symbol",
            strategy="backward" if crsp else "forward",
            allow_exact_matches=not crsp,
            tolerance=REFERENCE_GAP,
            check_sortedness=False,  # sorted by (symbol, date): sorted within each symbol
        )
        .drop("_ref")
    )


def _reference_steps(
    events: pl.DataFrame,
    cash: pl.DataFrame,
    reference: pl.DataFrame | None,
    convention: DividendConvention,
) -> pl.DataFrame:
    """Attach `f`: the dividend factor `actions.adjust` computes from raw reference closes."""
    outside = events.filter(pl.col("cash") & ~pl.col("inside")).select("symbol", "ex_date")
    if outside.is_empty() or reference is None or reference.is_empty():
        return events.with_columns(f=pl.lit(None, pl.Float64()))
    ref = reference.filter(pl.col("symbol").is_in(outside["symbol"].unique().implode()))
    usable = _closes_used(outside, ref, convention, "_C").filter(pl.col("_C").is_not_null())
    acts = cash.join(usable, on=["symbol", "ex_date"], how="semi")
    steps = adjustment_factors(
        ref.select("symbol", "ts", "close"), acts, adjust="all", dividend_convention=convention
    ).select("symbol", "ex_date", f="price_step")
    return events.join(steps, on=["symbol", "ex_date"], how="left")


def to_raw_basis(
    bars: pl.DataFrame,
    basis: PriceBasis | str,
    actions: pl.DataFrame,
    *,
    as_of_day: DateLike,
    dividend_convention: DividendConvention = "crsp",
    reference: pl.DataFrame | None = None,
) -> RawBasis:
    """Turn bars quoted on an adjusted `basis` back into raw (as traded) prices and volumes.

    `bars` are canonical bars of one provider response (any symbols), adjusted the way the
    provider's `ProviderCapabilities.basis_for(timeframe)` says, as of `as_of_day`: the day
    the vendor produced the response (the payload's received date). Only actions with an
    ex-date up to that day count: a history fetched before a split is raw for that split.
    `actions` (canonical action schema) are the corporate actions known for the symbols,
    `dividend_convention` the vendor's (`crsp`: f = 1 - D / C_prev; `alpha_vantage`:
    f = C_ex / (C_ex + D)). The events counted are those `actions.adjust.price_events`
    gives for `adjust="splits"` (basis SPLITS) or `"all"` (SPLITS_AND_DIVIDENDS).

    A dividend factor needs the close it was computed from. When that bar is in `bars`
    (the ex-date lies within the batch's span), the vendor's own adjusted closes give the
    exact inverse: walking the ex-dates newest first, the price multiplier steps as
    g_before = S x g_after + b with b = D / A_prev (CRSP) or S x D / A_ex (Alpha Vantage),
    A the adjusted close, solved with cumulative products and sums. For an ex-date after
    the batch, the raw closes in `reference` (raw bars of the same symbols, e.g. the silver
    layer from the batch's start up to `as_of_day`) give the factor through
    `actions.adjust.adjustment_factors`, the very function adjustment on read uses. Splits
    need no close. Prices (open, high, low, close, vwap) are multiplied by g, volume is
    divided by the product of the split ratios.

    A bar with no counted action after it is returned as is (it is raw when nothing has
    happened since). A dividend whose reference close is in neither frame is skipped and
    every bar before it is marked `unresolved` (its prices stay off by that factor), and so
    is a weekly or monthly bar whose period contains an ex-date (the vendor's bar mixes
    bases). Actions the caller does not know about cannot be undone and are not detected
    here: an unknown later split leaves a split-adjusted price (compare with stored raw
    bars). Several cash events on one ex-date are undone as one of their summed amount.
    """
    basis = PriceBasis(basis)
    check_adjust_args("all", dividend_convention)
    if basis is PriceBasis.NONE or bars.is_empty():
        return _untouched(bars)
    as_of = to_date(as_of_day)
    adjust: Adjust = "all" if basis is PriceBasis.SPLITS_AND_DIVIDENDS else "splits"
    frame = bars.select(
        pl.int_range(bars.height, dtype=pl.Int64).alias("_row"),
        "symbol",
        pl.col("ts").dt.date().alias("_date"),
        _period_end(bars).alias("_end"),
    )
    span = frame.group_by("symbol").agg(_first=pl.col("_date").min(), _last=pl.col("_date").max())
    acts = (
        price_events(actions, adjust=adjust, as_of=as_of)
        .join(span, on="symbol", how="inner")
        .filter(pl.col("ex_date") > pl.col("_first"))  # only events after some bar matter
    )
    if acts.is_empty():
        return _untouched(bars)
    is_split = pl.col("action_type").is_in(SPLIT_ACTION_TYPES)
    events = acts.group_by("symbol", "ex_date").agg(
        S=pl.when(is_split).then(pl.col("ratio")).otherwise(1.0).product(),
        D=pl.when(is_split).then(0.0).otherwise(pl.col("amount")).sum(),
        cash=(~is_split).any(),
        inside=(pl.col("ex_date") <= pl.col("_last")).first(),
    )
    events = _closes_used(events, bars, dividend_convention, "A")
    events = _reference_steps(events, acts.filter(~is_split), reference, dividend_convention)
    by_batch = pl.col("cash") & pl.col("inside") & pl.col("A").is_not_null()
    by_reference = pl.col("cash") & ~pl.col("inside") & pl.col("f").is_not_null()
    b = pl.col("D") / pl.col("A")
    if dividend_convention == "alpha_vantage":
        b = pl.col("S") * b
    newest_first = events.sort("symbol", "ex_date", descending=[False, True]).with_columns(
        a=pl.col("S") / pl.when(by_reference).then(pl.col("f")).otherwise(1.0),
        b=pl.when(by_batch).then(b).otherwise(0.0),
        skipped=(pl.col("cash") & ~by_batch & ~by_reference).cast(pl.Int32),
    )
    # g_k = P_k (1 + sum_{j<=k} b_j / P_j), P_k = prod_{j<=k} a_j, k counting from the newest
    steps = (
        newest_first.with_columns(
            P=pl.col("a").cum_prod().over("symbol"),
            V=pl.col("S").cum_prod().over("symbol"),
            skipped=pl.col("skipped").cum_sum().over("symbol"),
        )
        .with_columns(g=pl.col("P") * (1.0 + (pl.col("b") / pl.col("P")).cum_sum().over("symbol")))
        .select("symbol", "ex_date", "g", "V", "skipped")
        .sort("symbol", "ex_date")
    )
    # a bar takes the factor of the first event after its date (a bar on the ex-date is ex)
    picked = (
        frame.sort("symbol", "_date")
        .join_asof(
            steps,
            left_on="_date",
            right_on="ex_date",
            by="symbol",
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,  # sorted by (symbol, date): sorted within each symbol
        )
        .sort("_row")
        .select(
            price_factor=pl.col("g").fill_null(1.0),
            volume_factor=pl.col("V").fill_null(1.0),
            unresolved=(pl.col("skipped").fill_null(0) > 0)
            | (pl.col("ex_date") < pl.col("_end")).fill_null(False),
        )
    )
    price_factor, volume_factor = picked["price_factor"], picked["volume_factor"]
    updates = [(pl.col(c) * price_factor).alias(c) for c in _PRICES if c in bars.columns]
    if "volume" in bars.columns:
        updates.append((pl.col("volume") / volume_factor).alias("volume"))
    return RawBasis(bars.with_columns(updates), picked)


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
