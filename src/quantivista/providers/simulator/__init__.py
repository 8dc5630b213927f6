"""The simulated market and its fault injection.

A later part of this package serves the same market over HTTP and WebSocket in real
providers' wire formats; the offline `synthetic` provider reads it directly.
"""

from quantivista.providers.simulator.faults import FAULT_KINDS, inject_faults
from quantivista.providers.simulator.market import HISTORY_START, SimInstrument, SimulatedMarket

__all__ = ["FAULT_KINDS", "HISTORY_START", "SimInstrument", "SimulatedMarket", "inject_faults"]
