"""A small simulated market and a running provider simulator shared by these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quantivista.config import ProviderFaultSettings
from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.server import PROVIDERS, SimulatorHandle, run_simulator

from .helpers import SETTINGS


@pytest.fixture(scope="session")
def market() -> SimulatedMarket:
    return SimulatedMarket(SETTINGS.seed, SETTINGS.universe_size, as_of=SETTINGS.as_of)


@pytest.fixture(scope="session")
def sim_session(market: SimulatedMarket) -> Iterator[SimulatorHandle]:
    with run_simulator(SETTINGS, market=market) as handle:
        yield handle


@pytest.fixture
def sim(sim_session: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """The shared simulator with clean counters and no faults (restored afterwards)."""
    for name in PROVIDERS:
        sim_session.configure(name, ProviderFaultSettings())
    sim_session.reset()
    yield sim_session
    for name in PROVIDERS:
        sim_session.configure(name, ProviderFaultSettings())
    sim_session.reset()
