"""Broker TLS and auth from the `bus` settings: the Kafka mapping, and NATS over real TLS
(a nats-server of the test's own with a certificate the test makes). Kafka over TLS is not
tested: the Tansu build here refuses `--cert` with `--key`, and `--cert` alone serves plaintext."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from brokers import free_port, require_binary, wait_for_port
from quantivista.bus.connect import open_broker
from quantivista.bus.security import kafka_config, nats_options, tls_enabled
from quantivista.config import BusSettings
from quantivista.errors import BusError

NATS_SERVER = shutil.which("nats-server") or shutil.which(
    "nats-server", path="/usr/sbin:/usr/local/sbin"
)


def test_kafka_plaintext_without_settings() -> None:
    assert kafka_config(BusSettings()) == {}
    assert not tls_enabled(BusSettings())


def test_kafka_tls_and_sasl_map_to_librdkafka_properties(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    assert kafka_config(BusSettings(ca_file=ca)) == {
        "security.protocol": "SSL", "ssl.ca.location": str(ca),
    }  # fmt: skip
    both = kafka_config(
        BusSettings(ca_file=ca, cert_file=cert, key_file=key, username="u",
                    password=SecretStr("p"), sasl_mechanism="SCRAM-SHA-512")
    )  # fmt: skip
    assert both == {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    sasl_only = kafka_config(BusSettings(username="u", password=SecretStr("p")))
    assert sasl_only["security.protocol"] == "SASL_PLAINTEXT"
    assert sasl_only["sasl.mechanism"] == "PLAIN"
    assert kafka_config(BusSettings(tls=True))["security.protocol"] == "SSL"
    assert "security.protocol" not in kafka_config(BusSettings(ca_file=ca, tls=False))


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from quantivista.config import Settings

    ca, _, _ = make_certs(tmp_path)
    monkeypatch.setenv("QV_BUS__USERNAME", "svc")
    monkeypatch.setenv("QV_BUS__PASSWORD", "s3cret")
    monkeypatch.setenv("QV_BUS__CA_FILE", str(ca))
    bus = Settings().bus
    assert kafka_config(bus)["sasl.password"] == "s3cret"
    assert kafka_config(bus)["security.protocol"] == "SASL_SSL"
    assert "s3cret" not in repr(bus)
    assert nats_options(bus)["user"] == "svc"


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_certs(where: Path) -> tuple[Path, Path, Path]:
    """Return (ca.pem, server.pem, server-key.pem): a CA and a server cert for 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qv test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    return (
        _pem(where / "ca.pem", ca.public_bytes(pem)),
        _pem(where / "server.pem", cert.public_bytes(pem)),
        _pem(where / "server-key.pem", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    )  # fmt: skip


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A JetStream nats-server that speaks only TLS, with user and password."""
    binary = require_binary("nats-server", Path(NATS_SERVER) if NATS_SERVER else None)
    ca, cert, key = make_certs(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js"),
         "--tls", "--tlscert", str(cert), "--tlskey", str(key),
         "--user", "qv", "--pass", "pw"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc, "nats-server")
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.nats
def test_nats_over_tls_with_a_password_from_the_settings(tls_nats: tuple[int, Path]) -> None:
    port, ca = tls_nats
    url = f"nats://127.0.0.1:{port}?prefix=tls"
    bus = BusSettings(url=url, ca_file=ca, username="qv", password=SecretStr("pw"))
    broker = open_broker(url, bus)
    try:
        broker.create_topic("t")
        assert broker.publish("t", b"secret bar", key="AAPL") == 1
        assert [m.value for m in broker.read("t")] == [b"secret bar"]
    finally:
        broker.close()
    # the same server refuses a client that does not trust its CA or has no password
    from quantivista.bus.nats import NatsBroker

    untrusted = BusSettings(url=url, tls=True, username="qv", password=SecretStr("pw"))
    for refused in (untrusted, BusSettings(url=url, ca_file=ca)):
        with pytest.raises(BusError, match="cannot connect to NATS"):
            NatsBroker(url, timeout_s=2.0, options=nats_options(refused))
