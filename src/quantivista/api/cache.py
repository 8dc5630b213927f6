"""Response cache for settled history: L1 in this process, L2 in Redis for every API process.

Keys carry the store's data epoch (a token every write replaces, kept in the job catalog),
so a write anywhere invalidates every cached response at once without listing them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantivista.api.metrics import ApiMetrics

__all__ = ["CachedResponse", "Chunk", "ResponseCache"]

Chunk = bytes | memoryview  # a piece of a streamed body (a view of an Arrow buffer)

_L2_TTL_S = 3600
_L2_MAX_BYTES = 16 << 20  # larger answers (bulk downloads) stay in this process only


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A response body with its media type, entity tag and row count (X-Total-Count).

    A large streamed body is kept as the `parts` it was sent in, `body` empty: joining
    100 MB into one buffer costs more than sending it.
    """

    body: bytes
    media_type: str
    etag: str
    total: int | None = None
    parts: tuple[Chunk, ...] = ()
    size: int = field(init=False, compare=False)  # the body's length in bytes
    # the headers of a settled answer as the fast path sends them (ETag, Cache-Control,
    # X-Total-Count, then Content-Type and Content-Length for a 200): made once, sent often
    head: tuple[tuple[bytes, bytes], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        size = len(self.body) + sum(len(p) for p in self.parts)
        head = [(b"etag", self.etag.encode()), (b"cache-control", b"private, max-age=3600")]
        if self.total is not None:
            head.append((b"x-total-count", str(self.total).encode()))
        head += [(b"content-type", self.media_type.encode()),
                 (b"content-length", str(size).encode())]  # fmt: skip
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "head", tuple(head))


class ResponseCache:
    """Two-level cache of encoded responses; `epoch()` reads the store's data epoch."""

    def __init__(
        self,
        max_bytes: int,
        epoch: Callable[[], str],
        metrics: ApiMetrics,
        redis_url: str | None = None,
        prefix: str = "qv:api",
    ) -> None:
        self.max_bytes = max_bytes
        self._epoch = epoch
        self.metrics = metrics
        self._l1: OrderedDict[str, CachedResponse] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._redis: Any = None
        self.prefix = prefix
        if redis_url:
            import redis  # the `redis` extra

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5)

    def epoch(self) -> str:
        """Return the store's data epoch (the runtime reads it at most twice a second)."""
        return self._epoch()

    def get(self, key: str) -> CachedResponse | None:
        """Return a cached response for `key` under the current epoch."""
        full = f"{self.epoch()}:{key}"
        with self._lock:
            hit = self._l1.get(full)
            if hit is not None:
                self._l1.move_to_end(full)
        if hit is not None:
            self.metrics.hit()  # counted in a batch
            return hit
        if self._redis is not None:
            try:
                raw = self._redis.hgetall(f"{self.prefix}:{full}")
            except Exception:  # a cache outage must not fail requests
                raw = None
            if raw:
                total = raw.get(b"total")
                found = CachedResponse(raw[b"body"], raw[b"type"].decode(), raw[b"etag"].decode(),
                                       int(total) if total else None)  # fmt: skip
                self._keep(full, found)
                self.metrics.cache.labels("hit_l2").inc()
                return found
        self.metrics.cache.labels("miss").inc()
        return None

    def put(self, key: str, response: CachedResponse) -> None:
        """Cache a response under the current epoch (both levels)."""
        full = f"{self.epoch()}:{key}"
        self._keep(full, response)
        if self._redis is not None and not response.parts and response.size <= _L2_MAX_BYTES:
            name = f"{self.prefix}:{full}"
            try:
                pipe = self._redis.pipeline()
                mapping = {"body": response.body, "type": response.media_type,
                           "etag": response.etag}  # fmt: skip
                if response.total is not None:
                    mapping["total"] = str(response.total)
                pipe.hset(name, mapping=mapping)
                pipe.expire(name, _L2_TTL_S)
                pipe.execute()
            except Exception:  # best effort: L1 still holds it
                pass

    def _keep(self, full: str, response: CachedResponse) -> None:
        size = response.size
        if size > self.max_bytes // 2:
            return  # one huge response would evict everything else
        with self._lock:
            old = self._l1.pop(full, None)
            if old is not None:
                self._size -= old.size
            self._l1[full] = response
            self._size += size
            while self._size > self.max_bytes and self._l1:
                _, evicted = self._l1.popitem(last=False)
                self._size -= evicted.size

    def hit_ratio(self) -> float:
        """Return hits / lookups so far (for people; /metrics has the counters)."""
        self.metrics.flush()
        samples = {s.labels["outcome"]: s.value for m in self.metrics.cache.collect()
                   for s in m.samples if s.name.endswith("_total")}  # fmt: skip
        total = sum(samples.values())
        return (samples.get("hit_l1", 0) + samples.get("hit_l2", 0)) / total if total else 0.0

    def close(self) -> None:
        """Close the Redis connection."""
        if self._redis is not None:
            self._redis.close()
