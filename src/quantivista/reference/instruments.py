"""The instrument master: instruments, identifiers and point-in-time symbol history.

An instrument has a stable `instrument_id`; tickers are attached to it for validity
intervals (inclusive dates, null = open). FB (2012-05-18 .. 2022-06-08) and META (from
2022-06-09) belong to one instrument; WM of Washington Mutual (until 2008) and WM of Waste
Management (from 2009) are two. Lookups by (ticker, date) are `join_asof` joins.

Kept by the backend's `InstrumentStore` (lake: two Parquet files; PostgreSQL: two tables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from quantivista.errors import SchemaError
from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA, AssetClass, Instrument
from quantivista.model.schema import FrameLike, to_polars
from quantivista.reference.currencies import CURRENCIES
from quantivista.reference.identifiers import identifier_problems
from quantivista.timeutil import DateLike, to_date

if TYPE_CHECKING:
    from quantivista.providers.simulator.market import SimulatedMarket
    from quantivista.storage.contracts import InstrumentStore

__all__ = [
    "HISTORY_SCHEMA",
    "INSTRUMENT_SCHEMA",
    "InstrumentMaster",
    "ListedInstrument",
    "LoadReport",
]

_FAR_PAST = date(1, 1, 1)
_ASSET_CLASSES = [a.value for a in AssetClass]


class ListedInstrument(Instrument):
    """An instrument as found by a lookup: its stable id and the ticker it used that day."""

    instrument_id: str
    cusip: str | None = None
    sedol: str | None = None


@dataclass(frozen=True)
class LoadReport:
    """What a load stored and what it refused (rows with a `reason` column)."""

    instruments: int
    history: int
    rejected: pl.DataFrame


def _conform(frame: pl.DataFrame, schema: pl.Schema, what: str) -> pl.DataFrame:
    unknown = [c for c in frame.columns if c not in schema]
    if unknown:
        raise SchemaError(f"{what} has unknown columns: {', '.join(unknown)}")
    if "instrument_id" not in frame.columns:
        raise SchemaError(f"{what} needs an instrument_id column")
    fill = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame]
    out = frame.with_columns(fill)
    casts = {}
    for name, dtype in schema.items():
        if dtype == pl.Date() and out.schema[name] == pl.String():
            out = out.with_columns(pl.col(name).str.to_date(strict=False))
        casts[name] = dtype
    try:
        return out.select(schema.names()).cast(casts)  # type: ignore[arg-type]
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"{what} does not fit its schema: {exc}") from exc


def _instrument_problems(df: pl.DataFrame) -> pl.Series:
    checks = [
        pl.when(pl.col("instrument_id").is_null() | (pl.col("instrument_id") == ""))
        .then(pl.lit("missing instrument_id"))
        .otherwise(pl.lit("")),
        pl.when(~pl.col("asset_class").is_in(_ASSET_CLASSES))
        .then(pl.lit("unknown asset_class"))
        .otherwise(pl.lit("")),
        pl.when(~pl.col("currency").is_in(list(CURRENCIES)))
        .then(pl.lit("unknown ISO 4217 currency"))
        .otherwise(pl.lit("")),
        pl.when(~pl.col("exchange").str.contains(r"^[A-Z0-9]{4}$"))
        .then(pl.lit("exchange is not an ISO 10383 MIC"))
        .otherwise(pl.lit("")),
        pl.when(pl.col("delisted") < pl.col("listed"))
        .then(pl.lit("delisted before listed"))
        .otherwise(pl.lit("")),
    ]
    basic = df.select(
        pl.concat_str(checks, separator="; ").str.replace_all(r"(; )+", "; ").str.strip_chars("; ")
    ).to_series()
    ids = identifier_problems(df)
    both = pl.DataFrame({"a": basic, "b": ids}).select(
        pl.concat_str(["a", "b"], separator="; ").str.strip_chars("; ")
    )
    return both.to_series().alias("reason")


class InstrumentMaster:
    """Instruments and their ticker history, stored in the lake, with point-in-time lookups.

    **Usage:**

        p.instruments.load_csv("instruments.csv", history="symbols.csv")
        p.instruments.lookup("WM", on="2005-01-03")   # Washington Mutual
        p.instruments.lookup("WM", on="2010-01-04")   # Waste Management
    """

    def __init__(self, store: InstrumentStore | Path | str) -> None:
        if isinstance(store, (str, Path)):  # a data directory: its embedded store
            from quantivista.storage.lake.instruments import ParquetInstrumentStore

            store = ParquetInstrumentStore(Path(store))
        self.store = store

    # -- reads ---------------------------------------------------------------------------
    def instruments(self) -> pl.DataFrame:
        """Return every stored instrument."""
        return self.store.instruments()

    def symbol_history(self) -> pl.DataFrame:
        """Return every ticker interval (instrument_id, symbol, valid_from, valid_to)."""
        return self.store.symbol_history()

    def history(self, instrument_id: str) -> pl.DataFrame:
        """Return the tickers one instrument used, oldest first."""
        return (
            self.symbol_history()
            .filter(pl.col("instrument_id") == instrument_id)
            .sort(pl.col("valid_from").fill_null(_FAR_PAST))
        )

    def resolve(
        self, requests: pl.DataFrame, symbol: str = "symbol", on: str = "date"
    ) -> pl.DataFrame:
        """Add `instrument_id` to a frame of (ticker, date) requests, point in time.

        Vectorized: one `join_asof` per call, whatever the number of requests. A ticker not
        in use on that date gets a null id.
        """
        hist = (
            self.symbol_history()
            .with_columns(_from=pl.col("valid_from").fill_null(_FAR_PAST))
            .sort("_from")
        )
        left = requests.with_row_index("_i").with_columns(_on=pl.col(on).cast(pl.Date)).sort("_on")
        joined = left.join_asof(
            hist.select(
                pl.col("symbol").alias(symbol),
                "_from",
                "instrument_id",
                pl.col("valid_to").alias("_to"),
            ),
            left_on="_on",
            right_on="_from",
            by=symbol,
            strategy="backward",
            check_sortedness=False,  # both sides sorted just above
        )
        alive = pl.col("_to").is_null() | (pl.col("_to") >= pl.col("_on"))
        return (
            joined.with_columns(instrument_id=pl.when(alive).then("instrument_id").otherwise(None))
            .sort("_i")
            .drop("_i", "_on", "_from", "_to")
        )

    def lookup(self, symbol: str, on: DateLike | None = None) -> ListedInstrument | None:
        """Return the instrument that used `symbol` on `on` (default: the latest user)."""
        ticker = symbol.strip().upper()
        if on is None:
            hist = self.symbol_history().filter(pl.col("symbol") == ticker)
            if hist.is_empty():
                return None
            last = hist.sort(pl.col("valid_to").fill_null(date.max)).row(-1, named=True)
            instrument_id, day = last["instrument_id"], last["valid_to"] or last["valid_from"]
        else:
            day = to_date(on)
            found = self.resolve(pl.DataFrame({"symbol": [ticker], "date": [day]}))
            instrument_id = found["instrument_id"][0]
            if instrument_id is None:
                return None
        row = self.instruments().filter(pl.col("instrument_id") == instrument_id)
        if row.is_empty():
            return None
        record: dict[str, Any] = {k: v for k, v in row.row(0, named=True).items() if v is not None}
        return ListedInstrument(symbol=ticker, **record)

    # -- writes --------------------------------------------------------------------------
    def upsert(self, instruments: FrameLike, history: FrameLike | None = None) -> LoadReport:
        """Validate and store instruments (replacing by id) and their ticker history.

        Rows with a bad asset class, currency, MIC or identifier check digit are refused
        and returned in `LoadReport.rejected` with the reason; their history is not stored.
        When `history` is None and the frame has a `symbol` column, each instrument gets
        one interval from `listed` to `delisted`.
        """
        raw = to_polars(instruments)
        tickers = raw.select("instrument_id", "symbol") if "symbol" in raw.columns else None
        df = _conform(raw.drop("symbol", strict=False), INSTRUMENT_SCHEMA, "instruments")
        df = df.with_columns(
            pl.col("asset_class").fill_null(AssetClass.EQUITY.value).str.to_lowercase(),
            pl.col("currency").fill_null("USD").str.to_uppercase(),
            pl.col("exchange").fill_null("XNYS").str.to_uppercase(),
        )
        reason = _instrument_problems(df)
        rejected = df.with_columns(reason=reason).filter(pl.col("reason") != "")
        good = df.filter(reason == "")
        if history is not None:
            hist = _conform(to_polars(history), HISTORY_SCHEMA, "symbol history")
        elif tickers is not None:
            hist = tickers.join(
                good.select("instrument_id", "listed", "delisted"), on="instrument_id"
            )
            hist = hist.select(
                "instrument_id", "symbol", valid_from="listed", valid_to="delisted"
            ).cast(dict(HISTORY_SCHEMA))  # type: ignore[arg-type]
        else:
            hist = pl.DataFrame(schema=HISTORY_SCHEMA)
        hist = hist.with_columns(pl.col("symbol").str.strip_chars().str.to_uppercase()).filter(
            ~pl.col("instrument_id").is_in(rejected["instrument_id"].implode())
        )
        self.store.merge(good, hist)
        return LoadReport(good.height, hist.height, rejected)

    def load_csv(self, path: str | Path, history: str | Path | None = None) -> LoadReport:
        """Load instruments (and optionally a symbol-history file) from CSV."""
        frame = pl.read_csv(path, infer_schema=False)
        hist = pl.read_csv(history, infer_schema=False) if history is not None else None
        return self.upsert(
            _blank_to_null(frame), _blank_to_null(hist) if hist is not None else None
        )

    def load_json(self, path: str | Path) -> LoadReport:
        """Load a JSON file: a list of instruments, or {"instruments": [...], "history": [...]}.

        An instrument may carry its own tickers as "history": [{"symbol", "valid_from",
        "valid_to"}].
        """
        data = json.loads(Path(path).read_text())
        records = data["instruments"] if isinstance(data, dict) else data
        history: list[dict[str, Any]] = (
            list(data.get("history", [])) if isinstance(data, dict) else []
        )
        plain = []
        for rec in records:  # loop over the file's records (JSON nesting), not over bars
            rec = dict(rec)
            for item in rec.pop("history", []):
                history.append({"instrument_id": rec["instrument_id"], **item})
            plain.append(rec)
        frame = pl.DataFrame(plain, infer_schema_length=None)
        hist = pl.DataFrame(history, infer_schema_length=None) if history else None
        return self.upsert(frame, hist)

    def load_simulator(self, market: SimulatedMarket) -> LoadReport:
        """Load the simulated universe: instruments and `ticker_history()`."""
        frame = pl.DataFrame(
            {
                "instrument_id": [i.instrument_id for i in market.instruments],
                "name": [i.name for i in market.instruments],
                "sector": [i.sector for i in market.instruments],
                "exchange": [market.calendar.mic] * len(market.instruments),
            }
        )
        return self.upsert(frame, market.ticker_history())

    def load_ticker_history(self, instrument_id: str, tickers: pl.DataFrame) -> LoadReport:
        """Attach ticker intervals (ticker, valid_from, valid_to) to an instrument.

        A Lean map file gives them through `actions.lean.map_file_history`.
        """
        hist = tickers.select(
            pl.lit(instrument_id).alias("instrument_id"),
            pl.col("ticker").alias("symbol"),
            "valid_from",
            "valid_to",
        )
        known = self.instruments().filter(pl.col("instrument_id") == instrument_id)
        frame = known if known.height else pl.DataFrame({"instrument_id": [instrument_id]})
        return self.upsert(frame, hist)


def _blank_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col(c).str.strip_chars() == "").then(None).otherwise(pl.col(c)).alias(c)
        for c in frame.columns
    )
