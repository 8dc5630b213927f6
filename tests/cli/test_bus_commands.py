"""`qv replay` and `qv dlq list|show|replay` against a NATS broker (a prefix of the test's own)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from quantivista.bus.base import Message
from quantivista.bus.deadletters import send_to_dead_letters
from quantivista.bus.events import ActionsIngested
from quantivista.bus.nats import NatsBroker
from quantivista.cli import app
from quantivista.config import Settings
from quantivista.runtime import Runtime

pytestmark = pytest.mark.nats
runner = CliRunner()
AT = datetime(2026, 12, 1, tzinfo=UTC)


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_replay_ranges_and_dead_letters_round_trip(tmp_path: Path, nats_url: str) -> None:
    bus = f"{nats_url}?prefix=t{uuid4().hex[:10]}"
    data = tmp_path / "data"
    settings = Settings(data_dir=data, bus={"url": bus, "codec": "avro"})
    with Runtime.from_settings(settings, create=True) as runtime:
        broker = runtime.broker
        broker.create_topic("actions")
        for i in range(5):
            event = ActionsIngested(occurred_at=AT, source="lean", symbols=[f"S{i}"], rows=i)
            value, headers = runtime.codecs.encode(event, "avro", key=f"S{i}")
            broker.publish("actions", value, key=f"S{i}", headers=headers)
        poison = Message("actions", 5, b"\x07bad", "S9", {})
        send_to_dead_letters(broker, poison, "g", "BusError: unreadable")
    base = ["--data-dir", str(data)]
    try:
        shown = runner.invoke(app, [*base, "replay", "--topic", "actions", "--from-offset", "2",
                                    "--to-offset", "4", "--show", "--bus", bus])  # fmt: skip
        assert shown.exit_code == 0, shown.output
        rows = lines(shown.output)
        assert [(r["offset"], r["key"], r["type"]) for r in rows] == [
            (2, "S1", "ActionsIngested"), (3, "S2", "ActionsIngested"),
            (4, "S3", "ActionsIngested"),
        ]  # fmt: skip

        replayed = runner.invoke(app, [*base, "replay", "--topic", "actions", "--from-offset",
                                       "4", "--bus", bus])  # fmt: skip
        assert replayed.exit_code == 0, replayed.output
        assert lines(replayed.output)[0]["published"] == 2

        listed = runner.invoke(app, [*base, "dlq", "list", "--bus", bus])
        assert {"topic": "dlq.actions", "messages": 1} in lines(listed.output)
        letter = lines(runner.invoke(app, [*base, "dlq", "show", "actions", "--bus", bus]).output)
        assert letter[0]["headers"]["qv-dlq-error"] == "BusError: unreadable"  # type: ignore[index]
        assert letter[0]["decode_error"]
        back = runner.invoke(app, [*base, "dlq", "replay", "actions", "--bus", bus])
        assert lines(back.output)[0]["published"] == 1
        again = runner.invoke(app, [*base, "dlq", "replay", "actions", "--bus", bus])
        assert lines(again.output)[0]["published"] == 0  # each letter goes back once

        check = NatsBroker(bus)
        tail = list(check.read("actions"))
        check.close()
        assert [m.offset for m in tail] == list(range(1, 9))
        assert tail[5].headers["qv-replay-of"] == "actions:4"
        assert (tail[7].value, tail[7].key) == (b"\x07bad", "S9")
        assert "qv-dlq-error" not in tail[7].headers
        bad = runner.invoke(app, [*base, "replay", "--topic", "nosuch", "--bus", bus])
        assert bad.exit_code == 2 and "no such topic" in bad.output
    finally:
        cleanup = NatsBroker(bus)
        for topic in cleanup.topics():
            cleanup.delete_topic(topic)
        cleanup.close()
