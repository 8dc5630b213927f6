"""The shared HTTP machinery of the real vendor clients.

`HttpProvider` owns an injectable `httpx.Client`, the vendor's `base_url` (the real one by
default; the provider simulator or a test passes its own), the API key, a timeout and an
optional `CallGate` (a rate limiter) that every request passes first. It maps the transport
and status-code layer onto the platform's error tree:

    transport error, timeout, 5xx  -> TransientProviderError
    429                            -> RateLimitedError (retry_after_s from Retry-After)
    401, 403                       -> EntitlementError
    404                            -> SymbolNotFoundError
    other 4xx                      -> ProviderError (permanent)

Vendors that answer errors with HTTP 200 are handled by each provider's parser; vendors with
their own status semantics override `classify_status`. Every response becomes a `RawPayload`
(the bronze record) whose URL and parameters never contain the key.

URL layout: each client requests `base_url + <the vendor's real path>`, so pointing
`base_url` at the simulator (`http://host:port/<provider>`) is all a client needs.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from quantivista.clock import SystemClock
from quantivista.errors import (
    ConfigurationError,
    EntitlementError,
    ProviderError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.providers.base import CallGate, Provider, RawPayload

if TYPE_CHECKING:
    from quantivista.clock import Clock
    from quantivista.config import Settings

__all__ = ["CallGate", "HttpProvider", "parse_retry_after", "path_part", "redact"]

REDACTED = "***"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the wait a `Retry-After` header asks for, in seconds (None when absent or bad).

    Both forms are accepted: delta-seconds (`"30"`) and an HTTP date.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ref = now or datetime.now(UTC)
        return max(0.0, (when - ref).total_seconds())
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, inf
        return None
    return seconds


def path_part(value: str) -> str:
    """Percent-encode `value` for one URL path segment (`^GSPC` -> `%5EGSPC`, `/` escaped)."""
    return quote(value, safe="-._~")


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of `secret` in `text` (no-op without a secret)."""
    if not secret:
        return text
    return text.replace(secret, REDACTED)


class HttpProvider(Provider):
    """Base of the vendor clients that speak HTTP (see the module docstring).

    Subclasses set `name`, `capabilities`, `default_base_url` and where the key goes:
    `key_param` (a query parameter) or `key_header` (+ `key_header_prefix`).
    """

    default_base_url: ClassVar[str] = ""
    key_param: ClassVar[str | None] = None
    key_header: ClassVar[str | None] = None
    key_header_prefix: ClassVar[str] = ""
    user_agent: ClassVar[str] = "quantivista/0.1 (+https://github.com/quantivista)"
    gates_requests: ClassVar[bool] = True

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        gate: CallGate | None = None,
        clock: Clock | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._api_key = key or None
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.timeout_s = timeout_s
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
        self.gate = gate
        self.clock: Clock = clock if clock is not None else SystemClock()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> HttpProvider:
        """Build the client from `settings.providers.<name>` (key, base URL, timeout)."""
        section = getattr(settings.providers, cls.name, None)
        if section is None:
            return cls(clock=clock)
        return cls(
            api_key=section.api_key,
            base_url=section.base_url,
            timeout_s=section.timeout_s,
            clock=clock,
        )

    @property
    def has_key(self) -> bool:
        """Say whether an API key is configured."""
        return self._api_key is not None

    def require_key(self) -> str:
        """Return the API key or raise `ConfigurationError` naming the setting to fill."""
        if self._api_key is None:
            raise ConfigurationError(
                f"provider {self.name!r} needs an API key",
                setting=f"QV_PROVIDERS__{self.name.upper()}__API_KEY",
            )
        return self._api_key

    def url(self, path: str) -> str:
        """Return `base_url + path` (the vendor's real path)."""
        return self.base_url + path

    def redact(self, text: str) -> str:
        """Remove the API key from `text`."""
        return redact(text, self._api_key)

    # -- the one place requests go out -------------------------------------------------------

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        symbol: str | None = None,
        cost: int = 1,
        with_key: bool = True,
    ) -> tuple[httpx.Response, RawPayload]:
        """GET `url` through the gate; map failures to provider errors; return the payload.

        `url` is absolute (`self.url(path)` or a vendor's `next_url`). The key is added as a
        query parameter or header here, never by callers, and kept out of the payload.
        """
        public = {k: str(v) for k, v in (params or {}).items()}
        query = dict(public)
        headers = {"User-Agent": self.user_agent, "Accept": "*/*"}
        if with_key and self._api_key is not None:
            if self.key_param:
                query[self.key_param] = self._api_key
            if self.key_header:
                headers[self.key_header] = self.key_header_prefix + self._api_key
        try:
            # merge, not replace: a vendor's next_url carries its own query (cursor)
            full = httpx.URL(url).copy_merge_params(query) if query else httpx.URL(url)
            request = self._client.build_request(
                "GET", full, headers=headers, timeout=self.timeout_s
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
            raise ProviderError(
                f"cannot build a request to {self.name}: {self.redact(str(exc))}",
                provider=self.name,
                symbol=symbol,
                url=self.redact(url),
            ) from None
        safe_url = self._safe_url(request.url)
        # httpx's timeout is per phase (connect, write, read): a call ends within three
        admitted = (
            self.gate.call(self.name, cost, hold_s=3 * (self.timeout_s or 20.0) + 1.0)
            if self.gate is not None
            else nullcontext()
        )
        try:
            with admitted:
                response = self._client.send(request)
                body = response.read()
        except httpx.TimeoutException as exc:
            raise TransientProviderError(
                f"{self.name} timed out after {self.timeout_s:g} s ({type(exc).__name__})",
                provider=self.name,
                symbol=symbol,
                url=safe_url,
            ) from None
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                f"{self.name} transport error: {type(exc).__name__}: {self.redact(str(exc))}",
                provider=self.name,
                symbol=symbol,
                url=safe_url,
            ) from None
        payload = RawPayload(
            provider=self.name,
            url=safe_url,
            status_code=response.status_code,
            body=body,
            received_at=self.clock.now(),
            content_type=response.headers.get("content-type", ""),
            request_params=public,
        )
        error = self.classify_status(response, payload, symbol)
        if error is not None:
            raise error
        return response, payload

    def _safe_url(self, url: httpx.URL) -> str:
        if self.key_param:
            url = url.copy_remove_param(self.key_param)
        return self.redact(str(url))

    def classify_status(
        self, response: httpx.Response, payload: RawPayload, symbol: str | None
    ) -> ProviderError | None:
        """Return the error an HTTP status means, or None for a success (2xx/3xx).

        Subclasses refine this with the vendor's error bodies; the generic mapping is in the
        module docstring.
        """
        status = response.status_code
        if status < 400:
            return None
        detail = self.error_detail(payload.body)
        ctx: dict[str, Any] = {
            "provider": self.name,
            "symbol": symbol,
            "url": payload.url,
            "status_code": status,
        }
        message = f"{self.name} answered HTTP {status}" + (f": {detail}" if detail else "")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.now())
            return RateLimitedError(message, retry_after_s=retry_after, **ctx)
        if status >= 500:
            return TransientProviderError(message, **ctx)
        if status in (401, 403):
            return EntitlementError(message, **ctx)
        if status == 404:
            return SymbolNotFoundError(message, **ctx)
        return ProviderError(message, **ctx)

    def error_detail(self, body: bytes) -> str:
        """Return a short, key-free excerpt of an error body for messages."""
        text = body[:300].decode("utf-8", errors="replace").strip()
        return self.redact(" ".join(text.split()))

    def close(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._own_client:
            self._client.close()
