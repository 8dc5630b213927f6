"""Response cache and single-flight for the router, both keyed by the request alone.

A request whose range ended long enough ago asks for settled history, which no vendor
changes any more: it is cached for long. Recent data (today's bar may still move, late
corrections land for a few days) gets a short TTL.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from quantivista.providers.base import BarRequest, FetchResult

if TYPE_CHECKING:
    from quantivista.config import CacheSettings

__all__ = ["ResponseCache", "SingleFlight", "copy_result", "request_key"]

T = TypeVar("T")
RequestKey = tuple[str, str, str, str]


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
    ) -> None:
        self.max_entries = max_entries
        self.recent_ttl_s = recent_ttl_s
        self.history_ttl_s = history_ttl_s
        self.settled_after = timedelta(days=settled_after_days)
        self._items: OrderedDict[RequestKey, tuple[datetime, FetchResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> ResponseCache:
        """Build the cache from `settings.resilience.cache`."""
        return cls(
            max_entries=settings.max_entries,
            recent_ttl_s=settings.recent_ttl_s,
            history_ttl_s=settings.history_ttl_s,
            settled_after_days=settings.settled_after_days,
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
            if item is None or item[0] <= now:
                if item is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return copy_result(item[1], cached=True)

    def put(self, request: BarRequest, result: FetchResult, now: datetime) -> None:
        """Keep `result` for the TTL its request deserves."""
        ttl = self.ttl_s(request, now)
        if ttl <= 0 or self.max_entries <= 0:
            return
        key = request_key(request)
        with self._lock:
            self._items[key] = (now + timedelta(seconds=ttl), copy_result(result))
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
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
