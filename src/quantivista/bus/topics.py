"""The platform's topics: names, what travels on them, their keys and partitions.

| topic                  | event           | key    | parts | what                        |
|------------------------|-----------------|--------|-------|-----------------------------|
| `trades.<provider>`    | TradesBatch     | symbol | 4     | live trades of one vendor   |
| `bars.raw.<timeframe>` | BarBatch        | symbol | 4     | bars as built or fetched    |
| `bars.normalized`      | BarBatch        | symbol | 4     | validated, stored bars      |
| `bars.enriched`        | BarBatch        | symbol | 4     | adjusted + reference + FX   |
| `actions`              | ActionsBatch    | symbol | 1     | corporate actions           |
| `quality.alerts`       | BarsQuarantined | job    | 1     | rows that failed validation |
| `ingestion.events`     | BarsIngested    | job    | 1     | what landed in the store    |
| `dlq.<topic>`          | (as the topic)  | (same) | 1     | messages a group gave up on |

Every message carries routing headers (`qv-symbol`, `qv-asset-class`, `qv-exchange`) so a
consumer filters without decoding (`Route`, `RouteFilter`). Trades go one message per
partition and micro-batch (`qv-symbols` lists its symbols; each symbol stays in one
partition, in order): fewer, larger messages at tens of thousands of trades a second.
`qv stream` sends its bars the same way (one message per partition and release): as built
to `bars.raw.1m`, validated and stored (canonical columns) to `bars.normalized`. `qv
integrate` consumes `bars.raw.<timeframe>`; the API relays `bars.normalized`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quantivista.bus.base import Message, dead_letter_topic
from quantivista.bus.events import (
    ActionsBatch,
    BarBatch,
    BarsIngested,
    BarsQuarantined,
    Event,
    TradesBatch,
)

__all__ = [
    "ACTIONS",
    "ENRICHED_BARS",
    "INGESTION_EVENTS",
    "NORMALIZED_BARS",
    "QUALITY_ALERTS",
    "TOPICS",
    "Route",
    "RouteFilter",
    "TopicSpec",
    "partitions_of",
    "raw_bars",
    "trades",
]

NORMALIZED_BARS = "bars.normalized"
ENRICHED_BARS = "bars.enriched"
ACTIONS = "actions"
QUALITY_ALERTS = "quality.alerts"
INGESTION_EVENTS = "ingestion.events"


def trades(provider: str) -> str:
    """Return the trades topic of a vendor (`trades.finnhub`)."""
    return f"trades.{provider}"


def raw_bars(timeframe: str) -> str:
    """Return the raw bars topic of a timeframe (`bars.raw.1m`)."""
    return f"bars.raw.{timeframe}"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One row of the topics table."""

    pattern: str
    event: type[Event]
    key: str
    partitions: int
    description: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("trades.<provider>", TradesBatch, "symbol", 4, "live trades of one vendor"),
    TopicSpec("bars.raw.<timeframe>", BarBatch, "symbol", 4, "bars as built or fetched"),
    TopicSpec(NORMALIZED_BARS, BarBatch, "symbol", 4, "validated, stored bars, raw prices"),
    TopicSpec(ENRICHED_BARS, BarBatch, "symbol", 4, "adjusted, reference data, FX"),
    TopicSpec(ACTIONS, ActionsBatch, "symbol", 1, "corporate actions"),
    TopicSpec(QUALITY_ALERTS, BarsQuarantined, "job", 1, "rows that failed validation"),
    TopicSpec(INGESTION_EVENTS, BarsIngested, "job", 1, "what landed in the store"),
    TopicSpec(dead_letter_topic("<topic>"), Event, "(same)", 1, "messages a group gave up on"),
)


def partitions_of(topic: str) -> int:
    """Return the partition count a topic is created with (from the table)."""
    head = topic.split(".")[0]
    if topic.startswith("dlq."):
        return 1
    if head in ("trades", "bars"):
        return 4
    return 1


@dataclass(frozen=True, slots=True)
class Route:
    """Routing attributes of a message, sent as headers."""

    symbol: str | None = None
    asset_class: str | None = None
    exchange: str | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.symbol:
            out["qv-symbol"] = self.symbol
        if self.asset_class:
            out["qv-asset-class"] = self.asset_class
        if self.exchange:
            out["qv-exchange"] = self.exchange
        return out


@dataclass(frozen=True, slots=True)
class RouteFilter:
    """Which messages a consumer wants, by symbol, asset class and exchange (None: any)."""

    symbols: frozenset[str] | None = None
    asset_classes: frozenset[str] | None = None
    exchanges: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        symbols: Iterable[str] | None = None,
        asset_classes: Iterable[str] | None = None,
        exchanges: Iterable[str] | None = None,
    ) -> RouteFilter:
        def norm(values: Iterable[str] | None) -> frozenset[str] | None:
            return frozenset(v.strip().upper() for v in values) if values else None

        return cls(norm(symbols), norm(asset_classes), norm(exchanges))

    def wants(self, message: Message) -> bool:
        """Say whether `message` passes (a header the filter asks about must be present)."""
        h = message.headers
        if self.symbols is not None and "qv-symbols" in h:  # a message of several symbols
            if not self.symbols & set(h["qv-symbols"].split(",")):
                return False
        elif not _ok(self.symbols, h.get("qv-symbol") or message.key):
            return False
        return (
            True
            and _ok(self.asset_classes, h.get("qv-asset-class"))
            and _ok(self.exchanges, h.get("qv-exchange"))
        )


def _ok(wanted: frozenset[str] | None, value: str | None) -> bool:
    return wanted is None or (value is not None and value.upper() in wanted)
