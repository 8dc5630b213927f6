"""What a dead-lettered message carries besides its bytes: where it came from and why."""

from __future__ import annotations

from quantivista.bus.base import Broker, Message, dead_letter_headers, dead_letter_topic

__all__ = ["DLQ_HEADERS", "dead_letter_headers", "send_to_dead_letters"]

DLQ_HEADERS = ("qv-dlq-topic", "qv-dlq-offset", "qv-dlq-group", "qv-dlq-error", "qv-dlq-reason")


def send_to_dead_letters(
    broker: Broker, message: Message, group: str, error: str, *, reason: str | None = None
) -> int:
    """Put `message` on its topic's dead-letter topic at once (a permanent failure, such as
    bytes no codec reads); return its offset there. The caller acks the original.

    `reason` names what refused it (`decode`, `schema`, `fx`, ...) in `qv-dlq-reason`."""
    headers = dead_letter_headers(message, group, error)
    if reason:
        headers["qv-dlq-reason"] = reason
    return broker.publish(
        dead_letter_topic(message.topic), message.value, key=message.key, headers=headers
    )
