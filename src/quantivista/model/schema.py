"""Canonical schemas (Arrow and Polars) and the conversion of user frames into them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import polars as pl
import pyarrow as pa

from quantivista.errors import SchemaError
from quantivista.model.symbols import canonical_symbols
from quantivista.model.timeframe import Timeframe, TimeframeLike

__all__ = [
    "ACTION_COLUMNS",
    "ACTION_POLARS_SCHEMA",
    "ACTION_SCHEMA",
    "ACTION_TYPES",
    "BAR_COLUMNS",
    "BAR_KEY",
    "BAR_POLARS_SCHEMA",
    "BAR_SCHEMA",
    "BAR_VALUE_COLUMNS",
    "FrameLike",
    "QUARANTINE_POLARS_SCHEMA",
    "QUARANTINE_ROW_ID",
    "QUARANTINE_SAME",
    "RAW_MANIFEST_SCHEMA",
    "RELEASE_POLARS_SCHEMA",
    "SCORE_SCHEMA",
    "STORED_SCORE_SCHEMA",
    "bar_exprs",
    "coerce_actions",
    "coerce_bars",
    "coerce_bars_checked",
    "empty_bars",
    "series_in_blocks",
    "to_polars",
    "utc_expr",
    "utc_lit",
]

UTC_TS = pa.timestamp("us", tz="UTC")
PL_UTC_TS = pl.Datetime("us", "UTC")

BAR_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", UTC_TS, nullable=False),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("vwap", pa.float64()),
        pa.field("trades", pa.int64()),
        pa.field("provider", pa.string()),
        pa.field("quality_flags", pa.uint32(), nullable=False),
        pa.field("ingested_at", UTC_TS),
        pa.field("job_id", pa.string()),
    ]
)

BAR_POLARS_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "timeframe": pl.String(),
        "ts": PL_UTC_TS,
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "vwap": pl.Float64(),
        "trades": pl.Int64(),
        "provider": pl.String(),
        "quality_flags": pl.UInt32(),
        "ingested_at": PL_UTC_TS,
        "job_id": pl.String(),
    }
)

BAR_COLUMNS: tuple[str, ...] = tuple(BAR_POLARS_SCHEMA.names())
BAR_KEY: tuple[str, ...] = ("symbol", "timeframe", "ts")
# the columns whose change makes a bar a different bar (knowledge-time bookkeeping excluded)
BAR_VALUE_COLUMNS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume", "vwap", "trades", "provider", "quality_flags",
)  # fmt: skip
_REQUIRED_BAR = ("symbol", "ts", "open", "high", "low", "close", "volume")

ACTION_TYPES: tuple[str, ...] = (
    "split", "dividend", "special_dividend", "stock_dividend", "spinoff",
    "merger", "symbol_change", "rights", "delisting",
)  # fmt: skip

ACTION_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("action_type", pa.string(), nullable=False),
        pa.field("ex_date", pa.date32(), nullable=False),
        pa.field("ratio", pa.float64()),
        pa.field("amount", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("new_symbol", pa.string()),
        pa.field("provider", pa.string()),
    ]
)
ACTION_POLARS_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "action_type": pl.String(),
        "ex_date": pl.Date(),
        "ratio": pl.Float64(),
        "amount": pl.Float64(),
        "currency": pl.String(),
        "new_symbol": pl.String(),
        "provider": pl.String(),
    }
)
ACTION_COLUMNS: tuple[str, ...] = tuple(ACTION_POLARS_SCHEMA.names())

QUARANTINE_POLARS_SCHEMA = pl.Schema(
    {
        **BAR_POLARS_SCHEMA,
        "rule": pl.String(),
        "severity": pl.String(),
        "reason": pl.String(),
        "quarantined_at": PL_UTC_TS,
    }
)

# what identifies one quarantined row (a conflicting duplicate may repeat the bar key)
QUARANTINE_ROW_ID: tuple[str, ...] = (
    "job_id",
    "symbol",
    "timeframe",
    "ts",
    "quarantined_at",
    "rule",
)
# what makes two quarantine rows the same rejection (a re-ingest of the same bad bar)
QUARANTINE_SAME: tuple[str, ...] = (
    "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap", "trades",
    "provider", "rule", "reason",
)  # fmt: skip
# one record per released quarantine row: which row, when, through which job
RELEASE_POLARS_SCHEMA = pl.Schema(
    {
        **{c: QUARANTINE_POLARS_SCHEMA[c] for c in QUARANTINE_ROW_ID},
        "released_at": PL_UTC_TS,
        "release_job_id": pl.String(),
    }
)
# one row per raw payload kept in bronze
RAW_MANIFEST_SCHEMA = pl.Schema(
    {
        "job_id": pl.String(),
        "provider": pl.String(),
        "url": pl.String(),
        "status_code": pl.Int32(),
        "content_type": pl.String(),
        "received_at": PL_UTC_TS,
        "sha256": pl.String(),
        "bytes": pl.Int64(),
        "path": pl.String(),
    }
)

FrameLike = Any  # polars.DataFrame | pandas.DataFrame | pyarrow.Table | Mapping of columns


def to_polars(frame: FrameLike) -> pl.DataFrame:
    """Turn a polars/pandas frame, an Arrow table or a mapping of columns into a polars frame."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if isinstance(frame, pa.Table | pa.RecordBatch):
        out = pl.from_arrow(frame)
        assert isinstance(out, pl.DataFrame)
        return out
    if isinstance(frame, Mapping):
        return pl.DataFrame(dict(frame))
    module = type(frame).__module__
    if module.startswith("pandas"):
        index = getattr(frame, "index", None)
        keep_index = index is not None and type(index).__name__ != "RangeIndex"
        try:
            return pl.from_pandas(frame, include_index=keep_index)
        except Exception as exc:  # pandas object columns of mixed types
            bad = []
            for col in frame.columns:
                try:
                    pl.from_pandas(frame[[col]])
                except Exception:
                    bad.append(str(col))
            raise SchemaError(
                f"cannot convert the pandas frame: columns {', '.join(bad) or '?'} mix types",
                columns=bad,
            ) from exc
    raise SchemaError(
        "expected a polars or pandas DataFrame, a pyarrow Table or a dict of columns",
        got=type(frame).__name__,
    )


