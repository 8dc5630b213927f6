"""HttpProvider: status mapping, Retry-After, key redaction, gate, raw payloads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import (
    EntitlementError,
    ProviderError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.providers.http import CallGate, HttpProvider, parse_retry_after, redact

from .conftest import LocalServer, Route


class Echo(HttpProvider):
    name = "alpha_vantage"  # reuse a settings section
    default_base_url = "https://example.invalid"
    key_param = "apikey"


class Gate:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def acquire(self, provider: str, cost: int = 1) -> None:
        self.calls.append((provider, cost))

    @contextmanager
    def call(self, provider: str, cost: int = 1, *, hold_s: float = 60.0) -> Iterator[None]:
        self.acquire(provider, cost)
        yield


def test_gate_protocol_is_satisfied_by_a_plain_class() -> None:
    assert isinstance(Gate(), CallGate)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after("Tue, 02 Jan 2024 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


def test_redact_removes_every_copy_of_the_key() -> None:
    assert redact("a?k=SECRET&b=SECRET", "SECRET") == "a?k=***&b=***"
    assert redact("abc", None) == "abc"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientProviderError),
        (503, TransientProviderError),
        (401, EntitlementError),
        (403, EntitlementError),
        (404, SymbolNotFoundError),
        (400, ProviderError),
    ],
)
def test_status_codes_map_to_error_types(
    local_server: LocalServer, status: int, error: type[ProviderError]
) -> None:
    local_server.routes["/x"] = Route(status, b"nope SECRETKEY")
    client = Echo(api_key="SECRETKEY", base_url=local_server.url)
    with pytest.raises(error) as info:
        client.get(client.url("/x"), {"a": "1"}, symbol="IBM")
    assert type(info.value) is error
    assert info.value.status_code == status
    assert "SECRETKEY" not in str(info.value)
    assert info.value.url is not None and "apikey" not in info.value.url
    client.close()


def test_429_carries_retry_after_and_key_is_sent_but_not_recorded(
    local_server: LocalServer,
) -> None:
    local_server.routes["/x"] = Route(429, b"slow down", {"Retry-After": "7"})
    gate = Gate()
    client = Echo(api_key="SECRETKEY", base_url=local_server.url, gate=gate)
    with pytest.raises(RateLimitedError) as info:
        client.get(client.url("/x"), {"a": "1"})
    assert info.value.retry_after_s == 7.0
    assert info.value.is_retryable()
    assert local_server.requests[0].query["apikey"] == ["SECRETKEY"]
    assert gate.calls == [("alpha_vantage", 1)]


def test_success_records_a_redacted_raw_payload(local_server: LocalServer) -> None:
    local_server.routes["/x"] = Route(200, b'{"ok": 1}', {"Content-Type": "application/json"})
    clock = TestClock()
    client = Echo(api_key="SECRETKEY", base_url=local_server.url, clock=clock)
    _, payload = client.get(client.url("/x"), {"a": "1"})
    assert payload.body == b'{"ok": 1}'
    assert payload.status_code == 200
    assert payload.request_params == {"a": "1"}
    assert "SECRETKEY" not in payload.url and payload.url.endswith("/x?a=1")
    assert payload.received_at == clock.now()
    assert payload.content_type == "application/json"


def test_timeouts_and_connection_errors_are_transient() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = Echo(client=httpx.Client(transport=httpx.MockTransport(boom)), api_key="K")
    with pytest.raises(TransientProviderError, match="timed out"):
        client.get(client.url("/x"))
    refused = Echo(base_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(TransientProviderError, match="transport error"):
        refused.get(refused.url("/x"))


def test_from_settings_reads_the_provider_section() -> None:
    settings = Settings(
        providers={"alpha_vantage": {"api_key": "K1", "base_url": "http://h:1/av", "timeout_s": 3}}
    )
    client = Echo.from_settings(settings, TestClock())
    assert isinstance(client, Echo)
    assert client.base_url == "http://h:1/av"
    assert client.timeout_s == 3
    assert client.has_key
    assert "K1" not in repr(settings.summary())
