"""Open a broker from its URL: `memory://` (embedded), `nats://host:port[?prefix=qv]`,
`kafka://host:port[,host:port][?prefix=qv]`, `pulsar://host:port[?prefix=qv]` (or pulsar+ssl)."""

from __future__ import annotations

from urllib.parse import urlsplit

from quantivista.bus.base import Broker
from quantivista.config import BusSettings
from quantivista.errors import ConfigurationError

__all__ = ["open_broker"]


def open_broker(url: str | None, bus: BusSettings | None = None) -> Broker:
    """Return the broker `url` names; None or `memory://` is the in-process one. `bus` gives
    the TLS and auth settings (bus/security.py)."""
    scheme = urlsplit(url).scheme if url else "memory"
    if scheme == "memory":
        from quantivista.bus.memory_broker import MemoryBroker

        return MemoryBroker(url or "memory://")
    if scheme == "nats":
        from quantivista.bus.nats import NatsBroker
        from quantivista.bus.security import nats_options

        return NatsBroker(url or "", options=nats_options(bus) if bus else None)
    if scheme == "kafka":
        from quantivista.bus.kafka import KafkaBroker
        from quantivista.bus.security import kafka_config

        return KafkaBroker(url or "", config=kafka_config(bus) if bus else None)
    if scheme in ("pulsar", "pulsar+ssl"):
        from quantivista.bus.pulsar import PulsarBroker
        from quantivista.bus.security import pulsar_options

        return PulsarBroker(url or "", options=pulsar_options(bus) if bus else None)
    raise ConfigurationError(
        "unknown bus URL scheme (memory://, nats://, kafka://, pulsar://)", url=url, scheme=scheme
    )
