"""Provider state shared by every process through Redis: breakers, health and cached answers.

With `resilience.backend = "redis"` each process keeps its own breaker, health record and
response cache as before, and also publishes to (and reads from) Redis under
`<resilience.redis_prefix>.state`:

- a breaker that opens writes `open` with the wall time it opened; every other process
  adopts it on its next call (and so stops calling the vendor), and only one process at a
  time may send the half-open probe (`SET NX` with a TTL); the probe's outcome is
  published the same way;
- health is one hash per provider, its moving averages updated by one Lua script;
- the response cache keeps a second level (L2): Arrow IPC frames with a JSON header.

Redis being down never fails a fetch: each part falls back to its in-process state.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from quantivista.errors import ConfigurationError
from quantivista.model.payloads import RawPayload
from quantivista.providers.base import FetchResult

__all__ = [
    "BreakerRecord",
    "RedisBreakerState",
    "RedisHealthStore",
    "RedisResultCache",
    "decode_result",
    "encode_result",
    "redis_client",
    "state_prefix",
]

log = logging.getLogger(__name__)


def redis_client(url: str) -> Any:
    """Return a Redis client with short timeouts (shared state is best effort)."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "shared provider state needs the redis client: pip install 'quantivista[redis]'"
        ) from exc
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def state_prefix(redis_prefix: str) -> str:
    """Return the key prefix of shared state, apart from the rate limiter's own keys."""
    return f"{redis_prefix}.state"


# -- breakers --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The last state change of a provider's breaker, in any process."""

    state: str  # "open" or "closed"
    at: float  # wall-clock seconds
    reason: str


class RedisBreakerState:
    """Breaker records and the half-open probe slot, one key each per provider."""

    def __init__(self, client: Any, prefix: str, *, ttl_s: float = 86400.0) -> None:
        self._redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, provider: str, what: str) -> str:
        return f"{self.prefix}:breaker:{provider}:{what}"

    def read(self, provider: str) -> BreakerRecord | None:
        """Return the provider's last published change, or None."""
        raw = self._redis.get(self._key(provider, "record"))
        if raw is None:
            return None
        data = json.loads(raw)
        return BreakerRecord(str(data["state"]), float(data["at"]), str(data["reason"]))

    def publish(self, provider: str, record: BreakerRecord) -> None:
        """Publish a change unless a later one is already there (clocks only move forward)."""
        body = json.dumps({"state": record.state, "at": record.at, "reason": record.reason})
        self._script(
            keys=[self._key(provider, "record")],
            args=[body, repr(record.at), int(self.ttl_s * 1000)],
        )

    def claim_probe(self, provider: str, ttl_s: float) -> bool:
        """Take the one half-open probe slot of all processes; False if another holds it."""
        return bool(
            self._redis.set(
                self._key(provider, "probe"), b"1", nx=True, px=max(int(ttl_s * 1000), 1)
            )
        )

    def release_probe(self, provider: str) -> None:
        """Free the probe slot."""
        self._redis.delete(self._key(provider, "probe"))

    def reset(self, provider: str) -> None:
        """Forget the provider's records (tests, operators)."""
        self._redis.delete(self._key(provider, "record"), self._key(provider, "probe"))

    @property
    def _script(self) -> Any:
        script = getattr(self, "_publish", None)
        if script is None:
            script = self._redis.register_script(_PUBLISH_LUA)
            self._publish = script
        return script


# KEYS[1] record; ARGV: body, at, ttl ms. Keep the later of the stored and the new change.
_PUBLISH_LUA = """
local old = redis.call('GET', KEYS[1])
if old then
  local at = tonumber(cjson.decode(old)['at'])
  if at > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[3]))
return 1
"""


# -- health ----------------------------------------------------------------------------------
# KEYS[1] hash; ARGV: alpha, ok (1/0), latency_s, error. The same EWMA as HealthMonitor.
_HEALTH_LUA = """
local a = tonumber(ARGV[1])
local ok = tonumber(ARGV[2])
local lat = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'calls', 'failures', 'success', 'latency')
local calls = tonumber(h[1]) or 0
local failures = tonumber(h[2]) or 0
local success = tonumber(h[3]) or 1.0
local latency = tonumber(h[4]) or 0.0
calls = calls + 1
success = (1 - a) * success + a * ok
if calls == 1 then latency = lat else latency = (1 - a) * latency + a * lat end
redis.call('HSET', KEYS[1], 'calls', calls, 'success', tostring(success),
           'latency', tostring(latency))
if ok == 0 then
  redis.call('HSET', KEYS[1], 'failures', failures + 1, 'error', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return calls
"""


