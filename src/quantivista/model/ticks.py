"""Quote and trade ticks."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = ["Quote", "Trade"]


class Quote(BaseModel):
    """Best bid and offer (or a vendor's last-price snapshot) at one instant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    ts: AwareDatetime
    bid: float | None = Field(default=None, gt=0)
    ask: float | None = Field(default=None, gt=0)
    bid_size: float | None = Field(default=None, ge=0)
    ask_size: float | None = Field(default=None, ge=0)
    last: float | None = Field(default=None, gt=0)
    provider: str | None = None

    @model_validator(mode="after")
    def _not_crossed(self) -> Quote:
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError(f"crossed quote: bid {self.bid} above ask {self.ask}")
        return self

    @property
    def mid(self) -> float | None:
        """Return the mid price when both sides are present."""
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2


class Trade(BaseModel):
    """One print on the tape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    ts: AwareDatetime
    price: float = Field(gt=0)
    size: float = Field(ge=0)
    conditions: tuple[str, ...] = ()
    trade_id: str | None = None
    provider: str | None = None

    def dedup_key(self) -> tuple[str, datetime, float, float]:
        """Return the key vendors' duplicate deliveries share (symbol, ts, price, size)."""
        return (self.symbol, self.ts, self.price, self.size)