_BAR_DEFAULTS: dict[str, pl.Expr] = {
    "quality_flags": pl.lit(0, pl.UInt32),  # clean until validated
    "ingested_at": pl.lit(None, PL_UTC_TS),
    "job_id": pl.lit(None, pl.String),
}


def bar_exprs(timeframe: str, **values: pl.Expr) -> list[pl.Expr]:
    """Return the select that makes canonical bars (`BAR_POLARS_SCHEMA`: every column, in
    order and type) of a frame of typed bar values: a column is `values[name]` if given,
    else the frame's column of that name (symbol, ts, open, high, low, close, volume, vwap,
    trades, provider), else its default (`timeframe`; `quality_flags` 0; `ingested_at`,
    `job_id` null). The one definition of bars built without `coerce` (the stream's, from
    its own typed trades): what `coerce` checks holds by construction there."""
    exprs = []
    for name, dtype in BAR_POLARS_SCHEMA.items():
        expr = values.get(name)
        if expr is None:
            if name == "timeframe":
                expr = pl.lit(timeframe, pl.String)
            else:
                expr = _BAR_DEFAULTS.get(name, pl.col(name))
        exprs.append(expr.cast(dtype).alias(name))
    return exprs


def empty_bars() -> pl.DataFrame:
    """Return an empty frame in the canonical bar schema."""
    return pl.DataFrame(schema=BAR_POLARS_SCHEMA)


def utc_expr(col: pl.Series, name: str) -> pl.Expr:
    """Return the expression turning `col` (dates or timezone-aware datetimes) into UTC
    microseconds under its `name`; raise `SchemaError` for naive datetimes or other types."""
    dtype = col.dtype
    if dtype == pl.Date:
        return pl.col(name).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise SchemaError(
                f"column {name!r} holds naive datetimes; timestamps must be timezone-aware "
                f"(e.g. .dt.replace_time_zone('UTC') or tz_localize('America/New_York'))"
            )
        return pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    raise SchemaError(f"column {name!r} must be a datetime or date column", dtype=str(dtype))


def coerce_bars(
    frame: FrameLike,
    *,
    timeframe: TimeframeLike | None = None,
    provider: str | None = None,
    job_id: str | None = None,
    ingested_at: datetime | None = None,
) -> pl.DataFrame:
    """Return `frame` as a polars frame in the canonical bar schema, or raise `SchemaError`.

    Missing optional columns are filled (`vwap`, `trades` null; `quality_flags` 0;
    `provider`, `job_id`, `ingested_at` from the arguments). Integer prices and volumes are
    widened to float64; strings where numbers belong, naive timestamps and unknown columns
    are refused rather than guessed at. Symbols follow the one symbol rule
    (`model.symbols`): stripped and upper-cased; `coerce_bars_checked` also says which
    rows' symbols are still invalid.
    """
    return coerce_bars_checked(
        frame, timeframe=timeframe, provider=provider, job_id=job_id, ingested_at=ingested_at
    )[0]


