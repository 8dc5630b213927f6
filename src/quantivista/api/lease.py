"""Per-client API rate limits shared through Redis, with tokens leased in small blocks.

A Redis-backed limit costs one blocking round trip per request when every request asks
Redis. A busy client's API process instead leases a block of tokens in one Lua call
(`RedisBackend.lease`: the limiter's own script, on Redis's clock) and spends them locally;
the block grows while the client keeps spending its leases (up to `max_block`, a tenth of
the tightest limit) and shrinks when it does not. Once half a block is spent, the next one
is taken on a background thread: a steady client's requests never wait for Redis on the
event loop (only a client's first request, one after a pause, or one whose next block is
still on its way does).

Exactness (documented in the README's API section):
- The shared limit is never exceeded: leased tokens are entries in the same Redis sorted
  sets as single calls (`RedisBackend`'s keys), scored at the lease's end (`now + ttl`), and
  a lease is spent only until then. Every request served lies inside a window that counts
  its entry, whatever process served it.
- Unspent tokens of an ended lease are given back (removed) by the next lease call of the
  same client in that process; a client that goes quiet leaves them counted until they
  leave the window (at most two blocks, 2 x `max_block`, per API process: the one spent
  and the one taken ahead).
- `X-RateLimit-Remaining` is the limit minus the calls Redis counted at the last lease
  plus this lease's unspent tokens (other processes' spending since then is not seen);
  `Retry-After` on a 429 is the exact wait for one token (an entry scored `ttl` ahead
  leaves the window up to `ttl` later than a single call would).
- A refused client is refused by this process without asking Redis for up to `ttl`
  (tokens another process gives back meanwhile are seen after that).
- A client whose tightest limit is under 10 calls gets blocks of one: every request is a
  Redis call and the counts are exact.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from quantivista.acquisition.limits import RedisBackend, WindowUsage
from quantivista.clock import Clock
from quantivista.model.rates import Rate

__all__ = ["LeasedLimiter"]


@dataclass(frozen=True)
class _Block:
    """Tokens taken by one lease call."""

    name: str
    size: int  # tokens taken (0: none, refused)
    wait: float  # when refused: the wait for one token
    ends: float  # spend only before this (backend time)
    seen: list[tuple[int, float]]  # per window: count, oldest score
    at: float  # when `seen` was read


@dataclass
class _Lease:
    """One client's current block of tokens in this process."""

    rates: tuple[Rate, ...]
    cap: int  # the largest block (a tenth of the tightest limit, at most `max_block`)
    name: str = ""
    size: int = 0  # tokens taken
    spent: int = 0
    ends: float = 0.0  # spend only before this (backend time)
    block: int = 1  # the size the next lease asks for
    seen: list[tuple[int, float]] = field(default_factory=list)  # per window: count, oldest
    at: float = 0.0  # when `seen` was read
    refused_until: float = 0.0  # a refused client is refused here until then, no Redis call
    free_at: float = 0.0  # when the refusal's wait ends
    ahead: Future[_Block] | None = None  # the next block, taken on the background thread
    retired: tuple[str, int, int] | None = None  # an ended block's unspent entries, to give back
    lock: threading.Lock = field(default_factory=threading.Lock)


