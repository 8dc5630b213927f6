"""Route a request to providers in order, failing over to the next when one errs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantivista.errors import NotFoundError, ProviderError
from quantivista.providers.base import BarRequest, FetchResult, Provider

__all__ = ["Attempt", "Router"]


@dataclass(slots=True)
class Attempt:
    """One provider call the router made for a request."""

    provider: str
    ok: bool
    error: str | None = None
    kind: str | None = None


@dataclass(slots=True)
class Router:
    """Try capable providers in the given order; return the first success.

    A provider that does not serve the requested timeframe is skipped; a `ProviderError`
    moves on to the next provider. When all fail the last error is raised with every
    attempt attached (`error.context["attempts"]`).
    """

    providers: Sequence[Provider]

    def candidates(self, request: BarRequest) -> list[Provider]:
        """Return the providers able to serve `request`, in preference order."""
        return [p for p in self.providers if p.capabilities.supports(request.timeframe)]

    def fetch(self, request: BarRequest) -> FetchResult:
        """Return the first successful answer to `request`."""
        candidates = self.candidates(request)
        if not candidates:
            raise NotFoundError(
                "no provider serves this timeframe",
                timeframe=str(request.timeframe),
                providers=[p.name for p in self.providers],
            )
        tried: list[Attempt] = []
        last: ProviderError | None = None
        for provider in candidates:
            try:
                result = provider.fetch_bars(request)
            except ProviderError as exc:
                last = exc
                tried.append(Attempt(provider.name, False, str(exc), type(exc).__name__))
                continue
            tried.append(Attempt(provider.name, True))
            result.provider = result.provider or provider.name
            result.metadata["attempts"] = tried
            return result
        assert last is not None
        last.context["attempts"] = [f"{a.provider}: {a.kind}" for a in tried]
        raise last
