"""GraphQL over a real socket: queries with adjust and as-of, entitlements, auth."""

from __future__ import annotations

from api.conftest import SYMBOLS, LiveApi, bearer, make_client
from quantivista.config import Settings
from quantivista.platform import Platform

BARS = """query($s: [String!]!, $adjust: String!) {
  bars(symbols: $s, start: "2024-12-02", end: "2024-12-06", adjust: $adjust) {
    symbol ts open close volume qualityFlags
  }
}"""


def test_bars_instruments_actions_and_quality(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "acme", "read:bars,read:reference")
    with api.client(headers=bearer(api, creds)) as http:
        reply = http.post(
            "/graphql", json={"query": BARS, "variables": {"s": [SYMBOLS[0]], "adjust": "none"}}
        )
        assert reply.status_code == 200 and "errors" not in reply.json(), reply.text
        bars = reply.json()["data"]["bars"]
        assert [b["ts"][:10] for b in bars] == [
            "2024-12-02",
            "2024-12-03",
            "2024-12-04",
            "2024-12-05",
            "2024-12-06",
        ]
        rest = http.get(
            "/api/v1/bars",
            params={"symbols": SYMBOLS[0], "start": "2024-12-02", "end": "2024-12-06"},
        ).json()["bars"]
        assert [b["close"] for b in bars] == [b["close"] for b in rest]
        other = http.post(
            "/graphql",
            json={
                "query": "{ instruments { instrumentId } "
                f'actions(symbols: ["{SYMBOLS[0]}"]) {{ exDate }} }}'
            },
        )
        assert other.status_code == 200 and "errors" not in other.json(), other.text


def test_graphql_needs_credentials_and_respects_entitlements(api: LiveApi, store: Settings) -> None:
    with api.client() as http:
        assert (
            http.post("/graphql", json={"query": "{ instruments { instrumentId } }"}).status_code
            == 401
        )
    creds = make_client(store, "gql-narrow", "read:bars")
    with Platform.from_settings(store) as p:
        p.runtime.auth.set_tenant("gql-narrow", symbols=[SYMBOLS[0]])
    with api.client(headers=bearer(api, creds)) as http:
        denied = http.post(
            "/graphql", json={"query": BARS, "variables": {"s": [SYMBOLS[1]], "adjust": "all"}}
        )
        assert denied.json()["errors"][0]["message"].startswith("tenant gql-narrow is not entitled")
        scope = http.post("/graphql", json={"query": "{ instruments { instrumentId } }"})
        assert "read:reference" in scope.json()["errors"][0]["message"]