def coerce_bars_checked(
    frame: FrameLike,
    *,
    timeframe: TimeframeLike | None = None,
    provider: str | None = None,
    job_id: str | None = None,
    ingested_at: datetime | None = None,
) -> tuple[pl.DataFrame, pl.Series | None]:
    """Return `coerce_bars(frame)` and each row's symbol problem (None when every symbol is
    valid): the pipeline holds those rows for quarantine instead of failing the batch."""
    df = to_polars(frame)
    if "ts" not in df.columns:
        for alt in ("timestamp", "date", "datetime", "time"):
            if alt in df.columns:
                df = df.rename({alt: "ts"})
                break
    missing = [c for c in _REQUIRED_BAR if c not in df.columns]
    if "timeframe" not in df.columns and timeframe is None:
        missing.append("timeframe")
    if missing:
        raise SchemaError(
            f"bars frame lacks required columns: {', '.join(missing)}", columns=df.columns
        )
    unknown = [c for c in df.columns if c not in BAR_POLARS_SCHEMA]
    if unknown:
        raise SchemaError(
            f"bars frame has columns outside the canonical schema: {', '.join(unknown)}",
            allowed=list(BAR_COLUMNS),
        )
    exprs: dict[str, pl.Expr] = {}
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        if name in df.columns:
            dtype = df.schema[name]
            if not (dtype.is_numeric() or dtype == pl.Null):
                raise SchemaError(f"column {name!r} must be numeric", dtype=str(dtype))
            exprs[name] = _FLOAT_COLUMNS[name]
        else:
            exprs[name] = _ABSENT[name]
    if "trades" in df.columns:
        dtype = df.schema["trades"]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise SchemaError("column 'trades' must be numeric", dtype=str(dtype))
        exprs["trades"] = _TRADES
    else:
        exprs["trades"] = _ABSENT["trades"]
    for name in ("symbol", "provider", "job_id", "timeframe"):
        if name in df.columns and df.schema[name] not in (pl.String, pl.Categorical, pl.Null):
            raise SchemaError(f"column {name!r} must hold strings", dtype=str(df.schema[name]))
    exprs["ts"] = utc_expr(df["ts"], "ts")
    symbols, problems = canonical_symbols(df["symbol"])
    df = df.with_columns(symbols.alias("symbol"))
    exprs["symbol"] = pl.col("symbol")
    if "timeframe" in df.columns:
        tf_values = df["timeframe"].cast(pl.String).unique().drop_nulls().to_list()
        canonical = {v: str(Timeframe.parse(v)) for v in tf_values}
        exprs["timeframe"] = pl.col("timeframe").cast(pl.String).replace(canonical)
    else:
        assert timeframe is not None
        exprs["timeframe"] = _text(str(Timeframe.parse(timeframe)), "timeframe")
    for name, value in (("provider", provider), ("job_id", job_id)):
        exprs[name] = (
            pl.col(name).cast(pl.String).fill_null(_text(value, name))
            if name in df.columns
            else _text(value, name)
        )
    if "quality_flags" in df.columns:
        exprs["quality_flags"] = _FLAGS
    else:
        exprs["quality_flags"] = _ABSENT["quality_flags"]
    if "ingested_at" in df.columns:
        ing = utc_expr(df["ingested_at"], "ingested_at")
        if ingested_at is not None:  # another zone: as given (polars finds the supertype)
            ing = ing.fill_null(utc_lit(ingested_at) if ingested_at.tzinfo is UTC else ingested_at)
        exprs["ingested_at"] = ing
    else:
        exprs["ingested_at"] = utc_lit(ingested_at).alias("ingested_at")
    try:  # in canonical order: no second select
        out = df.select([exprs[c] for c in BAR_COLUMNS])
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"cannot convert bars to the canonical schema: {exc}") from exc
    nulls = [out[c].null_count() for c in ("symbol", "timeframe", "ts")]  # no query: metadata
    if any(nulls):
        raise SchemaError(
            "symbol, timeframe and ts must not be null",
            null_counts=dict(zip(("symbol", "timeframe", "ts"), nulls, strict=True)),
        )
    return out, problems


