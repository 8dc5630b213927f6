"""Finnhub: candles, quote, error bodies, WebSocket trades with reconnect and de-duplication."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from quantivista.errors import (
    EntitlementError,
    ProviderError,
    RateLimitedError,
    SymbolNotFoundError,
)
from quantivista.providers.base import BarRequest
from quantivista.providers.finnhub import (
    TRADE_POLARS_SCHEMA,
    FinnhubProvider,
    FinnhubTradeStream,
    parse_candles,
    parse_quote,
    parse_trade_frame,
    parse_trade_message,
    trades_frame,
)

from .conftest import LocalServer, Route, fixture_bytes

F = "finnhub"


def test_daily_candles_doc_sample() -> None:
    bars = parse_candles(fixture_bytes(F, "stock_candle_doc_sample.json"), "AAPL", "1d")
    # 1569297600 = 2019-09-24 04:00 UTC = 00:00 New York
    assert bars["ts"].to_list() == [
        datetime(2019, 9, 24, tzinfo=UTC),
        datetime(2019, 9, 25, tzinfo=UTC),
        datetime(2019, 9, 26, tzinfo=UTC),
    ]
    assert bars["open"].to_list() == [221.03, 218.55, 220.0]
    assert bars["low"][1] == 217.1402 and bars["close"][2] == 219.89
    assert bars["volume"].to_list() == [33463820.0, 24018876.0, 20730608.0]


def test_intraday_candles_keep_utc_stamps() -> None:
    bars = parse_candles(fixture_bytes(F, "stock_candle_doc_sample.json"), "AAPL", "1h")
    assert bars["ts"][0] == datetime(2019, 9, 24, 4, 0, tzinfo=UTC)


def test_no_data_is_empty() -> None:
    assert parse_candles(fixture_bytes(F, "stock_candle_no_data.json"), "AAPL").is_empty()


def test_quote_doc_sample_and_all_zero_unknown_symbol() -> None:
    quote = parse_quote(fixture_bytes(F, "quote_doc_sample.json"), "AAPL")
    assert quote.last == 261.74
    assert quote.ts == datetime(2020, 2, 25, 14, 30, tzinfo=UTC)
    with pytest.raises(SymbolNotFoundError, match="all zeros"):
        parse_quote(fixture_bytes(F, "quote_all_zero_unknown_symbol.json"), "ZZZZ")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("error_403_no_access.json", EntitlementError),
        ("error_429_api_limit.json", RateLimitedError),
    ],
)
def test_error_bodies(name: str, error: type[ProviderError]) -> None:
    for parse in (parse_candles, parse_quote):
        with pytest.raises(error):
            parse(fixture_bytes(F, name), "AAPL")


def test_ws_messages_and_trades_frame() -> None:
    (trade,) = parse_trade_message(fixture_bytes(F, "ws_trade_doc_sample.json"))
    assert trade.symbol == "BINANCE:BTCUSDT" and trade.size == 0.011467
    assert trade.ts == datetime(2019, 12, 5, 6, 18, 11, 134000, tzinfo=UTC)
    assert parse_trade_message(fixture_bytes(F, "ws_ping.json")) == []
    lines = fixture_bytes(F, "ws_trades_recorded.jsonl").decode().splitlines()
    trades = [t for line in lines for t in parse_trade_message(line)]
    frame = trades_frame(trades)
    assert frame.schema == TRADE_POLARS_SCHEMA and frame.height == 5
    assert frame.unique().height == 2  # the recording repeats each trade
    assert frame["ts"][0] == datetime(2020, 4, 21, 13, 6, 20, 227000, tzinfo=UTC)
    assert frame["price"].to_list()[2:] == [2408.58] * 3


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
field = st.none() | st.floats() | st.integers(-(2**70), 2**70) | st.text(max_size=4)
candle_like = st.fixed_dictionaries(
    {"s": st.sampled_from(["ok", "no_data", 1])},
    optional={k: st.lists(field, max_size=3) | field for k in "ohlcvt"},
)
ws_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["trade", "ping", "error", "x"])},
    optional={"data": st.lists(st.dictionaries(st.sampled_from(list("sptvc")), field), max_size=3)},
)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200) | (json_values | candle_like | ws_like).map(json.dumps))
def test_fuzzed_bodies_raise_only_provider_errors(body: bytes | str) -> None:
    for parse in (parse_candles, parse_quote, parse_trade_message, parse_trade_frame):
        with contextlib.suppress(ProviderError):
            parse(body, "AAPL")


good_trade = st.fixed_dictionaries(
    {
        "s": st.text(min_size=1, max_size=6),
        "p": st.floats(0.0001, 1e6) | st.integers(1, 10**6),
        "t": st.integers(0, 4_102_444_800_000),
        "v": st.floats(0, 1e6) | st.integers(0, 10**6),
    },
    optional={"c": st.lists(st.sampled_from(["1", "12"]), max_size=2)},
)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(good_trade, max_size=6))
def test_the_columnar_parser_agrees_with_the_trade_objects(items: list[dict[str, object]]) -> None:
    body = json.dumps({"type": "trade", "data": items})
    assert parse_trade_frame(body).equals(trades_frame(parse_trade_message(body)))


@pytest.mark.parametrize(
    "item",
    [
        {"s": 5, "p": 1, "t": 1, "v": 1},  # a symbol that is not a string
        {"s": "A", "p": 1, "t": 1.5, "v": 1},  # a time that is not an integer
        {"s": "A", "p": "1", "t": 1, "v": 1},  # a price that is a string
        {"s": "A", "p": 1, "v": 1},  # no time
        {"s": "A", "p": 1, "t": 2**70, "v": 1},  # a time past any calendar
    ],
)
def test_the_columnar_parser_refuses_what_the_object_parser_refuses(
    item: dict[str, object],
) -> None:
    body = json.dumps({"type": "trade", "data": [{"s": "B", "p": 2, "t": 2, "v": 2}, item]})
    for parse in (parse_trade_message, parse_trade_frame):
        with pytest.raises(ProviderError):
            parse(body)


def test_client_over_a_socket(local_server: LocalServer) -> None:
    local_server.routes["/finnhub/api/v1/stock/candle"] = Route(
        200, fixture_bytes(F, "stock_candle_doc_sample.json")
    )
    local_server.routes["/finnhub/api/v1/quote"] = Route(
        200, fixture_bytes(F, "quote_all_zero_unknown_symbol.json")
    )
    client = FinnhubProvider(api_key="FKEY", base_url=local_server.url + "/finnhub")
    result = client.fetch_bars(BarRequest.of("AAPL", "2019-09-24", "2019-09-25"))
    assert result.bars["close"].to_list() == [217.68, 221.03]
    sent = local_server.requests[0]
    assert sent.query["resolution"] == ["D"] and sent.query["from"] == ["1569283200"]
    assert sent.headers["X-Finnhub-Token"] == "FKEY" and "token" not in sent.query
    with pytest.raises(SymbolNotFoundError):
        client.fetch_quote("ZZZZ")


def test_client_403_premium_and_429(local_server: LocalServer) -> None:
    local_server.routes["/api/v1/stock/candle"] = [
        Route(403, fixture_bytes(F, "error_403_no_access.json")),
        Route(429, fixture_bytes(F, "error_429_api_limit.json"), {"Retry-After": "5"}),
    ]
    client = FinnhubProvider(api_key="K", base_url=local_server.url)
    with pytest.raises(EntitlementError, match="access"):
        client.fetch_bars(BarRequest.of("AAPL", "2019-09-24", "2019-09-25"))
    with pytest.raises(RateLimitedError) as info:
        client.fetch_bars(BarRequest.of("AAPL", "2019-09-24", "2019-09-25"))
    assert info.value.retry_after_s == 5.0


def test_websocket_reconnects_resubscribes_and_dedupes() -> None:
    lines = fixture_bytes(F, "ws_trades_recorded.jsonl").decode().splitlines()
    fresh = json.dumps(
        {"data": [{"p": 275.1, "s": "AAPL", "t": 1587474390000, "v": 3}], "type": "trade"}
    )
    subscriptions: list[list[str]] = []
    tokens: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        subs = [json.loads(await ws.recv())["symbol"] for _ in range(2)]
        subscriptions.append(subs)
        tokens.append(ws.request.path if ws.request else "")
        if len(subscriptions) == 1:
            for line in lines[:4]:  # AAPL twice, AMZN twice, then the connection drops
                await ws.send(line)
            await ws.close()
            return
        await ws.send(fixture_bytes(F, "ws_ping.json").decode())
        await ws.send('{"type": "trade", "data": [{"s": 5}]}')  # counted and skipped
        await ws.send(lines[4])  # AMZN again after the reconnect: still a duplicate
        await ws.send(fresh)
        await ws.wait_closed()

    async def main() -> tuple[FinnhubTradeStream, list[object]]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            stream = FinnhubTradeStream(
                ["AAPL", "AMZN"], api_key="WSKEY", url=f"ws://127.0.0.1:{port}",
                reconnect_delay_s=0.01, heartbeat_timeout_s=5,
            )  # fmt: skip
            trades = await stream.collect(3, timeout_s=10)
            return stream, list(trades)

    stream, trades = asyncio.run(main())
    assert [(t.symbol, t.price) for t in trades] == [  # type: ignore[attr-defined]
        ("AAPL", 274.7), ("AMZN", 2408.58), ("AAPL", 275.1)
    ]  # fmt: skip
    assert stream.reconnects == 1
    assert subscriptions == [["AAPL", "AMZN"], ["AAPL", "AMZN"]]
    assert stream.duplicates == 3 and stream.pings == 1 and stream.malformed == 1
    assert tokens[0] == "/?token=WSKEY"


def test_websocket_silence_beyond_the_heartbeat_reconnects_then_gives_up() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()  # never sends anything, not even pings

    async def main() -> FinnhubTradeStream:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            stream = FinnhubTradeStream(
                ["AAPL"], url=f"ws://127.0.0.1:{port}", heartbeat_timeout_s=0.1,
                reconnect_delay_s=0.01, max_reconnects=2,
            )  # fmt: skip
            with pytest.raises(ProviderError, match="gave up after 2 reconnects"):
                await stream.collect(1, timeout_s=10)
            return stream

    assert asyncio.run(main()).reconnects == 2
