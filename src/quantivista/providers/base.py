"""The provider contract: what a data source declares and how it answers a request.

A provider turns a `BarRequest` into bars in the canonical schema (polars), plus corporate
actions where the vendor gives them, plus the raw payloads it received (the bronze layer).
Building requests and parsing responses are pure functions in each provider module; the
I/O (HTTP client, clock) is injected, so parsers are tested offline on recorded responses.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import polars as pl

from quantivista.model.instruments import AssetClass
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import ACTION_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.timeutil import DateLike, to_date, to_utc

if TYPE_CHECKING:
    from quantivista.actions.adjust import DividendConvention
    from quantivista.clock import Clock
    from quantivista.config import Settings

__all__ = [
    "AdjustmentBasis",
    "BarRequest",
    "CallGate",
    "FetchResult",
    "PriceBasis",
    "Provider",
    "ProviderCapabilities",
    "RawPayload",
    "request_range",
]


class PriceBasis(StrEnum):
    """Which corporate actions the bars a provider's client returns are adjusted for.

    This is the basis of the bars as they leave the client (after its parser), not of the
    vendor's wire format: Yahoo's chart prices are split-adjusted on the wire, but the Yahoo
    parser multiplies the splits back in, so its client returns raw bars (`NONE`).
    Normalization (`processing.normalize.to_raw_basis`) turns every other basis into raw
    prices before bars reach the silver layer, which stores raw prices only.

    - `NONE`: raw, as traded.
    - `SPLITS`: divided by the ratios of the splits (and stock dividends) with an ex-date
      after the bar, up to the day the response was produced; volumes multiplied by them.
    - `SPLITS_AND_DIVIDENDS`: also multiplied by a factor per cash dividend after the bar
      (the provider's notes say which convention: CRSP `1 - D / C_prev` or Alpha Vantage
      `C_ex / (C_ex + D)`); volumes as for `SPLITS`.
    """

    NONE = "none"
    SPLITS = "splits"
    SPLITS_AND_DIVIDENDS = "splits_and_dividends"
    RAW = "none"  # an alias of NONE (the member's former name)


AdjustmentBasis = PriceBasis  # the former name of PriceBasis, kept for callers


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    """What a provider can deliver and at what cost; the router chooses providers by these.

    `price_basis` is the basis (see `PriceBasis`) of the daily and coarser bars the client
    returns, `intraday_price_basis` that of its intraday bars (None: the same as
    `price_basis`); `basis_for(timeframe)` picks one. `dividend_convention` says how a
    `SPLITS_AND_DIVIDENDS` basis accounts for dividends (`crsp` or `alpha_vantage`, the
    names `actions.adjust` uses). A client that knows one response differs from its
    declaration puts the response's basis in `FetchResult.metadata["price_basis"]`.
    """

    asset_classes: frozenset[AssetClass]
    timeframes: frozenset[str]
    price_basis: PriceBasis = PriceBasis.NONE
    intraday_price_basis: PriceBasis | None = None
    dividend_convention: DividendConvention = "crsp"
    history_start: date | None = None
    intraday_lookback_days: int | None = None
    realtime: bool = False
    corporate_actions: bool = False
    requires_key: bool = False
    cost_per_call: float = 0.0
    priority: int = 100
    timestamp_convention: str = "bar start, UTC; daily bars at 00:00 UTC of the session date"
    notes: str = ""

    def supports(self, timeframe: TimeframeLike, asset_class: AssetClass | None = None) -> bool:
        """Say whether this provider serves `timeframe` bars (and the asset class if given)."""
        tf = str(Timeframe.parse(timeframe))
        if tf not in self.timeframes:
            return False
        return asset_class is None or asset_class in self.asset_classes

    def basis_for(self, timeframe: TimeframeLike) -> PriceBasis:
        """Return the basis of the `timeframe` bars this provider's client returns."""
        if Timeframe.parse(timeframe).is_intraday and self.intraday_price_basis is not None:
            return self.intraday_price_basis
        return self.price_basis

    @property
    def adjustment(self) -> PriceBasis:
        """Return the basis of daily bars (the former name of `price_basis`)."""
        return self.price_basis


