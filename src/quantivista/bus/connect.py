"""Open a broker from its URL: `memory://` (embedded), `nats://host:port[?prefix=qv]`,
`kafka://host:port[,host:port][?prefix=qv]`."""

from __future__ import annotations

from urllib.parse import urlsplit

from quantivista.bus.base import Broker
from quantivista.errors import ConfigurationError

__all__ = ["open_broker"]


def open_broker(url: str | None) -> Broker:
    """Return the broker `url` names; None or `memory://` is the in-process one."""
    scheme = urlsplit(url).scheme if url else "memory"
    if scheme == "memory":
        from quantivista.bus.memory_broker import MemoryBroker

        return MemoryBroker(url or "memory://")
    if scheme == "nats":
        from quantivista.bus.nats import NatsBroker

        return NatsBroker(url or "")
    if scheme == "kafka":
        from quantivista.bus.kafka import KafkaBroker

        return KafkaBroker(url or "")
    raise ConfigurationError(
        "unknown bus URL scheme (memory://, nats://, kafka://)", url=url, scheme=scheme
    )
