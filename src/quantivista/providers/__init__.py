"""Data providers: the contract, the registry and the built-in sources."""

from quantivista.providers.base import (
    AdjustmentBasis,
    BarRequest,
    FetchResult,
    PriceBasis,
    Provider,
    ProviderCapabilities,
    RawPayload,
    request_range,
)
from quantivista.providers.registry import ProviderRegistry, default_registry, register

__all__ = [
    "AdjustmentBasis",
    "BarRequest",
    "FetchResult",
    "PriceBasis",
    "Provider",
    "ProviderCapabilities",
    "ProviderRegistry",
    "RawPayload",
    "default_registry",
    "register",
    "request_range",
]
