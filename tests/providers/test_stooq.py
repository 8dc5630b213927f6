"""Stooq: the CSV download, its plain-text failures, fuzzing, socket run."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    ProviderError,
    QuotaExhaustedError,
    SymbolNotFoundError,
)
from quantivista.providers.base import BarRequest
from quantivista.providers.stooq import StooqProvider, parse_csv, stooq_symbol

from .conftest import LocalServer, Route, fixture_bytes

S = "stooq"


def test_spy_excerpt() -> None:
    bars = parse_csv(fixture_bytes(S, "spy_us_daily_excerpt.csv"), "SPY")
    assert bars.height == 25
    assert bars.row(0) == (
        "SPY", "1d", datetime(2018, 2, 26, tzinfo=UTC), 245.63, 247.46, 245.018, 247.373,
        96911825.0, None, None, S, 0, None, None,
    )  # fmt: skip
    assert bars["ts"][-1] == datetime(2018, 4, 2, tzinfo=UTC)
    assert bars["close"][-1] == 230.117


def test_csv_without_volume_is_accepted() -> None:
    bars = parse_csv("Date,Open,High,Low,Close\n2024-01-02,1.1,1.2,1.0,1.15\n", "EURUSD")
    assert bars["volume"].to_list() == [None] and bars["close"].to_list() == [1.15]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (fixture_bytes(S, "error_daily_hits_limit.txt"), QuotaExhaustedError),
        (fixture_bytes(S, "error_no_data.txt"), SymbolNotFoundError),
        (b"<html><body>get_apikey</body></html>", EntitlementError),
        (b"", MalformedResponseError),
        (b"Symbol,Price\nx,1", MalformedResponseError),
    ],
)
def test_text_failures(text: bytes, error: type[ProviderError]) -> None:
    with pytest.raises(error):
        parse_csv(text, "SPY")


def test_symbol_spelling() -> None:
    assert [stooq_symbol(s) for s in ("AAPL", "^SPX", "VOD.UK", "cl.f")] == [
        "aapl.us", "^spx", "vod.uk", "cl.f"
    ]  # fmt: skip


csv_like = st.lists(
    st.sampled_from(["2018-02-26", "x", "", "1e400", "-1", "nan", "2018-02-30"]),
    min_size=5,
    max_size=6,
).map(lambda cells: "Date,Open,High,Low,Close,Volume\n" + ",".join(cells))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=100) | csv_like)
def test_fuzzed_bodies_raise_only_provider_errors(data: bytes | str) -> None:
    with contextlib.suppress(ProviderError):
        parse_csv(data, "SPY")


def test_client_over_a_socket(local_server: LocalServer) -> None:
    local_server.routes["/stooq/q/d/l/"] = Route(200, fixture_bytes(S, "spy_us_daily_excerpt.csv"))
    client = StooqProvider(base_url=local_server.url + "/stooq")
    result = client.fetch_bars(BarRequest.of("SPY", "2018-03-01", "2018-03-02"))
    assert result.bars["close"].to_list() == [238.299, 239.525]
    q = local_server.requests[0].query
    assert (q["s"], q["i"], q["d1"], q["d2"]) == (["spy.us"], ["d"], ["20180301"], ["20180302"])
    assert "apikey" not in q
