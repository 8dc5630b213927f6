"""Price adjustment on read: cumulative factors from corporate-action events.

Raw prices are stored once. For a bar at day t, the adjusted price is

    raw_t x prod(f_e for dividends with ex-date e > t) / prod(S_e for splits with e > t)

and the adjusted volume is raw_volume_t x prod(S_e). Two dividend conventions exist in
real data (see ../shared/fixtures/corporate_actions/README.md):

- "crsp" (CRSP, Yahoo Adj Close, QuantConnect Lean, zipline): f_e = 1 - D_e / C_prev, with
  C_prev the raw close of the last bar before the ex-date;
- "alpha_vantage" (Alpha Vantage adjusted_close, Quandl): f_e = C_e / (C_e + D_e), with C_e
  the raw close on the ex-date itself.

Everything is a Polars join: events get their reference close by `join_asof`, factors are
suffix products per symbol, bars pick their factor by a forward `join_asof`. The joins run
on one Int64 key (symbol run id and epoch seconds), which stays sorted for the
store's (symbol, ts) order, so no string keys are hashed and nothing is re-sorted.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from quantivista.errors import InvalidInputError
from quantivista.timeutil import DateLike, to_date

__all__ = [
    "ADJUST_MODES",
    "CASH_ACTION_TYPES",
    "DIVIDEND_CONVENTIONS",
    "SPLIT_ACTION_TYPES",
    "Adjust",
    "DividendConvention",
    "adjust_bars",
    "adjustment_factors",
    "check_adjust_args",
    "price_events",
]

Adjust = Literal["none", "splits", "all"]
DividendConvention = Literal["crsp", "alpha_vantage"]
ADJUST_MODES: tuple[str, ...] = ("none", "splits", "all")
DIVIDEND_CONVENTIONS: tuple[str, ...] = ("crsp", "alpha_vantage")

# ratio-type events (new shares per old share) and cash-type events (cash per share);
# a spin-off's `amount` is the value per share distributed, treated like cash (as CRSP does)
SPLIT_ACTION_TYPES: tuple[str, ...] = ("split", "stock_dividend")
CASH_ACTION_TYPES: tuple[str, ...] = ("dividend", "special_dividend", "spinoff")
_SPLIT_TYPES = SPLIT_ACTION_TYPES
_CASH_TYPES = CASH_ACTION_TYPES
_PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")
_EX = "_ex_ts"


def check_adjust_args(adjust: str, dividend_convention: str) -> None:
    """Raise `InvalidInputError` for an unknown adjustment mode or dividend convention."""
    if adjust not in ADJUST_MODES:
        raise InvalidInputError(f"adjust must be one of {ADJUST_MODES}", adjust=adjust)
    if dividend_convention not in DIVIDEND_CONVENTIONS:
        raise InvalidInputError(
            f"dividend_convention must be one of {DIVIDEND_CONVENTIONS}",
            dividend_convention=dividend_convention,
        )


# key = run id x 2^36 + (epoch seconds + 2^34): seconds from the year 1426 to 2514 stay
# inside their run's range, and 2^27 runs fit in an Int64
_SHIFT = 1 << 36
_OFFSET = 1 << 34


class _Keyed:
    """Bars reduced to a sorted Int64 key, plus the symbol of each run id."""

    def __init__(self, bars: pl.DataFrame) -> None:
        self.order: pl.Series | None = None
        runs = bars.select(pl.col("symbol").rle()).unnest("symbol")
        if runs["value"].n_unique() != runs.height:  # a symbol in several runs: sort first
            self.order = bars.select(pl.arg_sort_by("symbol", "ts")).to_series()
            bars = bars[self.order]
            runs = bars.select(pl.col("symbol").rle()).unnest("symbol")
        self.symbols = pl.DataFrame(
            {"symbol": runs["value"], "_sid": pl.int_range(runs.height, eager=True)}
        )
        frame = bars.select(
            _key=pl.col("symbol").rle_id().cast(pl.Int64) * _SHIFT
            + (pl.col("ts").dt.epoch("s") + _OFFSET),
            close=pl.col("close"),
        )
        if not frame["_key"].is_sorted():  # ts out of order inside a symbol
            inner = frame.select(pl.arg_sort_by("_key")).to_series()
            self.order = inner if self.order is None else self.order[inner]
            frame = frame[inner]
        self.frame = frame

    def events(self, actions: pl.DataFrame) -> pl.DataFrame:
        """Return `actions` of the known symbols with their run id and ex-date key."""
        return actions.join(self.symbols, on="symbol", how="inner").with_columns(
            _ekey=pl.col("_sid").cast(pl.Int64) * _SHIFT
            + (pl.col("ex_date").cast(pl.Int64) * 86_400 + _OFFSET)
        )


_FACTOR_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "ex_date": pl.Date(),
        "_ekey": pl.Int64(),
        "price_step": pl.Float64(),
        "volume_step": pl.Float64(),
        "price_factor": pl.Float64(),
        "volume_factor": pl.Float64(),
    }
)


def price_events(
    actions: pl.DataFrame, *, adjust: Adjust = "all", as_of: DateLike | None = None
) -> pl.DataFrame:
    """Return the actions that move prices under `adjust`, known on `as_of` (all if None).

    Splits and stock dividends need a positive `ratio`, cash events (dividends, special
    dividends, spin-offs) a positive `amount`; other rows (symbol changes, delistings, bad
    values) are left out. The adjustment here and its inverse in normalization
    (`processing.normalize.to_raw_basis`) count the same events.
    """
    kinds: tuple[str, ...] = ()
    if adjust != "none":
        kinds = _SPLIT_TYPES + (_CASH_TYPES if adjust == "all" else ())
    missing = [c for c in ("ratio", "amount") if c not in actions.columns]
    actions = actions.with_columns(pl.lit(None, pl.Float64()).alias(c) for c in missing)
    is_split = pl.col("action_type").is_in(_SPLIT_TYPES)
    acts = actions.filter(
        pl.col("action_type").is_in(kinds)
        & pl.when(is_split).then(pl.col("ratio") > 0).otherwise(pl.col("amount") > 0)
    )
    if as_of is not None:
        acts = acts.filter(pl.col("ex_date") <= to_date(as_of))
    return acts


def _factors(
    keyed: _Keyed, actions: pl.DataFrame, adjust: Adjust, convention: str, as_of: DateLike | None
) -> pl.DataFrame:
    acts = keyed.events(price_events(actions, adjust=adjust, as_of=as_of))
    if acts.is_empty():
        return pl.DataFrame(schema=_FACTOR_SCHEMA)
    is_split = pl.col("action_type").is_in(_SPLIT_TYPES)
    splits = acts.filter(is_split).select(
        "symbol",
        "ex_date",
        "_ekey",
        price_step=1.0 / pl.col("ratio"),
        volume_step=pl.col("ratio"),
    )
    steps = [splits]
    cash = acts.filter(~is_split)
    if not cash.is_empty():
        steps.append(_dividend_steps(keyed, cash, convention))
    events = (
        pl.concat(steps)
        .group_by("_ekey")
        .agg(
            pl.col("symbol").first(),
            pl.col("ex_date").first(),
            pl.col("price_step").product(),
            pl.col("volume_step").product(),
        )
        .sort("_ekey", descending=True)
    )
    # suffix products: walking ex-dates newest first, the cumulative product covers this
    # event and every later one of the same symbol
    return (
        events.with_columns(
            price_factor=pl.col("price_step").cum_prod().over("symbol"),
            volume_factor=pl.col("volume_step").cum_prod().over("symbol"),
        )
        .sort("_ekey")
        .select(_FACTOR_SCHEMA.names())
    )


def _dividend_steps(keyed: _Keyed, cash: pl.DataFrame, convention: str) -> pl.DataFrame:
    closes = keyed.frame.filter(pl.col("close") > 0).with_columns(_csid=pl.col("_key") // _SHIFT)
    cash = cash.sort("_ekey")
    if convention == "crsp":
        # the last bar strictly before the ex-date
        ref = cash.join_asof(
            closes,
            left_on="_ekey",
            right_on="_key",
            strategy="backward",
            allow_exact_matches=False,
        )
        step = 1.0 - pl.col("amount") / pl.col("close")
    else:
        # the bar of the ex-date (or the first one after it when that day has no bar)
        ref = cash.join_asof(closes, left_on="_ekey", right_on="_key", strategy="forward")
        step = pl.col("close") / (pl.col("close") + pl.col("amount"))
    return (
        ref.filter(pl.col("_csid") == pl.col("_sid"))  # the close must be the same symbol's
        .select("symbol", "ex_date", "_ekey", price_step=step, volume_step=pl.lit(1.0))
        .filter(pl.col("price_step") > 0)
    )


def adjustment_factors(
    bars: pl.DataFrame,
    actions: pl.DataFrame,
    *,
    adjust: Adjust = "all",
    dividend_convention: DividendConvention = "crsp",
    as_of: DateLike | None = None,
) -> pl.DataFrame:
    """Return one row per (symbol, ex-date) with the step and cumulative factors.

    `bars` needs `symbol`, `ts` and `close` (raw); `actions` is in the canonical action
    schema. Only actions with `ex_date <= as_of` count when `as_of` is given (the view as
    it would have been published that day). Columns: symbol, ex_date, price_step,
    volume_step, price_factor (product of the steps of this and later ex-dates),
    volume_factor. Dividends with no usable reference close are left out (factor 1).
    """
    check_adjust_args(adjust, dividend_convention)
    if adjust == "none" or actions.is_empty() or bars.is_empty():
        return pl.DataFrame(schema=_FACTOR_SCHEMA).drop("_ekey")
    keyed = _Keyed(bars)
    return _factors(keyed, actions, adjust, dividend_convention, as_of).drop("_ekey")


def adjust_bars(
    bars: pl.DataFrame,
    actions: pl.DataFrame,
    *,
    adjust: Adjust = "all",
    dividend_convention: DividendConvention = "crsp",
    as_of: DateLike | None = None,
) -> pl.DataFrame:
    """Return `bars` with prices (open, high, low, close, vwap) and volume adjusted.

    The frame keeps its rows, columns, order and dtypes; only the values change. See the
    module docstring for the formulas and `adjustment_factors` for `as_of`.
    """
    check_adjust_args(adjust, dividend_convention)
    if adjust == "none" or actions.is_empty() or bars.is_empty():
        return bars
    keyed = _Keyed(bars)
    factors = _factors(keyed, actions, adjust, dividend_convention, as_of)
    if factors.is_empty():
        return bars
    picked = keyed.frame.select("_key").join_asof(
        factors.select("_ekey", "price_factor", "volume_factor"),
        left_on="_key",
        right_on="_ekey",
        strategy="forward",
        allow_exact_matches=False,  # a bar on the ex-date already trades ex
    )
    same = (pl.col("_ekey") // _SHIFT) == (pl.col("_key") // _SHIFT)
    picked = picked.select(
        _pf=pl.when(same).then("price_factor").otherwise(1.0),
        _vf=pl.when(same).then("volume_factor").otherwise(1.0),
    )
    if keyed.order is not None:  # back to the caller's row order
        picked = picked[keyed.order.arg_sort()]
    pf, vf = picked["_pf"], picked["_vf"]
    updates = [(pl.col(c) * pf).alias(c) for c in _PRICE_COLUMNS if c in bars.columns]
    if "volume" in bars.columns:
        updates.append((pl.col("volume") * vf).alias("volume"))
    return bars.with_columns(updates)
