"""QuantConnect Lean equity files: factor files, map files and daily price files.

- factor file `date,price_factor,split_factor,reference_price`: a row applies to bars after
  the previous row's date up to and including its own; the row date is the last session
  before an ex-date and `reference_price` the raw close that day. `20501231` is a sentinel.
- map file `date,ticker[,exchange]`: the ticker was used up to and including that date;
  `20501231` means still listed, an earlier last date means delisted.
- daily file (a zip of one CSV) `yyyyMMdd 00:00,open,high,low,close,volume`, prices in
  USD x 10000, raw.

The parsers are pure functions over text or paths; events come out in the canonical action
schema, bars in the canonical bar schema.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from quantivista.errors import SchemaError
from quantivista.model.schema import ACTION_COLUMNS, ACTION_POLARS_SCHEMA, coerce_bars
from quantivista.reference.calendars import get_calendar

__all__ = [
    "factor_file_actions",
    "map_file_actions",
    "map_file_history",
    "read_factor_file",
    "read_lean_daily",
    "read_map_file",
]

SENTINEL = date(2050, 12, 31)
_PROVIDER = "lean"
_TOLERANCE = 1e-12


def _text(source: str | Path | bytes) -> str:
    if isinstance(source, bytes):
        return source.decode()
    if isinstance(source, Path) or ("\n" not in source and "," not in source):
        return Path(source).read_text()
    return source


def _csv(text: str, names: list[str], what: str) -> pl.DataFrame:
    try:
        df = pl.read_csv(
            io.StringIO(text),
            has_header=False,
            new_columns=names,
            schema_overrides={names[0]: pl.String()},
            truncate_ragged_lines=True,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise SchemaError(f"cannot parse the Lean {what}: {exc}") from exc
    dates = df[names[0]].str.slice(0, 8).str.to_date("%Y%m%d", strict=False)
    if dates.null_count():
        raise SchemaError(f"Lean {what} has rows without a yyyyMMdd date", rows=dates.null_count())
    return df.with_columns(dates.alias(names[0]))


def read_factor_file(source: str | Path | bytes) -> pl.DataFrame:
    """Parse a Lean factor file into date, price_factor, split_factor, reference_price."""
    df = _csv(
        _text(source), ["date", "price_factor", "split_factor", "reference_price"], "factor file"
    )
    df = df.with_columns(pl.col("price_factor", "split_factor", "reference_price").cast(pl.Float64))
    bad = df.filter((pl.col("price_factor") <= 0) | (pl.col("split_factor") <= 0))
    if bad.height:
        raise SchemaError("Lean factor file has non-positive factors", rows=bad.height)
    return df.sort("date")


def read_map_file(source: str | Path | bytes) -> pl.DataFrame:
    """Parse a Lean map file into date, ticker (upper case), exchange (nullable)."""
    text = _text(source)
    width = max(len(line.split(",")) for line in text.splitlines() if line.strip())
    names = ["date", "ticker", "exchange", "mode"][: max(width, 2)]
    df = _csv(text, names, "map file")
    if "exchange" not in df.columns:
        df = df.with_columns(exchange=pl.lit(None, pl.String()))
    return df.select(
        "date", pl.col("ticker").str.to_uppercase(), pl.col("exchange").cast(pl.String)
    ).sort("date")


def map_file_history(map_rows: pl.DataFrame) -> pl.DataFrame:
    """Return the ticker intervals of a map file: ticker, valid_from, valid_to (null = open)."""
    rows = map_rows.sort("date")
    start = pl.col("date").shift(1) + timedelta(days=1)
    rows = rows.with_columns(
        _from=pl.when(start.is_null()).then(pl.col("date")).otherwise(start),
        _run=(pl.col("ticker") != pl.col("ticker").shift(1)).fill_null(True).cum_sum(),
    )
    return (
        rows.group_by("_run", maintain_order=True)
        .agg(
            pl.col("ticker").first(),
            pl.col("exchange").last(),
            valid_from=pl.col("_from").min(),
            valid_to=pl.col("date").max(),
        )
        .with_columns(
            valid_to=pl.when(pl.col("valid_to") >= SENTINEL).then(None).otherwise("valid_to")
        )
        .select("ticker", "exchange", "valid_from", "valid_to")
    )


def _next_session(days: pl.Series, mic: str) -> pl.Series:
    """Return the first session strictly after each day (vectorized on the calendar)."""
    sessions = get_calendar(mic).schedule.select("session").sort("session")
    frame = pl.DataFrame({"day": days}).with_row_index("_i").sort("day")
    joined = frame.join_asof(
        sessions,
        left_on="day",
        right_on="session",
        strategy="forward",
        allow_exact_matches=False,
    )
    out = joined.sort("_i")
    return out["session"].fill_null(out["day"] + timedelta(days=1))


def _empty_actions() -> pl.DataFrame:
    return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)


def _tickers_on(days: pl.Series, history: pl.DataFrame) -> pl.Series:
    hist = history.with_columns(pl.col("valid_to").fill_null(SENTINEL)).sort("valid_to")
    frame = pl.DataFrame({"day": days}).with_row_index("_i").sort("day")
    joined = frame.join_asof(
        hist.select("valid_to", "ticker"), left_on="day", right_on="valid_to", strategy="forward"
    ).sort("_i")
    return joined["ticker"]


def factor_file_actions(
    factors: pl.DataFrame,
    symbol: str,
    *,
    history: pl.DataFrame | None = None,
    mic: str = "XNYS",
    currency: str = "USD",
) -> pl.DataFrame:
    """Turn factor-file rows into split and dividend events (canonical action schema).

    Between consecutive rows i and i+1 the ex-date is the session after row i's date;
    a price-factor step gives a dividend D = ref_i x (1 - pf_i / pf_{i+1}), a split-factor
    step a split S = sf_{i+1} / sf_i (kept unrounded so the factors rebuild exactly).
    Events are attributed to `symbol`, or to the ticker in use on the ex-date when a symbol
    `history` (from `map_file_history`) is given.
    """
    rows = factors.sort("date")
    steps = rows.with_columns(
        _r=pl.col("price_factor") / pl.col("price_factor").shift(-1),
        _s=pl.col("split_factor").shift(-1) / pl.col("split_factor"),
    ).filter(pl.col("_r").is_not_null() & (pl.col("date") < SENTINEL))
    if steps.is_empty():
        return _empty_actions()
    steps = steps.with_columns(ex_date=_next_session(steps["date"], mic))
    tickers = (
        _tickers_on(steps["ex_date"], history)
        if history is not None
        else pl.Series([symbol.upper()] * steps.height)
    )
    steps = steps.with_columns(symbol=tickers.fill_null(symbol.upper()))
    divs = steps.filter((pl.col("_r") - 1.0).abs() > _TOLERANCE).select(
        "symbol",
        action_type=pl.lit("dividend"),
        ex_date="ex_date",
        ratio=pl.lit(None, pl.Float64()),
        amount=pl.col("reference_price") * (1.0 - pl.col("_r")),
    )
    splits = steps.filter((pl.col("_s") - 1.0).abs() > _TOLERANCE).select(
        "symbol",
        action_type=pl.lit("split"),
        ex_date="ex_date",
        ratio="_s",
        amount=pl.lit(None, pl.Float64()),
    )
    return (
        pl.concat([divs, splits])
        .with_columns(
            currency=pl.lit(currency),
            new_symbol=pl.lit(None, pl.String()),
            provider=pl.lit(_PROVIDER),
        )
        .select(ACTION_COLUMNS)
        .cast(dict(ACTION_POLARS_SCHEMA))  # type: ignore[arg-type]
        .sort("ex_date", "action_type")
    )


def map_file_actions(map_rows: pl.DataFrame, *, mic: str = "XNYS") -> pl.DataFrame:
    """Turn a map file into symbol_change events (and a delisting when it ended)."""
    hist = map_file_history(map_rows)
    changes = hist.with_columns(new_symbol=pl.col("ticker").shift(-1)).filter(
        pl.col("new_symbol").is_not_null()
    )
    frames = []
    if changes.height:
        frames.append(
            changes.select(
                symbol="ticker",
                action_type=pl.lit("symbol_change"),
                ex_date=_next_session(changes["valid_to"], mic),
                new_symbol="new_symbol",
            )
        )
    last = hist.tail(1).filter(pl.col("valid_to").is_not_null())
    if last.height:
        frames.append(
            last.select(
                symbol="ticker",
                action_type=pl.lit("delisting"),
                ex_date=_next_session(last["valid_to"], mic),
                new_symbol=pl.lit(None, pl.String()),
            )
        )
    if not frames:
        return _empty_actions()
    return (
        pl.concat(frames)
        .with_columns(
            ratio=pl.lit(None, pl.Float64()),
            amount=pl.lit(None, pl.Float64()),
            currency=pl.lit(None, pl.String()),
            provider=pl.lit(_PROVIDER),
        )
        .select(ACTION_COLUMNS)
        .cast(dict(ACTION_POLARS_SCHEMA))  # type: ignore[arg-type]
    )


def read_lean_daily(source: str | Path | bytes, symbol: str) -> pl.DataFrame:
    """Parse a Lean daily file (zip or CSV) into canonical bars of `symbol` (raw USD)."""
    raw = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if raw[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            raw = archive.read(archive.namelist()[0])
    df = _csv(raw.decode(), ["ts", "open", "high", "low", "close", "volume"], "daily file")
    scale = 10_000.0
    bars = df.select(
        symbol=pl.lit(symbol.upper()),
        ts=pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        open=pl.col("open") / scale,
        high=pl.col("high") / scale,
        low=pl.col("low") / scale,
        close=pl.col("close") / scale,
        volume=pl.col("volume").cast(pl.Float64),
    )
    return coerce_bars(bars, timeframe="1d", provider=_PROVIDER)
