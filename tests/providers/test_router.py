"""The router: capable providers in order, failover on provider errors, attempts recorded."""

from __future__ import annotations

import polars as pl
import pytest

from quantivista.acquisition.router import Attempt, Router
from quantivista.errors import (
    EntitlementError,
    NotFoundError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.model.instruments import AssetClass
from quantivista.providers.base import BarRequest, FetchResult, Provider, ProviderCapabilities

DAILY = BarRequest.of("AAA", "2024-01-02", "2024-01-05", "1d")
MINUTE = BarRequest.of("AAA", "2024-01-02", "2024-01-02", "1m")


class Fake(Provider):
    """A provider that answers from a script: an exception to raise, or a result to return."""

    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}), timeframes=frozenset({"1d"})
    )

    def __init__(
        self,
        name: str,
        error: Exception | None = None,
        timeframes: frozenset[str] | None = None,
        result_provider: str = "",
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.error = error
        self.calls: list[BarRequest] = []
        self.result_provider = result_provider
        if timeframes is not None:
            self.capabilities = ProviderCapabilities(  # type: ignore[misc]
                asset_classes=frozenset({AssetClass.EQUITY}), timeframes=timeframes
            )

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        return FetchResult(
            bars=pl.DataFrame({"symbol": [request.symbol], "from": [self.name]}),
            provider=self.result_provider,
        )


def test_first_capable_provider_answers_and_the_rest_are_not_called() -> None:
    a, b = Fake("a"), Fake("b")
    result = Router([a, b]).fetch(DAILY)
    assert result.bars["from"].to_list() == ["a"]
    assert result.provider == "a"
    assert result.metadata["attempts"] == [Attempt("a", True)]
    assert a.calls == [DAILY]
    assert b.calls == []


def test_failover_to_the_next_provider_records_every_attempt() -> None:
    a = Fake("a", TransientProviderError("timeout", provider="a", status_code=504))
    b = Fake("b", RateLimitedError("slow down", provider="b", retry_after_s=3))
    c = Fake("c")
    result = Router([a, b, c]).fetch(DAILY)
    assert result.provider == "c"
    attempts = result.metadata["attempts"]
    assert [(x.provider, x.ok, x.kind) for x in attempts] == [
        ("a", False, "TransientProviderError"),
        ("b", False, "RateLimitedError"),
        ("c", True, None),
    ]
    assert attempts[0].error is not None and "timeout" in attempts[0].error
    assert [len(p.calls) for p in (a, b, c)] == [1, 1, 1]


def test_permanent_provider_errors_also_fail_over() -> None:
    a = Fake("a", EntitlementError("premium only", provider="a"))
    b = Fake("b", SymbolNotFoundError("unknown", provider="b", symbol="AAA"))
    c = Fake("c")
    assert Router([a, b, c]).fetch(DAILY).provider == "c"


def test_when_all_fail_the_last_error_is_raised_with_all_attempts() -> None:
    first = TransientProviderError("timeout", provider="a")
    last = SymbolNotFoundError("unknown symbol", provider="b", symbol="AAA")
    with pytest.raises(SymbolNotFoundError) as info:
        Router([Fake("a", first), Fake("b", last)]).fetch(DAILY)
    err = info.value
    assert err is last
    assert err.context["attempts"] == ["a: TransientProviderError", "b: SymbolNotFoundError"]
    assert "attempts=" in str(err)
    assert err.symbol == "AAA"


def test_incapable_providers_are_skipped_without_being_called() -> None:
    daily_only = Fake("daily")
    minute = Fake("minute", timeframes=frozenset({"1m", "5m"}))
    router = Router([daily_only, minute])
    assert router.candidates(MINUTE) == [minute]
    result = router.fetch(MINUTE)
    assert result.provider == "minute"
    assert daily_only.calls == []
    assert [a.provider for a in result.metadata["attempts"]] == ["minute"]


def test_no_capable_provider_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="no provider serves this timeframe") as info:
        Router([Fake("a"), Fake("b")]).fetch(MINUTE)
    assert info.value.context["timeframe"] == "1m"
    assert info.value.context["providers"] == ["a", "b"]
    with pytest.raises(NotFoundError):
        Router([]).fetch(DAILY)


def test_a_provider_naming_its_result_keeps_that_name() -> None:
    result = Router([Fake("a", result_provider="a/mirror")]).fetch(DAILY)
    assert result.provider == "a/mirror"


def test_bugs_that_are_not_provider_errors_are_not_swallowed() -> None:
    a = Fake("a", KeyError("parser bug"))
    b = Fake("b")
    with pytest.raises(KeyError):
        Router([a, b]).fetch(DAILY)
    assert b.calls == []


def test_order_of_providers_is_the_preference() -> None:
    a, b = Fake("a"), Fake("b")
    assert Router([b, a]).fetch(DAILY).provider == "b"
    assert a.calls == []
