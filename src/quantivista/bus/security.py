"""Broker TLS and authentication from `bus` settings, in each client library's own terms.

`connect.open_broker` passes them to every backend: Kafka gets librdkafka properties
(`security.protocol`, `ssl.*`, `sasl.*`), NATS an `ssl.SSLContext` plus user or creds
options, Pulsar its TLS and basic-auth options.
"""

from __future__ import annotations

import ssl
from typing import Any

from quantivista.config import BusSettings

__all__ = ["kafka_config", "nats_options", "pulsar_options", "ssl_context", "tls_enabled"]


def tls_enabled(bus: BusSettings) -> bool:
    """Say whether the connection is TLS: as set, or when a CA or client cert is given."""
    if bus.tls is not None:
        return bus.tls
    return bus.ca_file is not None or bus.cert_file is not None


def _password(bus: BusSettings) -> str | None:
    return bus.password.get_secret_value() if bus.password is not None else None


def kafka_config(bus: BusSettings) -> dict[str, Any]:
    """Return the librdkafka properties of the settings (empty: plaintext, no auth)."""
    tls, sasl = tls_enabled(bus), bus.username is not None
    config: dict[str, Any] = {}
    if tls or sasl:
        config["security.protocol"] = {
            (True, True): "SASL_SSL",
            (True, False): "SSL",
            (False, True): "SASL_PLAINTEXT",
        }[(tls, sasl)]
    if bus.ca_file is not None:
        config["ssl.ca.location"] = str(bus.ca_file)
    if bus.cert_file is not None:
        config["ssl.certificate.location"] = str(bus.cert_file)
    if bus.key_file is not None:
        config["ssl.key.location"] = str(bus.key_file)
    if sasl:
        config["sasl.mechanism"] = bus.sasl_mechanism
        config["sasl.username"] = bus.username
        config["sasl.password"] = _password(bus) or ""
    return config


def ssl_context(bus: BusSettings) -> ssl.SSLContext | None:
    """Return a client TLS context that trusts `ca_file` (or the system) and presents the
    client certificate when one is set; None without TLS."""
    if not tls_enabled(bus):
        return None
    context = ssl.create_default_context(
        cafile=str(bus.ca_file) if bus.ca_file is not None else None
    )
    if bus.cert_file is not None:
        context.load_cert_chain(
            str(bus.cert_file), str(bus.key_file) if bus.key_file is not None else None
        )
    return context


def nats_options(bus: BusSettings) -> dict[str, Any]:
    """Return the `nats.connect` keyword arguments of the settings."""
    options: dict[str, Any] = {}
    context = ssl_context(bus)
    if context is not None:
        options["tls"] = context
    if bus.nats_creds is not None:
        options["user_credentials"] = str(bus.nats_creds)
    elif bus.username is not None:
        options["user"] = bus.username
        options["password"] = _password(bus) or ""
    return options


def pulsar_options(bus: BusSettings) -> dict[str, Any]:
    """Return the `pulsar.Client` keyword arguments of the settings (`basic_auth` is a
    (user, password) pair the backend turns into pulsar's AuthenticationBasic)."""
    options: dict[str, Any] = {}
    if bus.ca_file is not None:
        options["tls_trust_certs_file_path"] = str(bus.ca_file)
    if bus.cert_file is not None and bus.key_file is not None:
        options["tls_certificate_file_path"] = str(bus.cert_file)
        options["tls_private_key_file_path"] = str(bus.key_file)
    if bus.username is not None:
        options["basic_auth"] = (bus.username, _password(bus) or "")
    return options
