"""MQTT payload validation, the confirmation rule and MQTT profile checks (no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from linli.catalog.confirm import Confirmer
from linli.catalog.lineprotocol import format_fields
from linli.catalog.mqttspec import Confirm, MqttMessage, MqttSpec
from linli.catalog.payloads import CompiledMessage, PayloadError
from linli.catalog.profile import get_profile

TS = 1_790_000_000_000


def detection() -> CompiledMessage:
    spec = get_profile("camera").mqtt
    assert spec is not None
    return CompiledMessage(next(m for m in spec.messages if m.name == "detection"))


def good(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"ts": TS, "object": "ebike", "confidence": 0.8, "floor": 1, "action": "none"}
    payload.update(changes)
    return payload


def test_a_valid_payload_splits_into_tags_fields_and_device_time() -> None:
    tags, fields, t = detection().parse(json.dumps(good(held_s=3.0, extra="ignored")).encode())
    assert tags == {"object": "ebike"}
    assert fields == {"confidence": 0.8, "floor": 1, "action": "none", "held_s": 3.0}
    assert t == TS


def test_an_optional_field_that_is_absent_is_not_stored() -> None:
    _, fields, _ = detection().parse(json.dumps(good()).encode())
    assert "held_s" not in fields


@pytest.mark.parametrize(
    ("payload", "reason", "mentions"),
    [
        (b'{"ts": 1790000000000, "object": ', "malformed", "not JSON"),
        (b"\xff\xfe\x00garbage", "malformed", "not JSON"),
        (b"[1, 2, 3]", "invalid", "object"),
        (json.dumps(good(confidence="0.8")).encode(), "invalid", "confidence"),
        (json.dumps(good(floor=1.5)).encode(), "invalid", "floor"),
        (json.dumps(good(floor=True)).encode(), "invalid", "floor"),
        (json.dumps(good(object="car")).encode(), "invalid", "object"),
        (json.dumps({k: v for k, v in good().items() if k != "floor"}).encode(), "invalid", "floor"),
        (json.dumps(good(confidence=1.5)).encode(), "out_of_range", "confidence"),
        (json.dumps(good(floor=-99)).encode(), "out_of_range", "floor"),
        (
            b'{"ts":1790000000000,"object":"ebike","confidence":NaN,"floor":1,"action":"none"}',
            "not_finite",
            "",
        ),
        (json.dumps(good(ts=0)).encode(), "bad_time", "ts"),
        (json.dumps(good(ts=TS * 1000)).encode(), "bad_time", "ts"),
        (json.dumps(good(action="none\nx")).encode(), "invalid", "action"),
    ],
)
def test_a_bad_payload_is_rejected_with_its_reason(payload: bytes, reason: str, mentions: str) -> None:
    with pytest.raises(PayloadError) as caught:
        detection().parse(payload)
    assert caught.value.reason == reason
    assert mentions in str(caught.value)


def test_free_text_fields_refuse_control_characters() -> None:
    spec = get_profile("truck").mqtt
    assert spec is not None
    lift = CompiledMessage(next(m for m in spec.messages if m.name == "lift"))
    payload = {"ts": TS, "waste_type": "wet", "route": "wet-north", "bins": 2, "collected_kg": 80.0}
    assert lift.parse(json.dumps({**payload, "stop": "ronghua-1"}).encode())[1]["stop"] == "ronghua-1"
    with pytest.raises(PayloadError, match="stop"):
        lift.parse(json.dumps({**payload, "stop": "a\nb"}).encode())


RULE = Confirm(
    score="confidence",
    confirm=0.76,
    keep=0.5,
    instant=0.99,
    hits=2,
    window_s=5,
    exit_s=7,
    only_if={"floor": [1, -1]},
)


def run(hits: list[tuple[float, float, int]]) -> list[tuple[bool, int]]:
    confirmer = Confirmer(RULE)
    return [confirmer.observe(t, {"confidence": c, "floor": f}) for t, c, f in hits]


def test_one_hit_is_not_enough_but_two_within_the_window_are() -> None:
    assert run([(0, 0.8, 1), (6, 0.8, 1)]) == [(False, 0), (False, 0)]
    assert run([(0, 0.8, 1), (4, 0.8, 1), (5, 0.6, 1)]) == [(False, 0), (True, 1), (True, 0)]


def test_a_near_certain_hit_confirms_at_once() -> None:
    assert run([(0, 0.995, -1)]) == [(True, 1)]


def test_an_episode_lasts_while_hits_keep_above_keep_and_ends_after_exit() -> None:
    hits = [(0, 0.995, 1), (3, 0.55, 1), (9, 0.55, 1), (9.5, 0.4, 1), (17, 0.55, 1), (18, 0.995, 1)]
    assert run(hits) == [(True, 1), (True, 0), (True, 0), (False, 0), (False, 0), (True, 1)]


def test_hits_on_other_floors_never_confirm() -> None:
    assert run([(0, 0.995, 7), (1, 0.9, 7), (2, 0.9, 7)]) == [(False, 0)] * 3


def test_mqtt_profiles_refuse_what_storage_or_routing_cannot_take() -> None:
    field = {"name": "v", "type": "float"}
    with pytest.raises(ValidationError, match="needs both"):
        MqttMessage.model_validate({"name": "m", "topic": "x/{device}/m", "fields": [field]})
    with pytest.raises(ValidationError, match="literal"):
        MqttMessage.model_validate({"name": "m", "topic": "x/+/{site}/{device}", "fields": [field]})
    tag = {"name": "v", "type": "string", "tag": True}
    with pytest.raises(ValidationError, match="tag is a string with choices"):
        MqttMessage.model_validate({"name": "m", "topic": "x/{site}/{device}", "fields": [tag]})
    a = {"name": "a", "topic": "x/{site}/{device}/a", "fields": [{"name": "v", "type": "float"}]}
    b = {"name": "b", "topic": "x/{site}/{device}/b", "fields": [{"name": "v", "type": "int"}]}
    with pytest.raises(ValidationError, match="field 'v' has type"):
        MqttSpec.model_validate({"messages": [a, b]})


def test_the_fast_field_set_is_the_general_formatter_s() -> None:
    spec = get_profile("truck").mqtt
    assert spec is not None
    location = CompiledMessage(next(m for m in spec.messages if m.name == "location"))
    payload = {
        "ts": TS,
        "waste_type": "wet",
        "route": "wet-north",
        "lat": 31.2,
        "lon": 121.4,
        "speed": 0,  # an integer in JSON is still a float field: stored as 0.0, not 0i
        "heading": 90,
        "acc": True,
        "alarm_flags": 0,
        "load_kg": 812.5,
        "stop": 'say "hi"',
    }
    values = location.validate(json.dumps(payload).encode())
    fields = location.fields(values)
    assert location.field_set_of(values) == format_fields(fields)
    assert "speed=0.0," in location.field_set_of(values)
    assert 'stop="say \\"hi\\""' in location.field_set_of(values)
    # Fields added after parsing (the confirmation rule's) fall back to the general formatter.
    assert location.field_set({**fields, "confirmed": True}) == format_fields({**fields, "confirmed": True})
