"""Response cache and single-flight for the router, both keyed by the request alone.

A request whose range ended long enough ago asks for settled history, which no vendor
changes any more: it is cached for long. Recent data (today's bar may still move, late
corrections land for a few days) gets a short TTL.

With a shared second level (`l2`, Redis), an answer fetched by one process serves every
other; L2 outages only cost misses.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from quantivista.providers.base import BarRequest, FetchResult

if TYPE_CHECKING:
    from quantivista.acquisition.shared import RedisResultCache
    from quantivista.config import CacheSettings

__all__ = ["ResponseCache", "SingleFlight", "copy_result", "request_key"]

T = TypeVar("T")
RequestKey = tuple[str, str, str, str]
_log = logging.getLogger(__name__)


def request_key(request: BarRequest) -> RequestKey:
    """Return the provider-independent identity of a request."""
    return (
        request.symbol.upper(),
        str(request.timeframe),
        request.start.isoformat(),
        request.end.isoformat(),
    )


def copy_result(result: FetchResult, **metadata: object) -> FetchResult:
    """Return a copy sharing the (immutable) frames, with its own metadata and raw list."""
    return replace(result, raw=list(result.raw), metadata={**result.metadata, **metadata})


class ResponseCache:
    """An LRU of fetch results with a TTL chosen by how settled the requested range is."""

    def __init__(
        self,
        *,
        max_entries: int = 1024,
        recent_ttl_s: float = 300.0,
        history_ttl_s: float = 7 * 86400.0,
        settled_after_days: int = 3,
        l2: RedisResultCache | None = None,
    ) -> None:
        self.l2 = l2
        self.l2_hits = 0
        self.max_entries = max_entries
        self.recent_ttl_s = recent_ttl_s
        self.history_ttl_s = history_ttl_s
        self.settled_after = timedelta(days=settled_after_days)
        self._items: OrderedDict[RequestKey, tuple[datetime, FetchResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(
        cls, settings: CacheSettings, l2: RedisResultCache | None = None
    ) -> ResponseCache:
        """Build the cache from `settings.resilience.cache` (l2: shared level in Redis)."""
        return cls(
            max_entries=settings.max_entries,
            recent_ttl_s=settings.recent_ttl_s,
            history_ttl_s=settings.history_ttl_s,
            settled_after_days=settings.settled_after_days,
            l2=l2,
        )

    def ttl_s(self, request: BarRequest, now: datetime) -> float:
        """Return how long an answer to `request` stays valid."""
        settled = request.end <= now - self.settled_after
        return self.history_ttl_s if settled else self.recent_ttl_s

    def get(self, request: BarRequest, now: datetime) -> FetchResult | None:
        """Return a copy of the cached answer, or None when absent or expired."""
        key = request_key(request)
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] > now:
                self._items.move_to_end(key)
                self.hits += 1
                return copy_result(item[1], cached=True)
            if item is not None:
                del self._items[key]
        found = self._l2_get(key)
        with self._lock:
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self.l2_hits += 1
            # L1 keeps it for the shorter of the two TTLs the request could have
            expires = now + timedelta(seconds=min(self.ttl_s(request, now), self.recent_ttl_s))
            self._keep(key, expires, found)
        return copy_result(found, cached=True, cache_level="l2")

    def put(self, request: BarRequest, result: FetchResult, now: datetime) -> None:
        """Keep `result` for the TTL its request deserves."""
        ttl = self.ttl_s(request, now)
        if ttl <= 0 or self.max_entries <= 0:
            return
        key = request_key(request)
        with self._lock:
            self._keep(key, now + timedelta(seconds=ttl), copy_result(result))
        if self.l2 is not None:
            try:
                self.l2.put(key, result, ttl)
            except Exception as exc:
                _log.warning("shared response cache not updated: %s", exc)

    def _keep(self, key: RequestKey, expires: datetime, result: FetchResult) -> None:
        self._items[key] = (expires, result)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def _l2_get(self, key: RequestKey) -> FetchResult | None:
        if self.l2 is None:
            return None
        try:
            return self.l2.get(key)
        except Exception as exc:
            _log.warning("shared response cache unreadable: %s", exc)
            return None

    def clear(self) -> None:
        """Drop every entry (of this process; the shared level expires by itself)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class SingleFlight:
    """Concurrent calls with the same key share one execution and its outcome."""

    def __init__(self) -> None:
        self._calls: dict[object, Future[object]] = {}
        self._lock = threading.Lock()

    def do(self, key: object, fn: Callable[[], T]) -> tuple[T, bool]:
        """Run `fn` unless a call with `key` is in flight; return (value, shared)."""
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = Future()
                self._calls[key] = future
        if not leader:
            return future.result(), True  # type: ignore[return-value]
        try:
            value = fn()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(value)
            return value, False
        finally:
            with self._lock:
                del self._calls[key]
