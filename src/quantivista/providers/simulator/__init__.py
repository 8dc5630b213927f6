"""The simulated market, its fault injection, and the server that speaks vendors' formats.

`run_simulator` (from `.server`) serves the market over HTTP and WebSocket in the wire
formats of Alpha Vantage, Yahoo, Finnhub, IEX Cloud and Polygon; it is imported lazily so
that `import quantivista` does not load the web stack.
"""

from typing import Any

from quantivista.providers.simulator.faults import FAULT_KINDS, inject_faults
from quantivista.providers.simulator.market import HISTORY_START, SimInstrument, SimulatedMarket

__all__ = [
    "FAULT_KINDS",
    "HISTORY_START",
    "SimInstrument",
    "SimulatedMarket",
    "SimulatorHandle",
    "inject_faults",
    "run_simulator",
]


def __getattr__(name: str) -> Any:
    if name in ("run_simulator", "SimulatorHandle"):
        from quantivista.providers.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
