"""Circuit breakers: stop calling a provider that keeps failing, probe it again later.

    CLOSED --N consecutive failures--> OPEN --cool-down--> HALF_OPEN --probe ok--> CLOSED
                                        ^                      |
                                        +----probe fails-------+

Only failures that say something about the provider's health count: transient errors,
throttling, malformed bodies, timeouts and unexpected exceptions. Permanent answers
(unknown symbol, plan does not cover it) mean the provider is up; they count as success.
A quota spent on our side (`QuotaExhaustedError`) leaves the breaker as it is.

With a `shared` state (Redis), every process sees a breaker that any of them opened, and
only one process at a time sends the half-open probe (see `acquisition.shared`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from quantivista.acquisition.shared import BreakerRecord
from quantivista.errors import (
    CircuitOpenError,
    MalformedResponseError,
    QuantiVistaError,
    QuotaExhaustedError,
    RateLimitedError,
    TransientProviderError,
)

if TYPE_CHECKING:
    from quantivista.acquisition.shared import RedisBreakerState
    from quantivista.clock import Clock
    from quantivista.config import BreakerSettings

__all__ = [
    "BreakerState",
    "Breakers",
    "CircuitBreaker",
    "Transition",
    "TransitionListener",
    "counts_as_failure",
]

T = TypeVar("T")
_log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a breaker's state."""

    provider: str
    from_state: BreakerState
    to_state: BreakerState
    at: datetime
    reason: str


TransitionListener = Callable[[Transition], None]


def counts_as_failure(error: BaseException) -> bool:
    """Say whether `error` is evidence that the provider is unhealthy."""
    if isinstance(error, TransientProviderError | RateLimitedError | MalformedResponseError):
        return True
    if isinstance(error, QuantiVistaError):
        return False  # permanent answers, our own quota, bad input: the provider is fine
    return isinstance(error, Exception)  # a bug or a leaked transport error


@dataclass(slots=True)
class _Counters:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    rejected: int = 0
    consecutive_failures: int = 0


