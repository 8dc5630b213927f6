"""The in-memory bus: NATS-style topic matching, ordered delivery, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from quantivista.bus.base import topic_matches
from quantivista.bus.envelope import Envelope
from quantivista.bus.events import ActionsIngested, BarsIngested, BarsQuarantined, Event
from quantivista.bus.memory import InMemoryBus

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def ingested(job_id: str = "job-1") -> BarsIngested:
    return BarsIngested(
        occurred_at=AT,
        job_id=job_id,
        source="synthetic",
        timeframe="1d",
        symbols=["AAA"],
        rows_written=3,
        rows_unchanged=0,
    )


def quarantined() -> BarsQuarantined:
    return BarsQuarantined(
        occurred_at=AT, job_id="job-1", source="s", rows=2, rules={"negative_volume": 2}
    )


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("bars.ingested", "bars.ingested", True),
        ("bars.ingested", "bars.quarantined", False),
        ("bars.ingested", "bars.ingested.extra", False),
        ("bars.ingested.extra", "bars.ingested", False),
        ("bars.*", "bars.ingested", True),
        ("bars.*", "bars", False),
        ("bars.*", "bars.ingested.daily", False),
        ("*.ingested", "actions.ingested", True),
        ("*.ingested", "bars.quarantined", False),
        ("*", "bars", True),
        ("*", "bars.ingested", False),
        ("*.*", "bars.ingested", True),
        ("bars.*.daily", "bars.ingested.daily", True),
        ("bars.*.daily", "bars.ingested.hourly", False),
        ("bars.>", "bars.ingested", True),
        ("bars.>", "bars.ingested.daily.aaa", True),
        ("bars.>", "bars", False),
        ("bars.>", "actions.ingested", False),
        (">", "bars", True),
        (">", "bars.ingested.daily", True),
        ("*.>", "bars.ingested", True),
        ("*.>", "bars", False),
        ("bars", "bars", True),
        ("bars", "barsx", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


def test_event_topics() -> None:
    assert BarsIngested.topic == "bars.ingested"
    assert BarsQuarantined.topic == "bars.quarantined"
    assert ActionsIngested.topic == "actions.ingested"
    assert ingested().event_id != ingested().event_id


def test_subscribers_get_matching_events_in_publish_order() -> None:
    bus = InMemoryBus()
    got: dict[str, list[str]] = {"exact": [], "star": [], "all": [], "actions": []}
    bus.subscribe("bars.ingested", lambda e: got["exact"].append(e.topic))
    bus.subscribe("bars.*", lambda e: got["star"].append(e.topic))
    bus.subscribe(">", lambda e: got["all"].append(e.topic))
    bus.subscribe("actions.>", lambda e: got["actions"].append(e.topic))
    bus.publish(ingested())
    bus.publish(quarantined())
    bus.publish(ingested("job-2"))
    assert got["exact"] == ["bars.ingested", "bars.ingested"]
    assert got["star"] == ["bars.ingested", "bars.quarantined", "bars.ingested"]
    assert got["all"] == got["star"]
    assert got["actions"] == []
    assert bus.published == 3
    assert bus.failed == 0


def test_handlers_receive_the_event_object_itself() -> None:
    bus = InMemoryBus()
    received: list[Event] = []
    bus.subscribe("bars.ingested", received.append)
    event = ingested()
    bus.publish(event)
    assert received == [event]
    assert received[0] is event


def test_unsubscribe_stops_delivery() -> None:
    bus = InMemoryBus()
    got: list[str] = []
    sid = bus.subscribe(">", lambda e: got.append(e.topic))
    bus.publish(ingested())
    bus.unsubscribe(sid)
    bus.publish(ingested())
    bus.unsubscribe(sid)  # a second time is harmless
    bus.unsubscribe("no-such-subscription")
    assert got == ["bars.ingested"]


def test_failing_subscriber_goes_to_dead_letters_and_others_still_get_the_event() -> None:
    bus = InMemoryBus()
    before: list[str] = []
    after: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("consumer bug")

    bus.subscribe(">", lambda e: before.append(e.event_id))
    bus.subscribe("bars.*", broken, name="broken-consumer")
    bus.subscribe("bars.ingested", lambda e: after.append(e.event_id))
    event = ingested()
    bus.publish(event)

    assert before == [event.event_id]
    assert after == [event.event_id]
    assert bus.failed == 1
    assert len(bus.dead_letters) == 1
    letter = bus.dead_letters[0]
    assert letter["topic"] == "bars.ingested"
    assert letter["error"] == "RuntimeError: consumer bug"
    assert letter["handler"] == "broken-consumer"
    payload = letter["payload"]
    assert (payload["type"], payload["version"]) == ("BarsIngested", 1)
    assert payload["event_id"] == event.event_id
    assert payload["payload"]["job_id"] == "job-1"
    assert Envelope.model_validate(payload).open() == event  # a dead letter replays as is


def test_dead_letters_go_to_the_sink_when_one_is_given() -> None:
    sunk: list[tuple[str, dict[str, Any], str, str | None]] = []
    bus = InMemoryBus(dead_letters=lambda *args: sunk.append(args))

    def broken(event: Event) -> None:
        raise KeyError("x")

    bus.subscribe("bars.>", broken)
    bus.publish(quarantined())
    assert bus.dead_letters == []
    assert len(sunk) == 1
    topic, payload, error, handler = sunk[0]
    assert topic == "bars.quarantined"
    assert payload["payload"]["rules"] == {"negative_volume": 2}
    assert error == "KeyError: 'x'"
    assert handler is not None and handler.endswith("broken")


def test_each_failure_is_counted_per_handler_and_event() -> None:
    bus = InMemoryBus()

    def broken(event: Event) -> None:
        raise ValueError("nope")

    bus.subscribe(">", broken, name="a")
    bus.subscribe(">", broken, name="b")
    bus.publish(ingested())
    bus.publish(quarantined())
    assert bus.failed == 4
    assert [d["handler"] for d in bus.dead_letters] == ["a", "b", "a", "b"]


def test_a_handler_may_subscribe_during_delivery_without_deadlock() -> None:
    bus = InMemoryBus()
    got: list[str] = []

    def subscribe_more(event: Event) -> None:
        bus.subscribe(">", lambda e: got.append(e.event_id))

    bus.subscribe(">", subscribe_more)
    first, second = ingested(), ingested()
    bus.publish(first)
    assert got == []  # new subscribers see only later events
    bus.publish(second)
    assert got == [second.event_id]
