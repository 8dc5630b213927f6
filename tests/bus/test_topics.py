"""Topic names, partitions and routing filters by symbol, asset class and exchange."""

from __future__ import annotations

from quantivista.bus.base import Message
from quantivista.bus.topics import (
    TOPICS,
    Route,
    RouteFilter,
    partitions_of,
    raw_bars,
    trades,
)


def msg(headers: dict[str, str], key: str | None = None) -> Message:
    return Message("t", 1, b"", key, headers)


def test_topic_names_and_partitions_follow_the_table() -> None:
    assert trades("finnhub") == "trades.finnhub" and raw_bars("1m") == "bars.raw.1m"
    assert partitions_of("bars.raw.1m") == 4 and partitions_of("bars.enriched") == 4
    assert partitions_of("quality.alerts") == 1 and partitions_of("dlq.bars.raw.1m") == 1
    assert {t.pattern for t in TOPICS} >= {"bars.normalized", "bars.enriched", "actions",
                                           "quality.alerts", "ingestion.events"}  # fmt: skip


def test_filters_route_by_symbol_asset_class_and_exchange() -> None:
    aapl = msg(Route("AAPL", "equity", "XNAS").headers(), key="AAPL")
    bmw = msg(Route("BMW", "equity", "XETR").headers(), key="BMW")
    assert RouteFilter.of(symbols=["aapl"]).wants(aapl)
    assert not RouteFilter.of(symbols=["AAPL"]).wants(bmw)
    assert RouteFilter.of(exchanges=["XETR"]).wants(bmw)
    assert not RouteFilter.of(exchanges=["XETR"]).wants(aapl)
    assert RouteFilter.of(asset_classes=["EQUITY"], exchanges=["XNAS"]).wants(aapl)
    assert not RouteFilter.of(asset_classes=["fx"]).wants(aapl)
    assert RouteFilter().wants(aapl) and RouteFilter().wants(msg({}))
    # a message without the header a filter asks about does not pass
    assert not RouteFilter.of(exchanges=["XNAS"]).wants(msg({}, key="AAPL"))
    # the key stands in for a missing symbol header
    assert RouteFilter.of(symbols=["AAPL"]).wants(msg({}, key="AAPL"))


def test_a_message_of_several_symbols_passes_if_any_is_wanted() -> None:
    batch = msg({"qv-symbols": "AAPL,MSFT"}, key="AAPL")
    assert RouteFilter.of(symbols=["MSFT"]).wants(batch)
    assert not RouteFilter.of(symbols=["IBM"]).wants(batch)
