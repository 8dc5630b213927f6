"""One error hierarchy for the whole platform.

    QuantiVistaError
    ├── ConfigurationError          bad settings, unknown names, missing credentials
    ├── InvalidInputError           a caller handed us something unusable
    │   ├── SchemaError             a frame that does not fit the canonical schema
    │   ├── InvalidTimeframeError   a timeframe string we cannot parse
    │   ├── InvalidIdentifierError  an ISIN, CUSIP, SEDOL or FIGI failing its check digit
    │   └── RuleValidationError     a transformation rule or quality check that cannot run
    ├── NotFoundError               a provider, symbol, job or calendar we do not know
    ├── ProviderError               anything that went wrong talking to a data vendor
    │   ├── TransientProviderError  retryable: timeouts, 5xx, connection resets
    │   ├── RateLimitedError        retryable after `retry_after_s` (window limits)
    │   ├── QuotaExhaustedError     retryable only after the quota resets (daily caps)
    │   ├── EntitlementError        permanent: premium endpoint, plan does not cover it
    │   ├── SymbolNotFoundError     permanent: vendor does not know the symbol
    │   ├── MalformedResponseError  retryable: the body cannot be parsed as promised
    │   └── CircuitOpenError        the breaker refuses calls to this provider for now
    ├── AccessError                 an API caller may not do this
    │   ├── AuthenticationError     missing, wrong, expired or revoked credentials (401)
    │   ├── PermissionDeniedError   a scope or an entitlement the caller lacks (403)
    │   └── TooManyRequestsError    the caller's rate limit is spent (429, `retry_after_s`)
    ├── StorageError                retryable: the store could not read or write (down, locked)
    │   ├── StorageRejectedError    permanent: the store refuses the data itself (range, constraint)
    │   └── StorageUsageError       permanent: a request no store can serve (unknown column, no
    │                               cold tier configured, a restore target that is not empty)
    ├── BusError                    retryable: publishing or consuming an event failed
    │   ├── DecodeError             permanent: bytes no codec reads, or not the event expected
    │   ├── MessageTooLargeError    permanent: larger than the broker takes
    │   └── BusUsageError           permanent: a request no broker can serve (unknown topic or
    │                               codec, a member out of range, an event type with no schema)
    └── CalendarError               a date outside a calendar's range, unknown MIC

Transient versus permanent is one question: `is_retryable()`. A consumer retries (redelivers)
what is retryable and sets aside at once (dead letters, quarantine) what is not: the store and
the broker being away passes, a message or a value they refuse stays refused, and so does
a caller's mistake: raise the `...UsageError` subclasses, never a bare `StorageError` or
`BusError`, for those.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessError",
    "AuthenticationError",
    "BusError",
    "BusUsageError",
    "CalendarError",
    "CircuitOpenError",
    "ConfigurationError",
    "DecodeError",
    "EntitlementError",
    "InvalidIdentifierError",
    "InvalidInputError",
    "InvalidTimeframeError",
    "MalformedResponseError",
    "MessageTooLargeError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProviderError",
    "QuantiVistaError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "RuleValidationError",
    "SchemaError",
    "StorageError",
    "StorageRejectedError",
    "StorageUsageError",
    "SymbolNotFoundError",
    "TooManyRequestsError",
    "TransientProviderError",
]


class QuantiVistaError(Exception):
    """Root of every error the platform raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def is_retryable(self) -> bool:
        """Say whether trying the same thing again later can succeed."""
        return self.retryable

    def __str__(self) -> str:
        if not self.context:
            return self.message
        ctx = ", ".join(f"{k}={v!r}" for k, v in sorted(self.context.items()))
        return f"{self.message} [{ctx}]"

    def __reduce__(self) -> tuple[Any, ...]:
        # keep context when errors cross process boundaries (workers, pickled DLQ entries)
        return (_rebuild, (type(self), self.message, self.context))


def _rebuild(cls: type[QuantiVistaError], message: str, context: dict[str, Any]) -> Any:
    try:  # every error of this module takes its context as keywords
        return cls(message, **context)
    except TypeError:  # a subclass with its own signature: restore the fields by hand
        pass
    err = cls.__new__(cls)
    QuantiVistaError.__init__(err, message, **context)
    for key, value in context.items():
        if not hasattr(err, key):
            setattr(err, key, value)
    return err