@dataclass(frozen=True, slots=True)
class BarRequest:
    """Bars of one symbol over `[start, end)` in UTC."""

    symbol: str
    timeframe: Timeframe
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("BarRequest bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty request range {self.start} .. {self.end}")

    @classmethod
    def of(
        cls, symbol: str, start: DateLike, end: DateLike, timeframe: TimeframeLike = "1d"
    ) -> BarRequest:
        """Build a request from user-style bounds (`end` inclusive, see `request_range`)."""
        lo, hi = request_range(start, end)
        return cls(symbol, Timeframe.parse(timeframe), lo, hi)

    @property
    def start_date(self) -> date:
        """Return the first calendar date (UTC) the request covers."""
        return self.start.date()

    @property
    def last_date(self) -> date:
        """Return the last calendar date (UTC) the request covers."""
        return (self.end - timedelta(microseconds=1)).date()


def request_range(start: DateLike, end: DateLike) -> tuple[datetime, datetime]:
    """Turn user bounds into a half-open UTC range `[start, end)`.

    A date (or date string) as `end` includes that whole day; a datetime as `end` includes
    that instant.
    """
    lo = to_utc(start)
    if isinstance(end, datetime) or (isinstance(end, str) and len(end.strip()) > 10):
        hi = to_utc(end) + timedelta(microseconds=1)
    else:
        day = to_date(end)
        hi = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return lo, hi


# building an empty frame costs ~0.7 ms; frames are immutable, so one can be shared
_NO_ACTIONS = pl.DataFrame(schema=ACTION_POLARS_SCHEMA)


@dataclass(slots=True)
class FetchResult:
    """What a provider returns for one request."""

    bars: pl.DataFrame
    actions: pl.DataFrame = field(default_factory=lambda: _NO_ACTIONS)
    raw: list[RawPayload] = field(default_factory=list)
    provider: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CallGate(Protocol):
    """Admits calls to a provider: blocks (throttles) until the call may go.

    Rate limiters implement this; `cost` is how many units of quota the call uses.
    """

    def acquire(self, provider: str, cost: int = 1) -> None:
        """Return once a call of `cost` units to `provider` may be made."""
        ...

    def call(
        self, provider: str, cost: int = 1, *, hold_s: float = 60.0
    ) -> AbstractContextManager[None]:
        """Admit a call like `acquire` and count it as in flight until the block ends.

        The vendor counts the call when it arrives, between the grant and the answer: a
        limiter that knows when the answer came can space calls by that instead.
        """
        ...


class Provider:
    """Base class of every data source. Subclasses set `name` and `capabilities`.

    Register a subclass under its name with `quantivista.providers.register` or through the
    `quantivista.providers` entry-point group; the router never names providers itself.

    | part | required | meaning |
    |---|---|---|
    | `name`, `capabilities` | yes | registry key; what it serves, its price basis, cost |
    | `fetch_bars(request)` | yes | bars (+ actions, raw payloads) of one request |
    | `from_settings(settings, clock)` | no | build from keys, URLs and timeouts in settings |
    | `gates_requests` | no | True: each HTTP request (pages too) passes `gate`, which the |
    |  |  | runtime sets to the rate limiter; False: the router gates each fetch |
    | `timeout_s` | no | its own per-request timeout; None: the breaker times the call |
    | `close()` | no | release connections |
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[ProviderCapabilities]
    gates_requests: ClassVar[bool] = False
    gate: CallGate | None = None
    timeout_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> Provider:
        """Build the provider from platform settings (override to read keys and URLs)."""
        return cls()

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        """Return the bars (and actions, and raw payloads) answering `request`."""
        raise NotImplementedError

    @classmethod
    def planned_calls(cls, request: BarRequest, bars: int, now: datetime) -> int:
        """Return how many vendor calls (pages included) `fetch_bars(request)` makes.

        `bars` is how many bars the calendar expects. The backfill planner sizes requests
        and quotas by this; a client that pages or slices its requests overrides it.
        """
        return 1

    def close(self) -> None:
        """Release connections; the default has nothing to release."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
