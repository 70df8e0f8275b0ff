"""Truck messages parsed in one step (issue 36) are taken and refused exactly as before."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from linli.catalog.errors import validation_reason
from linli.cloud.waste.payloads import MAX_PAYLOAD, MESSAGES, Payload, RefusedError, decode
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed, runs_on
from test_waste_service import FEED, MONDAY

HOSTILE = [
    b'{"ts": 1, "lat": NaN, "lon": 2}',
    b'{"ts": 1, "lat": 1e400, "lon": 2}',
    b'{"ts": 1, "lat": 1, "lon": 2, "x": "\\ud800"}',  # a lone surrogate: json.loads takes it
    b'\xef\xbb\xbf{"ts": 1, "lat": 1, "lon": 2}',  # a byte-order mark: json.loads takes it
    '{"ts": 1, "lat": 1, "lon": 2}'.encode("utf-16"),  # json.loads takes it
    b'{"ts": 1, "lat": "1.5", "lon": 2, "speed": true, "acc": "yes"}',
    b'{"ts": 1.0, "lat": 1, "lon": 2, "lat": 3}',
    b'{"ts": 1.5, "lat": 1, "lon": 2}',
    b'{"ts": -1, "lat": 1, "lon": 2}',
    b'{"ts": 1, "lat": 1}',
    b'{"ts": 1, "stop": 5, "bins": "2", "collected_kg": 1}',
    b'{"ts": 1, "alarm": "breakdown", "active": 1, "stop": null}',
    b'{"ts": 1, "booking": "", "accept": true}',
    b"[1, 2]",
    b"not json",
    b"\xff\xfe\xfd",
    b"[" * 100_000,
    b" " * (MAX_PAYLOAD + 1),
]


def before(kind: str, payload: bytes) -> Payload:
    """`decode` as it was: json.loads, then the model."""
    if len(payload) > MAX_PAYLOAD:
        raise RefusedError("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD}")
    try:
        return MESSAGES[kind].model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:
        detail = validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)[:200]
        raise RefusedError("invalid", detail) from exc
    except RecursionError as exc:
        raise RefusedError("invalid", "nested too deep") from exc


def outcome(kind: str, payload: bytes, parse: Callable[[str, bytes], Payload]) -> tuple[str, object]:
    try:
        message = parse(kind, payload)
    except RefusedError as exc:
        return "refused", (exc.reason, exc.detail)
    return "taken", (type(message), message.model_dump())


@pytest.mark.slow
def test_every_message_of_a_day_and_hostile_ones_are_taken_or_refused_as_before() -> None:
    feed = load_feed(FEED)
    payloads = [(kind, payload) for kind in MESSAGES for payload in HOSTILE]
    for trip in feed.trips.values():
        if runs_on(feed, trip, MONDAY):
            drive = drive_trip(feed, trip, MONDAY, random.Random(trip.id), traffic=Traffic(sd=0.2))
            payloads += [(kind, json.dumps(body).encode()) for kind, body in drive.messages]
    taken = 0
    for kind, payload in payloads:
        new, old = outcome(kind, payload, decode), outcome(kind, payload, before)
        assert new == old, (kind, payload[:80])
        taken += new[0] == "taken"
    assert taken > 2000  # the day's messages, and the hostile ones json.loads takes
