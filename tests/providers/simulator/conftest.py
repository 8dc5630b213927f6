"""A small simulated market shared by the simulator tests (building one takes a moment)."""

from __future__ import annotations

import pytest

from quantivista.providers.simulator import SimulatedMarket

AS_OF = "2026-11-23"


@pytest.fixture(scope="session")
def market() -> SimulatedMarket:
    """Return a 12-instrument market that has closed through 2026-11-20."""
    return SimulatedMarket(seed=7, universe_size=12, as_of=AS_OF)
