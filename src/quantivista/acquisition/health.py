"""Provider health: success rate and latency as moving averages, folded into one score.

With a shared `store` (Redis) the averages are those of every process's calls; a store
that cannot be reached leaves this process with its own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantivista.acquisition.shared import RedisHealthStore

__all__ = ["LATENCY_REFERENCE_S", "HealthMonitor", "ProviderHealth"]

LATENCY_REFERENCE_S = 2.0

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProviderHealth:
    """Running health of one provider (EWMA: recent calls weigh most)."""

    calls: int = 0
    failures: int = 0
    success_ewma: float = 1.0  # optimistic start: an untried provider is not penalized
    latency_ewma_s: float = 0.0
    last_error: str | None = None

    @property
    def score(self) -> float:
        """Return a health score in [0, 1]: the success rate, discounted by slowness.

        A provider answering in `LATENCY_REFERENCE_S` on average scores half its success rate.
        """
        return self.success_ewma / (1.0 + self.latency_ewma_s / LATENCY_REFERENCE_S)


class HealthMonitor:
    """Health per provider, updated by the router after every call."""

    def __init__(self, alpha: float = 0.2, *, store: RedisHealthStore | None = None) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.store = store
        self._health: dict[str, ProviderHealth] = {}
        self._suspended: dict[str, float] = {}  # provider -> monotonic time it may be used again
        self._lock = threading.Lock()

    def record(self, provider: str, ok: bool, latency_s: float, error: str | None = None) -> None:
        """Fold one call's outcome into the provider's health."""
        if self.store is not None:
            try:
                self.store.record(provider, self.alpha, ok, latency_s, error)
            except Exception as exc:
                _log.warning("shared health not updated: %s", exc)
        with self._lock:
            h = self._health.setdefault(provider, ProviderHealth())
            a = self.alpha
            h.calls += 1
            h.success_ewma = (1 - a) * h.success_ewma + a * (1.0 if ok else 0.0)
            h.latency_ewma_s = (
                latency_s if h.calls == 1 else (1 - a) * h.latency_ewma_s + a * latency_s
            )
            if not ok:
                h.failures += 1
                h.last_error = error

    def get(self, provider: str) -> ProviderHealth:
        """Return a copy of the health of `provider` (a fresh record if never called)."""
        if self.store is not None:
            try:
                shared = self.store.read(provider)
            except Exception as exc:
                _log.warning("shared health unreadable: %s", exc)
            else:
                if shared is not None:
                    return ProviderHealth(**shared)
        with self._lock:
            h = self._health.get(provider, ProviderHealth())
            return ProviderHealth(
                h.calls, h.failures, h.success_ewma, h.latency_ewma_s, h.last_error
            )

    def suspend(self, provider: str, until: float) -> None:
        """Keep `provider` out of rotation until monotonic time `until` (a spent quota)."""
        with self._lock:
            self._suspended[provider] = max(until, self._suspended.get(provider, 0.0))

    def suspended_for(self, provider: str, now: float) -> float:
        """Return the seconds `provider` stays suspended (0 when usable)."""
        with self._lock:
            return max(self._suspended.get(provider, 0.0) - now, 0.0)

    def score(self, provider: str) -> float:
        """Return the health score of `provider` in [0, 1]."""
        return self.get(provider).score