class ConfigurationError(QuantiVistaError):
    """Settings are wrong or incomplete."""


class InvalidInputError(QuantiVistaError):
    """A caller passed something the platform cannot use."""


class SchemaError(InvalidInputError):
    """A frame does not fit the canonical schema (missing columns, wrong types)."""


class InvalidTimeframeError(InvalidInputError):
    """A timeframe string cannot be parsed."""


class InvalidIdentifierError(InvalidInputError):
    """A security identifier (ISIN, CUSIP, SEDOL, FIGI) is malformed or fails its check digit."""


class RuleValidationError(InvalidInputError):
    """A transformation rule or quality check names an unknown field or a bad expression.

    Carries `rule_id` (or the check's id) and `reason`.
    """


class NotFoundError(QuantiVistaError):
    """A named thing (provider, symbol, job, calendar) does not exist."""


class ProviderError(QuantiVistaError):
    """A data vendor call failed. Carries `provider`, `symbol` and a redacted `url`."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        symbol: str | None = None,
        url: str | None = None,
        status_code: int | None = None,
        **context: Any,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            symbol=symbol,
            url=url,
            status_code=status_code,
            **context,
        )
        self.provider = provider
        self.symbol = symbol
        self.url = url
        self.status_code = status_code


class TransientProviderError(ProviderError):
    """Timeouts, connection errors, 5xx: trying again soon may work."""

    retryable = True


class RateLimitedError(ProviderError):
    """The vendor throttled us; `retry_after_s` says how long to wait when known."""

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **kw)
        self.retry_after_s = retry_after_s


class QuotaExhaustedError(ProviderError):
    """A daily or monthly quota is used up; calls succeed again only after it resets."""

    retryable = False


class AccessError(QuantiVistaError):
    """An API caller may not do what it asked."""


class AuthenticationError(AccessError):
    """Credentials are missing, wrong, expired or revoked."""


class PermissionDeniedError(AccessError):
    """The caller's scopes or its tenant's entitlements do not cover the request."""


class TooManyRequestsError(AccessError):
    """The caller's rate limit is spent for now."""

    retryable = True

    @property
    def retry_after_s(self) -> float:
        """Return how long the caller should wait, in seconds."""
        return float(self.context.get("retry_after_s", 1.0))


class EntitlementError(ProviderError):
    """The plan or key does not cover this endpoint or data set."""


class SymbolNotFoundError(ProviderError):
    """The vendor does not know this symbol."""


class MalformedResponseError(ProviderError):
    """The response body is not what the vendor's format promises.

    Retryable: a truncated transfer or an outage page in place of JSON usually passes; a
    format the parser truly does not know fails every attempt and the router moves on.
    """

    retryable = True


class CircuitOpenError(ProviderError):
    """The circuit breaker for this provider is open and refuses calls."""

    retryable = True


class StorageError(QuantiVistaError):
    """The store could not complete a read or a write (unreachable, locked, schema away)."""

    retryable = True


class StorageRejectedError(StorageError):
    """The store refuses the data itself (a value out of range, a broken constraint): writing
    the same rows again fails the same way."""

    retryable = False


class StorageUsageError(StorageError):
    """The request itself is wrong for the store (an unknown column, a missing setting, a
    backup target that is not empty): asking again fails the same way."""

    retryable = False


class BusError(QuantiVistaError):
    """An event could not be published or consumed (the broker away, a timeout)."""

    retryable = True


class DecodeError(BusError):
    """A message's bytes are no event a codec reads, or not the event its topic carries."""

    retryable = False


class MessageTooLargeError(BusError):
    """A message is larger than the broker takes (NATS `max_payload`)."""

    retryable = False


class BusUsageError(BusError):
    """The request itself is wrong for the bus (an unknown topic or codec, a member index out
    of range, an event field no schema can carry): asking again fails the same way."""

    retryable = False


class CalendarError(QuantiVistaError):
    """An unknown exchange calendar or a date outside its range."""
