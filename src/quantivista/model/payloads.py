"""Raw provider payloads: the bronze layer's unit, exactly as received."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["RawPayload"]


@dataclass(frozen=True, slots=True)
class RawPayload:
    """One response exactly as received, with what is needed to replay or audit it."""

    provider: str
    url: str  # redacted: no keys
    status_code: int
    body: bytes
    received_at: datetime
    content_type: str = ""
    request_params: dict[str, str] = field(default_factory=dict)
