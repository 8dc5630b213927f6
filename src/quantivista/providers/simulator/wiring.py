"""Point the real vendor clients at a running provider simulator.

The end-to-end path (benchmarks, tests, `qv demo --via-simulator`) runs the platform's real
HTTP clients, limiter, breakers and router against the simulator over local sockets. This
module builds the settings for that: every simulated vendor's `base_url` points at the
simulator, each gets a placeholder key, and our rate limiter enforces exactly the windows
the simulator counts violations against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import SecretStr

from quantivista.config import RateWindow, Settings
from quantivista.providers.simulator.server import PROVIDERS, SimulatorHandle

__all__ = ["SIMULATOR_API_KEY", "rate_strings", "settings_for_simulator"]

SIMULATOR_API_KEY = "simulator-key"  # the simulator checks that a key is present, not which


def rate_strings(windows: Iterable[RateWindow]) -> list[str]:
    """Turn simulator windows into the limiter's rate strings, e.g. 5 calls / 60 s -> "5/60s"."""
    return [f"{w.calls}/{w.seconds:g}s" for w in windows]


def settings_for_simulator(
    settings: Settings,
    sim: SimulatorHandle,
    providers: Sequence[str] = PROVIDERS,
    *,
    timeout_s: float | None = None,
) -> Settings:
    """Return `settings` with the named vendors' clients calling `sim`.

    Each vendor's rate limits in `settings.resilience.limits` are replaced by the windows the
    simulator enforces for it (none: unlimited), so a correct limiter commits no violation.
    `timeout_s` overrides the clients' per-request timeout.
    """
    endpoints: dict[str, object] = {}
    limits = dict(settings.resilience.limits)
    for name in providers:
        section = getattr(settings.providers, name).model_copy(
            update={"base_url": sim.base_url(name), "api_key": SecretStr(SIMULATOR_API_KEY)}
        )
        if timeout_s is not None:
            section = section.model_copy(update={"timeout_s": timeout_s})
        endpoints[name] = section
        limits[name] = rate_strings(sim.server.settings.faults_for(name).rate_limits)
    resilience = settings.resilience.model_copy(update={"limits": limits})
    return settings.model_copy(
        update={
            "providers": settings.providers.model_copy(update=endpoints),
            "resilience": resilience,
        }
    )
