"""Shared fixtures: temporary lakes, canonical bar frames and access to the real servers.

Servers (PostgreSQL, Redis, NATS) are reached at the addresses in `Settings().services`
(override with `QV_SERVICES__POSTGRES_DSN`, `QV_SERVICES__REDIS_URL`, ...). A test that needs
an unreachable server is skipped, or fails when `QV_REQUIRE_SERVICES=1` (CI).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import polars as pl
import pytest
from hypothesis import settings as hypothesis_settings

from quantivista.config import Settings, StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.storage.lake.bars import ParquetLake

INGESTED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

# the test machine is shared: a per-example deadline would fail on load, not on bugs
hypothesis_settings.register_profile("qv", deadline=None)
hypothesis_settings.load_profile("qv")

MakeBars = Callable[..., pl.DataFrame]


# -- servers ---------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _settings() -> Settings:
    # the one place tests look at the environment: through Settings, like the platform does
    return Settings()


def services_required() -> bool:
    """Say whether an unreachable server fails the test instead of skipping it."""
    return _settings().require_services


def require_service(
    name: str, host: str, port: int, *, timeout_s: float = 1.0, required: bool | None = None
) -> None:
    """Skip (or fail, when services are required) unless `host:port` accepts TCP connections."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
    must = services_required() if required is None else required
    if must:
        pytest.fail(f"{reason}; QV_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{reason}; start it or set QV_REQUIRE_SERVICES=1 to fail instead")


@pytest.fixture(scope="session")
def services() -> Callable[..., None]:
    """Return `require_service` for tests below the rootdir (they cannot import conftest)."""
    return require_service


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """Return the DSN of the test PostgreSQL database (trust auth on 127.0.0.1:5432/test)."""
    dsn = _settings().services.postgres_dsn.get_secret_value()
    require_service("PostgreSQL", *_host_port(dsn, 5432))
    return dsn


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the URL of the test Redis server."""
    url = _settings().services.redis_url
    require_service("Redis", *_host_port(url, 6379))
    return url


@pytest.fixture(scope="session")
def nats_url() -> str:
    """Return the URL of the test NATS (JetStream) server."""
    url = _settings().services.nats_url
    require_service("NATS", *_host_port(url, 4222))
    return url


# -- storage ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3 (moto's server) on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_bucket(endpoint: str) -> str:
    """Create a fresh bucket on the local S3 and return its name."""
    from uuid import uuid4

    import boto3

    bucket = f"qv-{uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)  # fmt: skip
    return bucket


@pytest.fixture
def tmp_lake(tmp_path: Path) -> ParquetLake:
    """Return an empty lake in a temporary directory (single writer thread, no fsync)."""
    return ParquetLake(tmp_path / "lake", StorageSettings(write_threads=1))


# -- calendars and bars ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def xnys() -> TradingCalendar:
    """Return the NYSE calendar (cached; loading it takes about a second)."""
    return get_calendar("XNYS")


def _first_sessions(cal: TradingCalendar, start: date, count: int) -> list[date]:
    # about 252 sessions in 365 days: ask for twice the span and cut
    end = min(start + timedelta(days=2 * count + 10), cal.last_session)
    sessions = cal.sessions(start, end).head(count).to_list()
    if len(sessions) < count:
        raise ValueError(f"the calendar has only {len(sessions)} sessions from {start}")
    return sessions


def build_bars(
    cal: TradingCalendar,
    symbols: int | Sequence[str] = 2,
    sessions: int = 5,
    *,
    start: str | date = "2024-01-02",
    provider: str | None = "test",
    job_id: str | None = "job-test",
    ingested_at: datetime | None = INGESTED_AT,
    seed: int = 7,
) -> pl.DataFrame:
    """Return canonical daily bars of `symbols` over `sessions` consecutive sessions of `cal`."""
    names = [f"SYM{i}" for i in range(symbols)] if isinstance(symbols, int) else list(symbols)
    first = date.fromisoformat(start) if isinstance(start, str) else start
    days = _first_sessions(cal, first, sessions)
    rng = np.random.default_rng(seed)
    n = len(names) * len(days)
    base = np.repeat(rng.uniform(20.0, 500.0, len(names)), len(days))
    open_ = base * rng.uniform(0.97, 1.03, n)
    close = base * rng.uniform(0.97, 1.03, n)
    high = np.maximum(open_, close) * rng.uniform(1.0, 1.02, n)
    low = np.minimum(open_, close) * rng.uniform(0.98, 1.0, n)
    frame = pl.DataFrame(
        {
            "symbol": np.repeat(names, len(days)).tolist(),
            "ts": [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days] * len(names),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(1_000, 1_000_000, n).astype(np.float64),
            "vwap": (low + high) / 2,
            "trades": rng.integers(1, 10_000, n),
        }
    )
    return coerce_bars(
        frame, timeframe="1d", provider=provider, job_id=job_id, ingested_at=ingested_at
    )


@pytest.fixture
def make_bars(xnys: TradingCalendar) -> MakeBars:
    """Return a builder of canonical daily bars: n symbols x m consecutive XNYS sessions.

    `make_bars(2, 5)` gives symbols SYM0, SYM1 over the first five sessions from 2024-01-02,
    ordered by symbol then ts, with `low <= min(open, close) <= max(open, close) <= high`,
    positive prices and volumes, vwap inside the range and integer trade counts. Keywords:
    `start`, `provider`, `job_id`, `ingested_at`, `seed` (see `build_bars`).
    """

    def build(symbols: int | Sequence[str] = 2, sessions: int = 5, **kw: Any) -> pl.DataFrame:
        return build_bars(xnys, symbols, sessions, **kw)

    return build
