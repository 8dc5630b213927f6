"""Hostile query strings never crash a vendor format: every call yields a well-formed reply."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantivista.config import ProviderFaultSettings
from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.formats.common import Feed, Reply, SimRequest
from quantivista.providers.simulator.server import FORMATS

from .helpers import SETTINGS

MARKET = SimulatedMarket(SETTINGS.seed, SETTINGS.universe_size, as_of=SETTINGS.as_of)
SYMBOLS = st.sampled_from(["WUWCGE", "KNPGRA", "FENLON", "WZJHFI", "NOSUCH", "", "wuwcge"])
NUMBERS = st.one_of(
    st.integers(-(10**15), 10**15).map(str), st.sampled_from(["", "x", "1.5", "20241301"])
)
TEXT = st.one_of(NUMBERS, st.text(max_size=12), st.sampled_from(["1d", "5m", "D", "1min", "full"]))
KEYS = ["function", "symbol", "interval", "outputsize", "datatype", "apikey", "period1",
        "period2", "range", "events", "resolution", "from", "to", "token", "apiKey", "limit",
        "sort", "adjusted", "cursor", "month", "chartInterval", "chartByDay"]  # fmt: skip
ROUTES = [(name, path, handler) for name, f in FORMATS.items() for path, handler in f.routes]


def _params(path: str) -> st.SearchStrategy[dict[str, str]]:
    names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    values = {n: (SYMBOLS if n in ("symbol", "ticker") else TEXT) for n in names}
    return st.fixed_dictionaries(values)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(ROUTES),
    data=st.data(),
    query=st.dictionaries(st.sampled_from(KEYS), TEXT, max_size=8),
    symbol=SYMBOLS,
)
def test_any_query_gets_a_reply_not_a_crash(
    route: tuple[str, str, object], data: st.DataObject, query: dict[str, str], symbol: str
) -> None:
    name, path, handler = route
    path_params = data.draw(_params(path))
    query = {**query, "symbol": symbol} if "symbol" not in query else query
    req = SimRequest(name, path_params, query, {}, f"http://127.0.0.1:1/{name}")
    feed = Feed(MARKET, name, ProviderFaultSettings(), lambda kind, n: None)
    reply = handler(req, feed)  # type: ignore[operator]
    assert isinstance(reply, Reply)
    assert 200 <= reply.status < 500
    if reply.media_type.startswith("application/json"):
        json.loads(reply.body)


HOSTILE = [
    ("yahoo", "/v8/finance/chart/{symbol}", {"symbol": "WUWCGE"},
     {"period1": str(10**15), "period2": str(10**16)}),
    ("yahoo", "/v8/finance/chart/{symbol}", {"symbol": "WUWCGE"}, {"period1": str(-(10**15))}),
    ("finnhub", "/api/v1/stock/candle", {},
     {"symbol": "WUWCGE", "resolution": "1", "from": "0", "to": str(10**12), "token": "t"}),
    ("iex_cloud", "/stable/stock/{symbol}/chart/date/{day}",
     {"symbol": "WUWCGE", "day": "20241399"}, {"token": "t"}),
    ("alpha_vantage", "/query", {},
     {"function": "TIME_SERIES_INTRADAY", "symbol": "WUWCGE", "interval": "5min", "month": "abc",
      "apikey": "k"}),
    ("polygon", "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}",
     {"ticker": "WUWCGE", "multiplier": "1", "timespan": "day", "from": "1", "to": "2024-01-01"},
     {"apiKey": "k", "cursor": "!!!"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "path_params", "query"), HOSTILE)
def test_hostile_values_that_once_crashed_now_get_replies(
    name: str, path: str, path_params: dict[str, str], query: dict[str, str]
) -> None:
    handler = dict(FORMATS[name].routes)[path]
    req = SimRequest(name, path_params, query, {}, f"http://127.0.0.1:1/{name}")
    reply = handler(req, Feed(MARKET, name, ProviderFaultSettings(), lambda kind, n: None))
    assert 200 <= reply.status < 500
