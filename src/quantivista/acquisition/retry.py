"""Retry policy: exponential backoff with jitter that honours a vendor's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantivista.errors import CircuitOpenError, QuantiVistaError, RateLimitedError

if TYPE_CHECKING:
    from quantivista.config import RetrySettings

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before calling the same provider again.

    The n-th retry waits `base_delay_s * 2**(n-1)` capped at `max_delay_s`, of which the
    share `jitter` is randomized (so workers that failed together do not retry together).
    A `RateLimitedError` with `retry_after_s` waits exactly that long, unless it is longer
    than `max_retry_after_s`: then the router fails over instead of waiting.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.5
    max_retry_after_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        """Build the policy from `settings.resilience.retry`."""
        return cls(
            settings.max_attempts,
            settings.base_delay_s,
            settings.max_delay_s,
            settings.jitter,
            settings.max_retry_after_s,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait after failed call number `attempt` (1-based), with jitter."""
        full = min(self.max_delay_s, self.base_delay_s * 2 ** max(attempt - 1, 0))
        draw: float = (rng or random).random()
        return float(full * (1.0 - self.jitter * draw))

    def delay(
        self, attempt: int, error: BaseException, rng: random.Random | None = None
    ) -> float | None:
        """Return the wait before retrying after `error`, or None to move on to the next one."""
        if attempt >= self.max_attempts or isinstance(error, CircuitOpenError):
            return None
        if not (isinstance(error, QuantiVistaError) and error.is_retryable()):
            return None
        if isinstance(error, RateLimitedError) and error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            return max(error.retry_after_s, 0.0)
        return self.backoff(attempt, rng)
