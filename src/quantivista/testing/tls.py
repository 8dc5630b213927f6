"""A self-signed certificate for 127.0.0.1, for tests and local TLS set-ups (needs `openssl`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["self_signed_certificate"]


def self_signed_certificate(directory: Path, name: str = "qv") -> tuple[Path, Path]:
    """Write `<name>.crt` and `<name>.key` (valid one day for 127.0.0.1) and return their paths."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
