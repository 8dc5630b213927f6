"""The error hierarchy: shape, retryability, context in messages and across pickling."""

from __future__ import annotations

import pickle

import pytest

from quantivista import errors
from quantivista.errors import (
    AccessError,
    AuthenticationError,
    BusError,
    BusUsageError,
    CalendarError,
    CircuitOpenError,
    ConfigurationError,
    DecodeError,
    EntitlementError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidTimeframeError,
    MalformedResponseError,
    MessageTooLargeError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuantiVistaError,
    QuotaExhaustedError,
    RateLimitedError,
    RuleValidationError,
    SchemaError,
    StorageError,
    StorageRejectedError,
    StorageUsageError,
    SymbolNotFoundError,
    TooManyRequestsError,
    TransientProviderError,
)

PARENTS: dict[type[QuantiVistaError], type[Exception]] = {
    QuantiVistaError: Exception,
    ConfigurationError: QuantiVistaError,
    InvalidInputError: QuantiVistaError,
    SchemaError: InvalidInputError,
    InvalidTimeframeError: InvalidInputError,
    InvalidIdentifierError: InvalidInputError,
    RuleValidationError: InvalidInputError,
    NotFoundError: QuantiVistaError,
    ProviderError: QuantiVistaError,
    TransientProviderError: ProviderError,
    RateLimitedError: ProviderError,
    QuotaExhaustedError: ProviderError,
    EntitlementError: ProviderError,
    SymbolNotFoundError: ProviderError,
    MalformedResponseError: ProviderError,
    CircuitOpenError: ProviderError,
    StorageError: QuantiVistaError,
    StorageRejectedError: StorageError,
    StorageUsageError: StorageError,
    BusError: QuantiVistaError,
    DecodeError: BusError,
    MessageTooLargeError: BusError,
    BusUsageError: BusError,
    CalendarError: QuantiVistaError,
    AccessError: QuantiVistaError,
    AuthenticationError: AccessError,
    PermissionDeniedError: AccessError,
    TooManyRequestsError: AccessError,
}

RETRYABLE = {
    TransientProviderError,
    RateLimitedError,
    CircuitOpenError,
    MalformedResponseError,
    TooManyRequestsError,
    StorageError,  # the store or the broker away: a consumer redelivers
    BusError,
}


def test_every_exported_error_has_a_place_in_the_tree() -> None:
    assert set(errors.__all__) == {cls.__name__ for cls in PARENTS}


@pytest.mark.parametrize("cls", list(PARENTS), ids=lambda c: c.__name__)
def test_error_has_its_documented_direct_parent(cls: type[QuantiVistaError]) -> None:
    assert cls.__bases__ == (PARENTS[cls],)
    assert issubclass(cls, QuantiVistaError)


@pytest.mark.parametrize("cls", list(PARENTS), ids=lambda c: c.__name__)
def test_only_transient_failures_are_retryable(cls: type[QuantiVistaError]) -> None:
    err = cls("boom")
    assert err.is_retryable() is (cls in RETRYABLE)


def test_message_without_context_is_the_plain_message() -> None:
    err = StorageError("cannot write")
    assert str(err) == "cannot write"
    assert err.message == "cannot write"
    assert err.context == {}


def test_context_is_appended_sorted_and_none_values_are_dropped() -> None:
    err = NotFoundError("unknown job", job_id="j-1", alpha=2, missing=None)
    assert err.context == {"job_id": "j-1", "alpha": 2}
    assert str(err) == "unknown job [alpha=2, job_id='j-1']"


def test_provider_error_keeps_its_fields_as_attributes_and_context() -> None:
    err = SymbolNotFoundError(
        "no such symbol", provider="acme", symbol="ZZZ", url="https://x/?k=REDACTED"
    )
    assert (err.provider, err.symbol, err.url, err.status_code) == (
        "acme",
        "ZZZ",
        "https://x/?k=REDACTED",
        None,
    )
    assert err.context == {"provider": "acme", "symbol": "ZZZ", "url": "https://x/?k=REDACTED"}
    assert "symbol='ZZZ'" in str(err)


def test_rate_limited_error_carries_retry_after() -> None:
    err = RateLimitedError("slow down", retry_after_s=1.5, provider="acme", status_code=429)
    assert err.retry_after_s == 1.5
    assert err.status_code == 429
    assert err.context["retry_after_s"] == 1.5
    assert err.is_retryable()


def test_quota_exhaustion_is_not_retryable_even_though_it_is_a_provider_error() -> None:
    err = QuotaExhaustedError("daily cap", provider="acme")
    assert isinstance(err, ProviderError)
    assert not err.is_retryable()


def test_errors_can_be_caught_by_their_base_class() -> None:
    with pytest.raises(InvalidInputError):
        raise SchemaError("bad frame")
    with pytest.raises(ProviderError):
        raise CircuitOpenError("open", provider="acme")


def test_pickling_keeps_type_message_and_context() -> None:
    err = TransientProviderError("timeout", provider="acme", symbol="AAPL", status_code=503)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TransientProviderError
    assert back.message == "timeout"
    assert back.context == err.context
    assert str(back) == str(err)
    assert (back.provider, back.symbol, back.status_code) == ("acme", "AAPL", 503)
    assert back.is_retryable()


def test_pickling_a_provider_error_with_unset_fields_keeps_them_as_none() -> None:
    # fields left at None are dropped from the context; after a round trip through pickle
    # (workers, DLQ entries) they must still read as None rather than vanish
    err = ProviderError("boom", symbol="AAPL")
    back = pickle.loads(pickle.dumps(err))
    assert back.symbol == "AAPL"
    assert back.provider is None
    assert back.url is None
    assert back.status_code is None


def test_pickling_a_rate_limited_error_without_retry_after_keeps_the_attribute() -> None:
    back = pickle.loads(pickle.dumps(RateLimitedError("slow", provider="acme")))
    assert back.provider == "acme"
    assert back.retry_after_s is None
