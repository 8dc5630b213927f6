"""Well-known index series as instruments of class index (acquired through providers)."""

from __future__ import annotations

import polars as pl

from quantivista.reference.instruments import InstrumentMaster, LoadReport

__all__ = ["INDICES", "register_indices"]

# (instrument_id, provider ticker, name, currency, MIC of the calculating venue, sector)
_ROWS = [
    ("SPX", "^GSPC", "S&P 500", "USD", "XNYS", None),
    ("COMP", "^IXIC", "NASDAQ Composite", "USD", "XNAS", None),
    ("NDX", "^NDX", "NASDAQ-100", "USD", "XNAS", None),
    ("DJI", "^DJI", "Dow Jones Industrial Average", "USD", "XNYS", None),
    ("RUT", "^RUT", "Russell 2000", "USD", "XNYS", None),
    ("SPXIT", "^SP500-45", "S&P 500 Information Technology", "USD", "XNYS", "Technology"),
    ("SPXFN", "^SP500-40", "S&P 500 Financials", "USD", "XNYS", "Financials"),
    ("SPXHC", "^SP500-35", "S&P 500 Health Care", "USD", "XNYS", "Health Care"),
    ("SPXEN", "^GSPE", "S&P 500 Energy", "USD", "XNYS", "Energy"),
    ("UKX", "^FTSE", "FTSE 100", "GBP", "XLON", None),
    ("DAX", "^GDAXI", "DAX", "EUR", "XETR", None),
    ("SX5E", "^STOXX50E", "EURO STOXX 50", "EUR", "XETR", None),
    ("NKY", "^N225", "Nikkei 225", "JPY", "XTKS", None),
    ("HSI", "^HSI", "Hang Seng", "HKD", "XHKG", None),
]
INDICES = pl.DataFrame(
    _ROWS,
    schema=["instrument_id", "symbol", "name", "currency", "exchange", "sector"],
    orient="row",
)


def register_indices(master: InstrumentMaster) -> LoadReport:
    """Add the well-known indices to the instrument master (asset class index)."""
    return master.upsert(INDICES.with_columns(asset_class=pl.lit("index")))