# the expressions of `coerce_bars_checked`, built once (an expression costs Python calls
# to build, a literal several: a micro-batch's coerce spent a third of its time on them)
_FLOAT_COLUMNS: dict[str, pl.Expr] = {
    c: pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume", "vwap")
}
_ABSENT: dict[str, pl.Expr] = {
    **{c: pl.lit(None, pl.Float64).alias(c) for c in _FLOAT_COLUMNS},
    "trades": pl.lit(None, pl.Int64).alias("trades"),
    "quality_flags": pl.lit(0, pl.UInt32).alias("quality_flags"),
}
_TRADES = pl.col("trades").cast(pl.Int64, strict=False)
_FLAGS = pl.col("quality_flags").fill_null(0).cast(pl.UInt32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=64)
def _text(value: str | None, name: str) -> pl.Expr:
    """A string literal named `name` (providers and timeframes repeat: built once)."""
    return pl.lit(value, pl.String).alias(name)


def utc_lit(value: datetime | None) -> pl.Expr:
    """`pl.lit(value, PL_UTC_TS)`: a UTC datetime as its epoch microseconds, cast (a
    datetime literal costs ~30 times an integer one to build). UTC is `datetime.UTC` or
    `ZoneInfo("UTC")` (what polars returns); other zones and naive values: polars' own
    checks and reading."""
    zone = value.tzinfo if value is not None else None
    if zone is not UTC and getattr(zone, "key", None) != "UTC":
        return pl.lit(value, PL_UTC_TS)
    assert value is not None
    return pl.lit((value - _EPOCH) // _MICROSECOND, pl.Int64).cast(PL_UTC_TS)


def coerce_actions(frame: FrameLike, *, provider: str | None = None) -> pl.DataFrame:
    """Return corporate actions in the canonical action schema, or raise `SchemaError`."""
    df = to_polars(frame)
    missing = [c for c in ("symbol", "action_type", "ex_date") if c not in df.columns]
    if missing:
        raise SchemaError(f"actions frame lacks required columns: {', '.join(missing)}")
    unknown = [c for c in df.columns if c not in ACTION_POLARS_SCHEMA]
    if unknown:
        raise SchemaError(
            f"actions frame has unknown columns: {', '.join(unknown)}", allowed=list(ACTION_COLUMNS)
        )
    exprs: list[pl.Expr] = []
    for name, dtype in ACTION_POLARS_SCHEMA.items():
        if name not in df.columns:
            value = provider if name == "provider" else None
            exprs.append(pl.lit(value, dtype).alias(name))
        elif name == "ex_date":
            src = df.schema[name]
            if isinstance(src, pl.Datetime):
                exprs.append(pl.col(name).dt.date())
            elif src == pl.String:
                exprs.append(pl.col(name).str.to_date("%Y-%m-%d", strict=True))
            else:
                exprs.append(pl.col(name).cast(pl.Date))
        else:
            exprs.append(pl.col(name).cast(dtype))
    try:
        out = df.select(exprs)
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"cannot convert actions to the canonical schema: {exc}") from exc
    bad = out.filter(~pl.col("action_type").is_in(list(ACTION_TYPES)))
    if bad.height:
        raise SchemaError(
            "unknown action_type values",
            values=sorted(set(bad["action_type"].to_list()), key=str),
            allowed=list(ACTION_TYPES),
        )
    if provider is not None:
        out = out.with_columns(pl.col("provider").fill_null(provider))
    return out


def series_in_blocks(
    df: pl.DataFrame, by: Sequence[str] = ("symbol",), *, strict: bool = True
) -> bool:
    """Say whether each `by` series is one contiguous block of rising `ts`.

    That is the shape in which providers deliver bars (blocks in any order). With `strict`
    it proves no (by..., ts) key repeats without hashing or sorting every row; without, ts
    may repeat, so repeated keys are at least neighbours.
    """
    if df.height < 2:
        return True
    same = pl.all_horizontal([pl.col(c) == pl.col(c).shift() for c in by]).fill_null(False)
    ts = pl.col("ts")
    rising = ts > ts.shift() if strict else ts >= ts.shift()
    if not df.select((~same | rising).all()).item():
        return False
    return not df.filter(~same).select(*by).is_duplicated().any()


# one row per (symbol, timeframe, session date, job): the quality trend kept with the data
SCORE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "timeframe": pl.String(),
        "date": pl.Date(),
        "job_id": pl.String(),
        "rows": pl.UInt32(),
        "rejected": pl.UInt32(),
        "flagged": pl.UInt32(),
        "missing": pl.UInt32(),
        "score": pl.Float64(),
    }
)
STORED_SCORE_SCHEMA = pl.Schema({**SCORE_SCHEMA, "scored_at": PL_UTC_TS})