class LeasedLimiter:
    """`RateLimiter.take` for API clients over a Redis backend, a block of tokens per call."""

    def __init__(
        self, backend: RedisBackend, clock: Clock, *, ttl_s: float = 0.25, max_block: int = 256
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_block = max_block
        self._leases: dict[str, _Lease] = {}
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="qv-api-lease")

    def set_limits(self, provider: str, rates: Iterable[str | Rate]) -> None:
        """Set the windows of `provider` (a client's limiter key); empty: unlimited."""
        parsed = [r if isinstance(r, Rate) else Rate.parse(r) for r in rates]
        cap = max(1, min(self.max_block, min((r.limit for r in parsed), default=0) // 10))
        self._leases[provider.lower()] = _Lease(
            tuple(sorted(parsed, key=lambda r: r.period_s)), cap
        )

    def take(self, provider: str, cost: int = 1) -> tuple[float, WindowUsage | None]:
        """Spend one token (from the lease, or a new lease); return the wait (0: admitted)
        and the tightest window's usage, as `RateLimiter.take` does."""
        del cost  # an API request costs one
        name = provider.lower()
        lease = self._leases.get(name)
        if lease is None or not lease.rates:
            return 0.0, None
        now = self.clock.now().timestamp()
        with lease.lock:
            if lease.spent < lease.size and now < lease.ends:
                return 0.0, self._spend(name, lease, now)
            ahead = self._next_block(lease)
            if ahead is not None and ahead.size and now < ahead.ends:
                self._install(lease, ahead)
                return 0.0, self._spend(name, lease, now)
            if now < lease.refused_until:  # a client over its limit costs Redis nothing
                return lease.free_at - now, self._usage(name, lease, now)
            self._size_next(lease)
            owed = self._owed(lease, ahead)
            for extra in owed[1:]:  # rare: more than one block ended unspent
                self.backend.give_back(name, lease.rates, *extra)
            block = self._lease(name, lease.rates, lease.block, owed[0] if owed else None)
            self._install(lease, block)
            if block.wait > 0:
                # look again after at most a lease's time: another process may give back
                lease.refused_until = now + min(block.wait, self.ttl_s)
                lease.free_at = now + block.wait
                return block.wait, self._usage(name, lease, now)
            return 0.0, self._spend(name, lease, now)

    def _spend(self, name: str, lease: _Lease, now: float) -> WindowUsage:
        """Spend a token of the current block; once half of it is spent, take the next
        block ahead (demand is high). Blocks of one (limits under 10) are never taken ahead:
        their counts stay exact."""
        lease.spent += 1
        if lease.ahead is None and 2 * lease.spent >= lease.size and lease.cap > 1:
            self._take_ahead(name, lease)
        return self._usage(name, lease, now)

    def _size_next(self, lease: _Lease) -> None:
        """Size the next block after the current one: doubled when it was spent before it
        ended, else the number spent (a client slowing down holds fewer tokens idle)."""
        if lease.size and lease.spent >= lease.size:
            lease.block = min(lease.cap, lease.block * 2)
        else:
            lease.block = min(lease.cap, max(1, lease.spent))

    def _take_ahead(self, name: str, lease: _Lease) -> None:
        """Start taking the next block on the background thread (half the current is spent)."""
        lease.block = min(lease.cap, 2 * lease.size)
        give_back, lease.retired = lease.retired, None
        lease.ahead = self._ahead.submit(self._lease, name, lease.rates, lease.block, give_back)

    @staticmethod
    def _next_block(lease: _Lease) -> _Block | None:
        """Return the block taken ahead (waiting for it when still on its way), or None."""
        ahead, lease.ahead = lease.ahead, None
        if ahead is None:
            return None
        try:
            return ahead.result()
        except Exception:  # Redis failed on the background thread: the caller's call retries
            return None

    @staticmethod
    def _owed(lease: _Lease, unused: _Block | None) -> list[tuple[str, int, int]]:
        """Return the entries to give back before the next block is taken: those of a block
        taken ahead that ended unused, the current block's unspent ones, and an earlier
        block's that ended unspent (`retired`); all given back, so a refusal never comes
        while tokens of this process wait to be given back."""
        owed = []
        if unused is not None and unused.size:
            owed.append((unused.name, 1, unused.size))
        if lease.name and lease.spent < lease.size:
            owed.append((lease.name, lease.spent + 1, lease.size))
            lease.size = lease.spent  # given back now
        if lease.retired is not None:
            owed.append(lease.retired)
            lease.retired = None
        return owed

    def _install(self, lease: _Lease, block: _Block) -> None:
        if block.size and lease.name and lease.spent < lease.size:
            lease.retired = (lease.name, lease.spent + 1, lease.size)  # ended by time
        lease.name, lease.size, lease.spent = block.name, block.size, 0
        lease.ends, lease.seen, lease.at = block.ends, block.seen, block.at

    def _lease(self, name: str, rates: Sequence[Rate], wanted: int,
               give_back: tuple[str, int, int] | None) -> _Block:  # fmt: skip
        """Take a block of up to `wanted` tokens: one Lua call."""
        now = self.clock.now().timestamp()
        token = uuid.uuid4().hex
        taken, wait, seen = self.backend.lease(
            name, rates, now, wanted, token=token, ttl_s=self.ttl_s, give_back=give_back
        )
        return _Block(token, taken, wait, now + self.ttl_s, seen, now)

    def _usage(self, name: str, lease: _Lease, now: float) -> WindowUsage:
        unspent = lease.size - lease.spent
        tightest: WindowUsage | None = None
        for rate, (count, oldest) in zip(lease.rates, lease.seen, strict=True):
            used = max(count - unspent, 0)
            resets = max(oldest + rate.period_s - now, 0.0) if count else 0.0
            usage = WindowUsage(name, rate, used, max(rate.limit - used, 0), resets)
            if tightest is None or usage.left < tightest.left:
                tightest = usage
        assert tightest is not None
        return tightest

    def usage(self, provider: str) -> list[tuple[int, float]]:
        """Return the windows' (count, seconds to reset) as Redis holds them now."""
        lease = self._leases.get(provider.lower())
        rates: Sequence[Rate] = lease.rates if lease else ()
        return self.backend.usage(provider.lower(), rates, self.clock.now().timestamp())

    def close(self) -> None:
        """Give back every lease's unspent tokens, then release the connection pool."""
        self._ahead.shutdown(wait=True)
        for name, lease in self._leases.items():
            with lease.lock:
                if not lease.rates:
                    continue
                ahead = self._next_block(lease)
                owed = [lease.retired]
                if ahead is not None and ahead.size:
                    owed.append((ahead.name, 1, ahead.size))
                if lease.spent < lease.size:
                    owed.append((lease.name, lease.spent + 1, lease.size))
                    lease.size = lease.spent
                for token, first, last in filter(None, owed):
                    with contextlib.suppress(Exception):  # entries leave their windows anyway
                        self.backend.give_back(name, lease.rates, token, first, last)
        self.backend.close()
