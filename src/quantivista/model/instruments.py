"""Instruments and corporate-action events as validated records."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantivista.model.schema import ACTION_TYPES

__all__ = ["HISTORY_SCHEMA", "INSTRUMENT_SCHEMA", "AssetClass", "CorporateAction", "Instrument"]

# the instrument master's two tables: instruments by id, and their tickers over time
INSTRUMENT_SCHEMA = pl.Schema(
    {
        "instrument_id": pl.String(),
        "name": pl.String(),
        "asset_class": pl.String(),
        "currency": pl.String(),
        "exchange": pl.String(),
        "isin": pl.String(),
        "cusip": pl.String(),
        "sedol": pl.String(),
        "figi": pl.String(),
        "sector": pl.String(),
        "industry": pl.String(),
        "listed": pl.Date(),
        "delisted": pl.Date(),
    }
)
HISTORY_SCHEMA = pl.Schema(
    {
        "instrument_id": pl.String(),
        "symbol": pl.String(),
        "valid_from": pl.Date(),
        "valid_to": pl.Date(),
    }
)


class AssetClass(StrEnum):
    """What kind of thing an instrument is."""

    EQUITY = "equity"
    ETF = "etf"
    INDEX = "index"
    FX = "fx"
    CRYPTO = "crypto"
    FUTURE = "future"
    BOND = "bond"
    COMMODITY = "commodity"


class Instrument(BaseModel):
    """A tradable or observable thing, identified by its canonical symbol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1, max_length=64)
    name: str = ""
    asset_class: AssetClass = AssetClass.EQUITY
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    exchange: str = Field(default="XNYS", pattern=r"^[A-Z0-9]{4}$", description="ISO 10383 MIC")
    isin: str | None = None
    figi: str | None = None
    sector: str | None = None
    industry: str | None = None
    listed: date | None = None
    delisted: date | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Instrument:
        if self.listed and self.delisted and self.delisted < self.listed:
            raise ValueError(f"{self.symbol}: delisted {self.delisted} before listed {self.listed}")
        return self


class CorporateAction(BaseModel):
    """One corporate-action event, the row model of the canonical action schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    action_type: str
    ex_date: date
    ratio: float | None = Field(default=None, gt=0)
    amount: float | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    new_symbol: str | None = None
    provider: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CorporateAction:
        if self.action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action_type {self.action_type!r}")
        if self.action_type in ("split", "stock_dividend") and self.ratio is None:
            raise ValueError(f"a {self.action_type} needs a ratio (new shares per old share)")
        if self.action_type in ("dividend", "special_dividend") and self.amount is None:
            raise ValueError("a cash dividend needs an amount")
        if self.action_type == "symbol_change" and not self.new_symbol:
            raise ValueError("a symbol change needs new_symbol")
        return self
