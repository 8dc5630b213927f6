"""`qv integrate` survives an exception that is no platform error (a bug): it is logged and
counted in /metrics, the message that raises is redelivered alone and dead-lettered after
`max_deliver` attempts, the others are applied once, `/readyz` fails while the last batch
failed, and the serve loop goes on (real NATS, a stream prefix naming this helper)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import polars as pl
import pytest
from tests.services.test_integration_dlq import (
    TOPIC,
    drain,
    enriched,
    letters,
    minute_bars,
    publish,
    stored,
)

from quantivista.bus.topics import ENRICHED_BARS
from quantivista.clock import TestClock
from quantivista.config import ProbeSettings, Settings, StorageSettings
from quantivista.reference.instruments import InstrumentMaster
from quantivista.runtime import Runtime
from quantivista.services.integration import IntegrationService

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
pytestmark = pytest.mark.nats


@pytest.fixture
def runtime(nats_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(write_threads=1),
        bus={"url": f"{nats_url}?prefix=review{uuid4().hex[:8]}", "codec": "avro"},
        integrate={"batch": 3, "reporting_currency": "USD", "max_deliver": 3},
    )
    with Runtime.from_settings(settings, clock=TestClock(T0)) as rt:
        InstrumentMaster(rt.backend.instruments).upsert(
            pl.DataFrame({"instrument_id": ["I1", "I2", "I3"], "name": ["A", "B", "E"],
                          "asset_class": "equity", "currency": "USD", "exchange": "XNYS",
                          "sector": "Tech", "industry": "Software"}),
            pl.DataFrame({"instrument_id": ["I1", "I2", "I3"], "symbol": ["AAA", "BUG", "EEE"],
                          "valid_from": [date(2000, 1, 1)] * 3, "valid_to": [None] * 3}),
        )  # fmt: skip
        yield rt
        for topic in rt.broker.topics():
            rt.broker.delete_topic(topic)


def _metric(service: IntegrationService, error: str) -> float:
    value = service.registry.get_sample_value(
        "qv_integrate_unexpected_errors_total", {"error": error}
    )
    return value or 0.0


def test_a_message_raising_a_bug_is_redelivered_alone_then_dead_lettered(
    runtime: Runtime,
) -> None:
    for symbol in ("AAA", "BUG", "EEE"):
        publish(runtime, minute_bars(symbol))
    upsert = runtime.backend.bars.upsert

    def buggy(frame: pl.DataFrame) -> object:
        if "BUG" in frame["symbol"].to_list():
            raise ZeroDivisionError("a bug in the store path")
        return upsert(frame)

    runtime.backend.bars.upsert = buggy  # type: ignore[method-assign]
    try:
        service = runtime.integration_service()
        assert drain(service) == 3 + 1 + 1  # the batch, then BUG alone twice more
    finally:
        runtime.backend.bars.upsert = upsert  # type: ignore[method-assign]
    assert stored(runtime, "AAA", "BUG", "EEE")["symbol"].to_list() == ["AAA", "AAA", "EEE", "EEE"]
    # once each (a CI run once saw EEE twice: say which batches published what, if again)
    sent = [(m.offset, m.key, runtime.codecs.decode(m.value).offsets)  # type: ignore[attr-defined]
            for m in runtime.broker.read(ENRICHED_BARS)]  # fmt: skip
    assert enriched(runtime)["symbol"].to_list() == ["AAA", "AAA", "EEE", "EEE"], sent
    (letter,) = letters(runtime)
    assert letter.headers["qv-dlq-offset"] == "2" and letter.headers["qv-dlq-deliveries"] == "3"
    assert letter.headers["qv-dlq-error"] == "ZeroDivisionError: a bug in the store path"
    assert service.stats.unexpected == 3 and service.stats.retried == 3
    assert _metric(service, "ZeroDivisionError") == 3
    assert service.ready() is True  # the last batch went through (BUG set aside)


def test_a_batch_failing_unexpectedly_fails_readyz_until_its_redelivery_succeeds(
    runtime: Runtime,
) -> None:
    publish(runtime, minute_bars("AAA"))
    service = runtime.integration_service()
    items = service.publisher.items
    calls: list[int] = []

    def fails_once(topic: str, batch: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug in the publish path")
        return items(topic, batch)

    service.publisher.items = fails_once  # type: ignore[method-assign]
    sub = service.subscribe(TOPIC, "g")
    assert service.step(sub, timeout_s=2.0) == 1
    assert service.ready() == "the last batch failed: KeyError: 'a bug in the publish path'"
    assert _metric(service, "KeyError") == 1
    got = 0
    for _ in range(10):  # redelivered after a second
        got = service.step(sub, timeout_s=1.0)
        if got:
            break
    sub.close()
    assert got == 1 and service.ready() is True
    assert enriched(runtime)["symbol"].to_list() == ["AAA", "AAA"]
    assert letters(runtime) == []


def test_serve_survives_an_unexpected_error_and_shows_it_in_metrics(runtime: Runtime) -> None:
    publish(runtime, minute_bars("AAA"))
    service = runtime.integration_service()
    step = service.step
    calls: list[int] = []

    def flaky(sub: Any, timeout_s: float = 1.0) -> int:
        calls.append(1)
        if len(calls) <= 2:  # twice: readyz is read while the second has not passed
            raise RuntimeError("a bug outside any batch")
        return step(sub, timeout_s)

    service.step = flaky  # type: ignore[method-assign]
    seen: dict[str, Any] = {}

    def watch(url: str) -> None:
        def poll() -> None:
            for _ in range(100):
                metrics = httpx.get(f"{url}/metrics", timeout=2).text
                if 'qv_integrate_unexpected_errors_total{error="RuntimeError"}' in metrics:
                    seen["metrics"] = True
                    seen["readyz"] = httpx.get(f"{url}/readyz", timeout=2).json()
                    return
                threading.Event().wait(0.05)

        threading.Thread(target=poll, daemon=True).start()

    stats = service.serve(TOPIC, ProbeSettings(ports={"integrate": 0}), idle_exit_s=3.0,
                          on_ready=watch)  # fmt: skip
    assert stats.unexpected == 2 and stats.messages == 1  # the loop went on after the bug
    assert stored(runtime, "AAA").height == 2
    assert seen.get("metrics") is True
    assert "RuntimeError" in seen["readyz"]["checks"]["batches"]
