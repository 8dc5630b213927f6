"""What a dead-lettered message carries besides its bytes: where it came from and why."""

from __future__ import annotations

from quantivista.bus.base import Message

__all__ = ["DLQ_HEADERS", "dead_letter_headers"]

DLQ_HEADERS = ("qv-dlq-topic", "qv-dlq-offset", "qv-dlq-group", "qv-dlq-error")


def dead_letter_headers(message: Message, group: str, error: str) -> dict[str, str]:
    """Return the message's headers plus its origin, the failing group and the error."""
    return {
        **message.headers,
        "qv-dlq-topic": message.topic,
        "qv-dlq-offset": str(message.offset),
        "qv-dlq-group": group,
        "qv-dlq-error": (error or "no error given")[:2000],
        "qv-dlq-deliveries": str(message.deliveries),
    }
