"""What one API process holds: the runtime, auth, the client rate limiter, the response cache."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from quantivista.acquisition.limits import RateLimiter, WindowUsage
from quantivista.api.cache import ResponseCache
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
    limiter: RateLimiter
    cache: ResponseCache
    metrics: ApiMetrics
    _limited: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, client_id: str) -> WindowUsage | None:
        """Count one request of `client_id`; `TooManyRequestsError` when its limit is spent.

        Return the tightest window's usage after the request (for X-RateLimit-* headers).
        """
        key = f"api:{client_id}"
        with self._lock:
            if key not in self._limited:
                self.limiter.set_limits(key, self.runtime.settings.api.rate_limits)
                self._limited.add(key)
        wait = self.limiter.try_acquire(key)
        if wait > 0:
            raise TooManyRequestsError(
                "rate limit of this client reached", client_id=client_id, retry_after_s=wait
            )
        usage = self.limiter.usage(key)
        return min(usage, key=lambda u: u.left) if usage else None
