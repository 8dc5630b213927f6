"""Simulated QuantiVista workflows: the reporting side's sources, seeded and reproducible.

    written = simulate_workflows(Path("./workflows"), seed=7, rows=10_000)

Datasets (each in CSV, NDJSON, Parquet, Avro and Protobuf, `<dataset>.<ext>`):

- `positions` (portfolio management): portfolio_id, data_type, symbol, quantity,
  market_value, currency, as_of (New York wall time, text);
- `performance` and `risk` (portfolio management): per portfolio and day;
- `executions` (trade execution): orders, executions and settlements in one record
  (order_*, execution_*, settlement_* columns), execution_time in New York wall time;
- `news` (market intelligence): headline, symbol, sentiment, published_at, entities
  (nested JSON text);
- `instrument_analytics`: symbol, a nested `metrics` document.

About `error_rate` of the rows carry an injected error: a price that is not a number,
a missing or duplicated trade id, a negative quantity, an unknown symbol, a sentiment
out of [-1, 1]. `EXPECTED_ERRORS` says which column each dataset's errors are in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quantivista.model.workflow import DataFormat
from quantivista.reporting.connectors import encode_protobuf

__all__ = ["DATASETS", "EXTENSIONS", "SYMBOLS", "simulate_workflows", "write_frame"]

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "JPM", "XOM", "SAP", "ASML", "TM"]
_CURRENCIES = ["USD", "USD", "USD", "EUR", "GBP"]
EXTENSIONS = {
    DataFormat.CSV: "csv",
    DataFormat.JSON: "ndjson",
    DataFormat.PARQUET: "parquet",
    DataFormat.AVRO: "avro",
    DataFormat.PROTOBUF: "pb",
}
DATASETS = ("positions", "performance", "risk", "executions", "news", "instrument_analytics")
_START = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


def _errors(rng: np.random.Generator, n: int, rate: float) -> np.ndarray[Any, Any]:
    return rng.random(n) < rate


def _positions(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    bad = _errors(rng, n, rate)
    qty = rng.integers(1, 5000, n).astype(float)
    qty[bad & (rng.random(n) < 0.5)] = -qty[bad & (rng.random(n) < 0.5)].mean()
    symbols = np.array(SYMBOLS)[rng.integers(0, len(SYMBOLS), n)].astype(object)
    symbols[bad & (qty > 0)] = "ZZZZ"
    when = [_START + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 20, n)]
    return pl.DataFrame(
        {
            "portfolio_id": [f"PF{i:03d}" for i in rng.integers(1, 25, n)],
            "data_type": "positions",
            "symbol": symbols.tolist(),
            "quantity": qty,
            "market_value": np.round(qty * rng.uniform(20, 900, n), 2),
            "currency": np.array(_CURRENCIES)[rng.integers(0, len(_CURRENCIES), n)].tolist(),
            "as_of": [w.strftime("%Y-%m-%d %H:%M:%S") for w in when],
        }
    )


def _performance(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    bad = _errors(rng, n, rate)
    ret = rng.normal(0.0004, 0.01, n)
    ret[bad] = 9.9  # a 990% daily return: out of range
    return pl.DataFrame(
        {
            "portfolio_id": [f"PF{i:03d}" for i in rng.integers(1, 25, n)],
            "date": [
                (_START + timedelta(days=int(d))).date().isoformat() for d in rng.integers(0, 30, n)
            ],
            "daily_return": ret,
            "nav": np.round(rng.uniform(1e6, 5e7, n), 2),
            "benchmark_return": rng.normal(0.0003, 0.009, n),
        }
    )


def _risk(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    bad = _errors(rng, n, rate)
    var = rng.uniform(1e4, 1e6, n)
    var[bad] = np.nan
    return pl.DataFrame(
        {
            "portfolio_id": [f"PF{i:03d}" for i in rng.integers(1, 25, n)],
            "date": [
                (_START + timedelta(days=int(d))).date().isoformat() for d in rng.integers(0, 30, n)
            ],
            "var_95": var,
            "expected_shortfall": var * 1.3,
            "beta": rng.normal(1.0, 0.2, n),
            "volatility": rng.uniform(0.05, 0.6, n),
        }
    )


def executions_frame(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    """Return `n` trade records (order, execution, settlement) with injected errors."""
    bad = _errors(rng, n, rate)
    kind = rng.integers(0, 3, n)
    ids = np.array([f"T{i:09d}" for i in range(n)], dtype=object)
    ids[bad & (kind == 0)] = None
    dup = bad & (kind == 1)
    ids[dup] = ids[np.maximum(np.nonzero(dup)[0] - 1, 0)]
    price = np.round(rng.uniform(10, 900, n), 4).astype(str).astype(object)
    price[bad & (kind == 2)] = "n/a"
    qty = rng.integers(1, 10_000, n)
    seconds = rng.integers(0, 20 * 86_400, n)
    # New York wall time as text, the way an OMS export writes it
    base = int(datetime(2026, 11, 2, 9, 30, tzinfo=UTC).timestamp())
    when = pl.from_epoch(pl.Series(base + seconds), time_unit="s")
    return pl.DataFrame(
        {
            "trade_id": ids.tolist(),
            "order_id": [f"O{i:09d}" for i in range(n)],
            "order_side": np.where(rng.random(n) < 0.5, "BUY", "SELL").tolist(),
            "order_qty": qty,
            "order_type": np.where(rng.random(n) < 0.7, "LIMIT", "MARKET").tolist(),
            "symbol": np.array(SYMBOLS)[rng.integers(0, len(SYMBOLS), n)].tolist(),
            "execution_time": when.dt.strftime("%Y-%m-%d %H:%M:%S"),
            "execution_price": price.tolist(),
            "execution_qty": qty,
            "venue": np.array(["XNYS", "XNAS", "BATS", "IEXG"])[rng.integers(0, 4, n)].tolist(),
            "currency": np.array(_CURRENCIES)[rng.integers(0, len(_CURRENCIES), n)].tolist(),
            "settlement_status": np.where(rng.random(n) < 0.97, "SETTLED", "PENDING").tolist(),
            "settlement_days": np.full(n, 1, dtype=np.int64),
        }
    )


def _news(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    bad = _errors(rng, n, rate)
    sentiment = rng.uniform(-1, 1, n)
    sentiment[bad] = 3.0
    symbols = np.array(SYMBOLS)[rng.integers(0, len(SYMBOLS), n)]
    return pl.DataFrame(
        {
            "news_id": [f"N{i:08d}" for i in range(n)],
            "symbol": symbols.tolist(),
            "headline": [f"{s} update {i}" for i, s in enumerate(symbols)],
            "sentiment": sentiment,
            "published_at": [
                (_START + timedelta(minutes=int(m))).isoformat() for m in rng.integers(0, 40_000, n)
            ],
            "entities": [
                json.dumps({"ticker": s, "source": {"name": "wire", "rank": int(r)}})
                for s, r in zip(symbols, rng.integers(1, 5, n), strict=True)
            ],
        }
    )


def _analytics(rng: np.random.Generator, n: int, rate: float) -> pl.DataFrame:
    bad = _errors(rng, n, rate)
    symbols = np.array(SYMBOLS, dtype=object)[rng.integers(0, len(SYMBOLS), n)]
    symbols[bad] = None
    return pl.DataFrame(
        {
            "symbol": symbols.tolist(),
            "date": [
                (_START + timedelta(days=int(d))).date().isoformat() for d in rng.integers(0, 30, n)
            ],
            "metrics": [
                json.dumps({"pe": round(float(p), 2), "momentum": {"m1": round(float(m), 4)}})
                for p, m in zip(rng.uniform(5, 60, n), rng.normal(0, 0.05, n), strict=True)
            ],
        }
    )


_MAKERS = {
    "positions": _positions,
    "performance": _performance,
    "risk": _risk,
    "executions": executions_frame,
    "news": _news,
    "instrument_analytics": _analytics,
}


def write_frame(frame: pl.DataFrame, path: Path, fmt: DataFormat) -> None:
    """Write a frame in a source format (Avro with a schema inferred from the frame)."""
    if fmt is DataFormat.CSV:
        frame.write_csv(path)
    elif fmt is DataFormat.JSON:
        frame.write_ndjson(path)
    elif fmt is DataFormat.PARQUET:
        frame.write_parquet(path)
    elif fmt is DataFormat.AVRO:
        import fastavro

        types = {pl.Float64: "double", pl.Int64: "long", pl.String: "string"}
        fields = [
            {"name": c, "type": ["null", types.get(type(t), "string")]}
            for c, t in frame.schema.items()
        ]
        schema = fastavro.parse_schema({"type": "record", "name": "Row", "fields": fields})
        with path.open("wb") as handle:
            fastavro.writer(handle, schema, frame.to_dicts())
    else:
        path.write_bytes(encode_protobuf(frame.to_dicts()))


def simulate_workflows(
    out: Path,
    *,
    seed: int = 7,
    rows: int = 1000,
    error_rate: float = 0.02,
    formats: tuple[DataFormat, ...] = tuple(EXTENSIONS),
    datasets: tuple[str, ...] = DATASETS,
) -> list[Path]:
    """Write every dataset in every format under `out`; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for offset, name in enumerate(datasets):
        frame = _MAKERS[name](np.random.default_rng(seed + offset), rows, error_rate)
        for fmt in formats:
            path = out / f"{name}.{EXTENSIONS[fmt]}"
            write_frame(frame, path, fmt)
            written.append(path)
    return written
