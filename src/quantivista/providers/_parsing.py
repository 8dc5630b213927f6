"""Helpers shared by the vendor parsers: decode bodies, build columns, refuse bad shapes.

Every parser is wrapped in `guarded`, so whatever a hostile body does inside it (a missing
key, a string where a number belongs, a polars cast failure) leaves as a
`MalformedResponseError` naming the provider and symbol, never as a bare KeyError/TypeError.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import orjson
import polars as pl

from quantivista.errors import MalformedResponseError, ProviderError, QuantiVistaError
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    BAR_POLARS_SCHEMA,
    PL_UTC_TS,
    coerce_actions,
    coerce_bars,
)
from quantivista.model.symbols import canonical_symbols
from quantivista.model.timeframe import Timeframe, TimeframeLike

__all__ = [
    "bars_of",
    "empty_actions",
    "finish_bars",
    "float_column",
    "guarded",
    "load_json",
    "local_dates_to_utc",
    "require",
    "text_of",
]

P = ParamSpec("P")
R = TypeVar("R")

_PARSE_FAILURES = (
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    OverflowError,
    OSError,  # datetime.fromtimestamp on absurd epochs
    ArithmeticError,
    RecursionError,
    UnicodeError,
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,  # a BaseException: e.g. an epoch out of every date's range
)


def guarded(provider: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a parser so only `ProviderError`s leave it (see the module docstring)."""

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            symbol = kwargs.get("symbol", args[1] if len(args) > 1 else None)
            sym = symbol if isinstance(symbol, str) else None
            try:
                return func(*args, **kwargs)
            except ProviderError:
                raise
            except QuantiVistaError as exc:  # SchemaError from coerce_*: the body was bad
                raise MalformedResponseError(
                    f"{provider} response does not fit the canonical schema: {exc.message}",
                    provider=provider,
                    symbol=sym,
                ) from exc
            except _PARSE_FAILURES as exc:
                raise MalformedResponseError(
                    f"unexpected {provider} response shape ({type(exc).__name__}: {exc})"[:500],
                    provider=provider,
                    symbol=sym,
                ) from exc

        return inner

    return wrap


def text_of(body: bytes | str) -> str:
    """Decode a body as UTF-8 (invalid bytes replaced: vendors' error pages are not strict)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", errors="replace")
    return body


def load_json(body: bytes | str, provider: str, symbol: str | None) -> Any:
    """Parse a JSON body or raise `MalformedResponseError` quoting its start.

    orjson first (a few times faster); what it refuses and `json` takes (NaN, integers
    beyond 64 bits, invalid UTF-8 replaced) goes to `json`, which decides.
    """
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    text = text_of(body)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        snippet = text.strip()[:120]
        raise MalformedResponseError(
            f"{provider} sent a body that is not JSON: {snippet!r}",
            provider=provider,
            symbol=symbol,
        ) from exc


def require(
    value: Any, kind: type | tuple[type, ...], what: str, provider: str, symbol: str | None
) -> Any:
    """Return `value` if it is of `kind`, else raise `MalformedResponseError` about `what`."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedResponseError(
            f"{provider} response: {what} has the wrong type ({type(value).__name__})",
            provider=provider,
            symbol=symbol,
        )
    return value


def float_column(name: str, values: Sequence[Any]) -> pl.Series:
    """Build a Float64 column from JSON numbers or numeric strings; anything else is refused."""
    if any(isinstance(v, bool) for v in values):
        raise TypeError(f"booleans in numeric column {name!r}")
    if any(isinstance(v, str) for v in values):
        strings = pl.Series(name, [None if v is None else str(v) for v in values], pl.String)
        return strings.str.strip_chars().cast(pl.Float64, strict=True)
    return pl.Series(name, values, dtype=pl.Float64, strict=True)


def local_dates_to_utc(ts: pl.Expr, tz: str) -> pl.Expr:
    """Map UTC instants to 00:00 UTC of their calendar date in `tz` (daily-bar convention)."""
    return ts.dt.convert_time_zone(tz).dt.date().cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def finish_bars(
    columns: Mapping[str, pl.Series | Sequence[Any]],
    *,
    symbol: str,
    timeframe: TimeframeLike,
    provider: str,
) -> pl.DataFrame:
    """Turn parsed columns (`ts` UTC or date, OHLCV, optional vwap/trades) into canonical bars.

    Rows are sorted by time; the canonical schema's bookkeeping columns are filled.
    """
    df = pl.DataFrame(dict(columns))
    if df.is_empty():
        return pl.DataFrame(schema=BAR_POLARS_SCHEMA)
    df = df.with_columns(pl.lit(symbol, pl.String).alias("symbol"))
    bars = coerce_bars(df, timeframe=Timeframe.parse(timeframe), provider=provider)
    return bars.sort("ts")


def bars_of(
    columns: pl.LazyFrame, *, symbol: str, timeframe: Timeframe, provider: str
) -> pl.DataFrame:
    """Return canonical bars from `ts` (UTC) and every value column, typed, in one collect.

    What `finish_bars` gets to through `coerce_bars`, for columns a parser has already built
    to the schema (numbers checked): the bookkeeping columns are constants, the symbol is
    canonicalized once; rows sorted by time.
    """
    constants = {
        "symbol": pl.lit(_canonical_symbol(symbol), pl.String),
        "timeframe": pl.lit(str(timeframe), pl.String),
        "provider": pl.lit(provider, pl.String),
        "quality_flags": pl.lit(0, pl.UInt32),
        "ingested_at": pl.lit(None, PL_UTC_TS),
        "job_id": pl.lit(None, pl.String),
    }
    exprs = [
        constants[name].alias(name) if name in constants else pl.col(name).cast(dtype)
        for name, dtype in BAR_POLARS_SCHEMA.items()
    ]
    return columns.select(exprs).sort("ts").collect()


@functools.lru_cache(maxsize=4096)
def _canonical_symbol(symbol: str) -> str:
    canonical, _ = canonical_symbols(pl.Series([symbol], dtype=pl.String))
    return str(canonical[0])


def empty_actions() -> pl.DataFrame:
    """Return an empty frame in the canonical action schema."""
    return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)


def actions_frame(columns: Mapping[str, Any], provider: str) -> pl.DataFrame:
    """Build canonical corporate actions from columns (at least symbol, action_type, ex_date)."""
    df = pl.DataFrame(dict(columns))
    if df.is_empty():
        return empty_actions()
    return coerce_actions(df, provider=provider).sort("ex_date", "action_type")