class RedisHealthStore:
    """Health per provider in one Redis hash, updated atomically by every process."""

    def __init__(self, client: Any, prefix: str, *, ttl_s: float = 7 * 86400.0) -> None:
        self._redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._script = client.register_script(_HEALTH_LUA)

    def _key(self, provider: str) -> str:
        return f"{self.prefix}:health:{provider}"

    def record(
        self, provider: str, alpha: float, ok: bool, latency_s: float, error: str | None
    ) -> None:
        """Fold one call's outcome into the shared moving averages."""
        self._script(
            keys=[self._key(provider)],
            args=[repr(alpha), 1 if ok else 0, repr(latency_s), error or "",
                  int(self.ttl_s * 1000)],
        )  # fmt: skip

    def read(self, provider: str) -> dict[str, Any] | None:
        """Return calls, failures, success_ewma, latency_ewma_s and last_error, or None."""
        raw = self._redis.hgetall(self._key(provider))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return {
            "calls": int(fields.get("calls", 0)),
            "failures": int(fields.get("failures", 0)),
            "success_ewma": float(fields.get("success", 1.0)),
            "latency_ewma_s": float(fields.get("latency", 0.0)),
            "last_error": fields.get("error") or None,
        }

    def reset(self, provider: str) -> None:
        """Forget the provider's health."""
        self._redis.delete(self._key(provider))


# -- response cache (L2) ---------------------------------------------------------------------
def _ipc(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="lz4")
    return buf.getvalue()


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def encode_result(result: FetchResult) -> dict[str, bytes]:
    """Return the fields of a Redis hash holding `result` (frames as Arrow IPC)."""
    header = {
        "provider": result.provider,
        # attempts and other objects describe the call that filled the cache, not a hit
        "metadata": {k: v for k, v in result.metadata.items() if _plain(v)},
        "raw": [
            {
                "provider": p.provider,
                "url": p.url,
                "status_code": p.status_code,
                "body": base64.b64encode(p.body).decode(),
                "received_at": p.received_at.isoformat(),
                "content_type": p.content_type,
                "request_params": p.request_params,
            }
            for p in result.raw
        ],
    }
    return {
        "header": json.dumps(header).encode(),
        "bars": _ipc(result.bars),
        "actions": _ipc(result.actions),
    }


def decode_result(fields: dict[bytes, bytes]) -> FetchResult:
    """Rebuild a `FetchResult` from `encode_result`'s fields."""
    header = json.loads(fields[b"header"])
    raw = [
        RawPayload(
            provider=p["provider"],
            url=p["url"],
            status_code=int(p["status_code"]),
            body=base64.b64decode(p["body"]),
            received_at=datetime.fromisoformat(p["received_at"]),
            content_type=p["content_type"],
            request_params=dict(p["request_params"]),
        )
        for p in header["raw"]
    ]
    return FetchResult(
        bars=pl.read_ipc(io.BytesIO(fields[b"bars"])),
        actions=pl.read_ipc(io.BytesIO(fields[b"actions"])),
        raw=raw,
        provider=str(header["provider"]),
        metadata=dict(header["metadata"]),
    )


class RedisResultCache:
    """Fetch results in Redis hashes with the TTL the L1 cache chose."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._redis = client
        self.prefix = prefix

    def _key(self, key: tuple[str, ...]) -> str:
        return f"{self.prefix}:cache:" + "|".join(key)

    def get(self, key: tuple[str, ...]) -> FetchResult | None:
        """Return the cached result, or None."""
        fields = self._redis.hgetall(self._key(key))
        return decode_result(fields) if fields else None

    def put(self, key: tuple[str, ...], result: FetchResult, ttl_s: float) -> None:
        """Keep `result` for `ttl_s` seconds."""
        name = self._key(key)
        pipe = self._redis.pipeline()
        pipe.delete(name)
        pipe.hset(name, mapping=encode_result(result))
        pipe.pexpire(name, max(int(ttl_s * 1000), 1))
        pipe.execute()

    def clear(self) -> None:
        """Drop every shared entry under this prefix."""
        keys = list(self._redis.scan_iter(match=f"{self.prefix}:cache:*"))
        if keys:
            self._redis.delete(*keys)