def _run_with_timeout(fn: Callable[[], T], timeout_s: float, provider: str) -> T:
    """Run `fn` in a helper thread; give up waiting after `timeout_s` (real time).

    The thread cannot be killed: a call that hangs finishes (or not) in the background
    while the caller moves on; clients should also set their own I/O timeouts.
    """
    box: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"qv-call-{provider}", daemon=True).start()
    if not done.wait(timeout_s):
        raise TransientProviderError(
            f"{provider} did not answer within {timeout_s:g} s", provider=provider, kind="timeout"
        )
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class CircuitBreaker:
    """The breaker of one provider; thread-safe; time comes from the injected clock."""

    def __init__(
        self,
        provider: str,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        call_timeout_s: float | None = 10.0,
        reset_timeout_s: float = 30.0,
        listener: TransitionListener | None = None,
        shared: RedisBreakerState | None = None,
    ) -> None:
        self.provider = provider
        self.shared = shared
        self._seen_at = 0.0  # wall time of the last shared change adopted or published
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.call_timeout_s = call_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.listeners: list[TransitionListener] = [listener] if listener else []
        self.transitions: list[Transition] = []
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._counters = _Counters()
        self._lock = threading.Lock()

    # -- observation -----------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """Return the current state (an open breaker past its cool-down reads half-open)."""
        with self._lock:
            self._sync()
            self._maybe_half_open()
            return self._state

    def retry_in_s(self) -> float:
        """Return seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            self._sync()
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(self._opened_at + self.reset_timeout_s - self.clock.monotonic(), 0.0)

    def counters(self) -> dict[str, int]:
        """Return calls, successes, failures, rejected and consecutive_failures."""
        with self._lock:
            c = self._counters
            return {
                "calls": c.calls,
                "successes": c.successes,
                "failures": c.failures,
                "rejected": c.rejected,
                "consecutive_failures": c.consecutive_failures,
            }

    # -- the protocol ----------------------------------------------------------------------
    def before_call(self) -> bool:
        """Admit a call or raise `CircuitOpenError`; half-open admits one probe at a time.

        Returns True when the call is the half-open probe (pass it on to `record_*`).
        """
        with self._lock:
            self._sync()
            self._maybe_half_open()
            if self._state is BreakerState.CLOSED:
                self._counters.calls += 1
                return False
            if (
                self._state is BreakerState.HALF_OPEN
                and not self._probe_in_flight
                and self._claim_probe()
            ):
                self._probe_in_flight = True
                self._counters.calls += 1
                return True
            self._counters.rejected += 1
            wait = max(self._opened_at + self.reset_timeout_s - self.clock.monotonic(), 0.0)
        raise CircuitOpenError(
            "circuit breaker is open", provider=self.provider, retry_in_s=round(wait, 3)
        )

    def record_success(self, *, probe: bool | None = None) -> None:
        """Count a call that succeeded (or got a permanent answer).

        `probe` says whether the call was the half-open probe (`before_call`'s answer). A call
        admitted while closed that ends after the breaker opened (`probe=False`) does not
        close it: only the probe, after the cool-down, decides. None: any success closes it.
        """
        with self._lock:
            self._counters.successes += 1
            self._counters.consecutive_failures = 0
            if probe is False and self._state is not BreakerState.CLOSED:
                return  # a straggler: leave the state (and the probe slot) alone
            self._end_probe()
            if self._state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED, "probe succeeded")

    def record_failure(self, error: BaseException | str, *, probe: bool | None = None) -> None:
        """Count a failed call; open the breaker at the threshold or on a failed probe.

        `probe` as in `record_success`: a straggler's failure does not reopen a half-open
        breaker nor free its probe slot.
        """
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            self._counters.failures += 1
            self._counters.consecutive_failures += 1
            if probe is False and self._state is not BreakerState.CLOSED:
                return
            was_probe = self._probe_in_flight
            self._end_probe()
            if self._state is BreakerState.HALF_OPEN or was_probe:
                self._open(f"probe failed: {reason}")
            elif (
                self._state is BreakerState.CLOSED
                and self._counters.consecutive_failures >= self.failure_threshold
            ):
                self._open(f"{self._counters.consecutive_failures} consecutive failures: {reason}")

    def release(self, *, probe: bool | None = None) -> None:
        """End a call that said nothing about health (e.g. our own quota was spent)."""
        with self._lock:
            if probe is not False:
                self._end_probe()

    def call(self, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """Run `fn` through the breaker; `timeout_s` (if given) bounds it in real time."""
        probe = self.before_call()
        try:
            result = _run_with_timeout(fn, timeout_s, self.provider) if timeout_s else fn()
        except BaseException as exc:
            if counts_as_failure(exc):
                self.record_failure(exc, probe=probe)
            elif isinstance(exc, QuotaExhaustedError) or not isinstance(exc, QuantiVistaError):
                self.release(probe=probe)
            else:
                self.record_success(probe=probe)
            raise
        self.record_success(probe=probe)
        return result

    def reset(self) -> None:
        """Close the breaker by hand (operator action)."""
        with self._lock:
            self._counters.consecutive_failures = 0
            self._end_probe()
            if self._state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED, "reset by hand")

    # -- internals (lock held) -------------------------------------------------------------
    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self.clock.monotonic() - self._opened_at >= self.reset_timeout_s
        ):
            self._move(BreakerState.HALF_OPEN, f"cool-down of {self.reset_timeout_s:g} s over")

    def _open(self, reason: str) -> None:
        self._opened_at = self.clock.monotonic()
        self._move(BreakerState.OPEN, reason)

    def _move(self, to: BreakerState, reason: str, *, publish: bool = True) -> None:
        transition = Transition(self.provider, self._state, to, self.clock.now(), reason)
        self._state = to
        self.transitions.append(transition)
        if publish and to is not BreakerState.HALF_OPEN:  # half-open follows from the time
            self._publish(to.value, transition.at.timestamp(), reason)
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception:  # an observer must not break the breaker; say so in the log
                _log.warning("breaker listener %r failed", listener, exc_info=True)

    # -- shared state (lock held; a Redis outage leaves the local breaker working) --------
    def _sync(self) -> None:
        """Adopt a change another process published since the last one seen here."""
        if self.shared is None:
            return
        try:
            record = self.shared.read(self.provider)
        except Exception as exc:
            _log.warning("shared breaker state unreadable: %s", exc)
            return
        if record is None or record.at <= self._seen_at:
            return
        self._adopt(record)

    def _adopt(self, record: BreakerRecord) -> None:
        self._seen_at = record.at
        if record.state == BreakerState.OPEN.value:
            # its age on the wall clock, carried over to this process's monotonic clock
            age = max(self.clock.now().timestamp() - record.at, 0.0)
            self._opened_at = self.clock.monotonic() - age
            if self._state is BreakerState.CLOSED:
                self._move(BreakerState.OPEN, f"opened elsewhere: {record.reason}", publish=False)
            elif self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._state = BreakerState.OPEN  # back to the cool-down of the newer opening
        elif self._state is not BreakerState.CLOSED:
            self._counters.consecutive_failures = 0
            self._move(BreakerState.CLOSED, f"closed elsewhere: {record.reason}", publish=False)

    def _publish(self, state: str, at: float, reason: str) -> None:
        if self.shared is None:
            return
        self._seen_at = max(self._seen_at, at)
        try:
            self.shared.publish(self.provider, BreakerRecord(state, at, reason))
        except Exception as exc:
            _log.warning("shared breaker state not published: %s", exc)

    def _claim_probe(self) -> bool:
        if self.shared is None:
            return True
        ttl = self.call_timeout_s or self.reset_timeout_s or 10.0
        try:
            return self.shared.claim_probe(self.provider, ttl)
        except Exception as exc:
            _log.warning("shared probe slot unreachable, probing from here: %s", exc)
            return True

    def _end_probe(self) -> None:
        if self._probe_in_flight and self.shared is not None:
            try:
                self.shared.release_probe(self.provider)
            except Exception as exc:  # the slot expires by itself
                _log.warning("shared probe slot not released: %s", exc)
        self._probe_in_flight = False

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.provider!r} {self._state.value}>"


@dataclass(slots=True)
class Breakers:
    """One breaker per provider, made on first use with shared settings and listeners."""

    clock: Clock
    failure_threshold: int = 5
    call_timeout_s: float | None = 10.0
    reset_timeout_s: float = 30.0
    listeners: list[TransitionListener] = field(default_factory=list)
    shared: RedisBreakerState | None = None
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(
        cls, settings: BreakerSettings, clock: Clock, shared: RedisBreakerState | None = None
    ) -> Breakers:
        """Build the set from `settings.resilience.breaker` (shared: state in Redis)."""
        return cls(
            clock,
            failure_threshold=settings.failure_threshold,
            call_timeout_s=settings.call_timeout_s,
            reset_timeout_s=settings.reset_timeout_s,
            shared=shared,
        )

    def get(self, provider: str) -> CircuitBreaker:
        """Return the breaker of `provider`, making it on first use."""
        key = provider.lower()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(
                    key,
                    clock=self.clock,
                    failure_threshold=self.failure_threshold,
                    call_timeout_s=self.call_timeout_s,
                    reset_timeout_s=self.reset_timeout_s,
                    listener=self._notify,
                    shared=self.shared,
                )
                self._breakers[key] = breaker
            return breaker

    def _notify(self, transition: Transition) -> None:
        for listener in list(self.listeners):
            listener(transition)

    def add_listener(self, listener: TransitionListener) -> None:
        """Report every transition of every breaker to `listener`."""
        self.listeners.append(listener)

    def all(self) -> dict[str, CircuitBreaker]:
        """Return the breakers made so far, by provider."""
        with self._lock:
            return dict(self._breakers)

    def transitions(self) -> list[Transition]:
        """Return every transition of every breaker, oldest first."""
        items = [t for b in self.all().values() for t in b.transitions]
        return sorted(items, key=lambda t: t.at)
