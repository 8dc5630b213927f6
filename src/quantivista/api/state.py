"""What one API process holds: the runtime, auth, the client rate limiter, the response cache."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from quantivista.acquisition.limits import RateLimiter, WindowUsage
from quantivista.api.cache import ResponseCache
from quantivista.api.lease import LeasedLimiter
from quantivista.api.metrics import ApiMetrics
from quantivista.errors import TooManyRequestsError
from quantivista.runtime import Runtime
from quantivista.services.auth import AuthService

__all__ = ["ApiState"]


@dataclass
class ApiState:
    """Shared by every request of one API process."""

    runtime: Runtime
    auth: AuthService
    limiter: RateLimiter | LeasedLimiter  # leased: over Redis
    cache: ResponseCache
    metrics: ApiMetrics
    _limited: dict[str, str] = field(default_factory=dict)  # client -> its limiter key
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, client_id: str) -> WindowUsage | None:
        """Count one request of `client_id`; `TooManyRequestsError` when its limit is spent.

        Return the tightest window's usage after the request (for X-RateLimit-* headers).
        """
        key = self._limited.get(client_id)
        if key is None:  # a client's first request: give it the API's limits
            with self._lock:
                key = f"api:{client_id}"
                self.limiter.set_limits(key, self.runtime.settings.api.rate_limits)
                self._limited[client_id] = key
        wait, usage = self.limiter.take(key)
        if wait > 0:
            raise TooManyRequestsError(
                "rate limit of this client reached", client_id=client_id, retry_after_s=wait
            )
        return usage
