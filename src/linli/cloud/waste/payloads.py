"""What the trucks send: `{topic}/{site}/{truck}/location|lift|alarm|order_reply`, as JSON."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linli.catalog.alerts import MAX_TIME_MS
from linli.catalog.errors import validation_reason

# A truck message is a few hundred bytes; one over 128 KiB is refused before it is parsed.
MAX_PAYLOAD = 131_072


class RefusedError(Exception):
    """A truck message not taken: `reason` is what it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    ts: Annotated[int, Field(ge=0, le=MAX_TIME_MS)]


class Location(Payload):
    lat: float
    lon: float
    speed: float = 0.0
    acc: bool | None = None  # the ignition


class LiftMessage(Payload):
    stop: str
    bins: int
    collected_kg: float


class OrderReply(Payload):
    """The driver's answer to an order, from the truck terminal."""

    booking: Annotated[str, Field(min_length=1, max_length=64)]
    accept: bool


class Alarm(Payload):
    alarm: str
    active: bool
    stop: str = ""


MESSAGES: dict[str, type[Payload]] = {
    "location": Location,
    "lift": LiftMessage,
    "alarm": Alarm,
    "order_reply": OrderReply,
}


def truck_filters(topic: str) -> list[str]:
    """What the service reads: every truck's messages it understands (and the broker grants)."""
    return [f"{topic}/+/+/{kind}" for kind in MESSAGES]


def decode(kind: str, payload: bytes) -> Payload:
    """The message of that kind; RefusedError when it is too large, malformed or invalid.

    Parsed and validated in one step by pydantic's own JSON parser (a third of the time of
    `json.loads` then the model); what it refuses goes through `json.loads` as before, which
    takes some it does not (UTF-16, a byte-order mark, a lone surrogate) and says why of the rest.
    """
    if len(payload) > MAX_PAYLOAD:
        raise RefusedError("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD}")
    model = MESSAGES[kind]
    try:
        return model.model_validate_json(payload)
    except ValidationError:
        pass
    try:
        return model.model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:
        detail = validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)[:200]
        raise RefusedError("invalid", detail) from exc
    except RecursionError as exc:  # JSON nested deeper than the parser goes
        raise RefusedError("invalid", "nested too deep") from exc
