"""Benchmarks: index instruments, custom benchmarks and benchmark analytics."""

from quantivista.benchmarks.analytics import (
    compare,
    period_returns,
    portfolio_levels,
    returns_from_levels,
)
from quantivista.benchmarks.custom import custom_benchmark
from quantivista.benchmarks.indices import INDICES, register_indices

__all__ = [
    "INDICES",
    "compare",
    "custom_benchmark",
    "period_returns",
    "portfolio_levels",
    "register_indices",
    "returns_from_levels",
]
