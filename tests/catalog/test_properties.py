"""Property-based tests: arbitrary bytes, JSON and registers into every parser and decoder.

Whatever comes in, no exception escapes, every rejection has one of the counted reasons,
and whatever is accepted can be stored.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linli.catalog.lineprotocol import format_fields
from linli.catalog.payloads import CompiledMessage, PayloadError
from linli.catalog.profile import ModbusPoint, Profile, builtin_profiles
from linli.catalog.registers import BlockDecoder, DecodeError, Decoder, Value, compile_decoder
from linli.edge.config import DeviceConfig
from linli.edge.modbus import DevicePoller, Endpoint
from linli.edge.readplan import Read

REASONS = {"malformed", "invalid", "out_of_range", "not_finite", "bad_time"}
DECODE_REASONS = {"not_finite", "out_of_range", "bad_decimals", "invalid_reading"}
T = 1_790_000_000_000

MESSAGES = [
    CompiledMessage(m) for p in builtin_profiles().values() if p.mqtt is not None for m in p.mqtt.messages
]
MODBUS = [p for p in builtin_profiles().values() if p.modbus is not None]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def check(compiled: CompiledMessage, payload: bytes) -> None:
    try:
        tags, fields, t = compiled.parse(payload)
    except PayloadError as exc:
        rejection: tuple[str, str] | None = (exc.reason, str(exc))
    else:
        rejection = None
    if rejection is not None:
        reason, detail = rejection
        assert reason in REASONS
        assert detail
        return
    # Accepted: every value is storable as line protocol.
    assert all(isinstance(v, str) and v for v in tags.values())
    assert all(not isinstance(v, float) or math.isfinite(v) for v in fields.values())
    if fields:
        format_fields(fields)
    assert t is None or isinstance(t, int)


@given(st.sampled_from(MESSAGES), st.binary(max_size=300))
def test_arbitrary_bytes_are_a_message_or_a_reasoned_rejection(
    compiled: CompiledMessage, payload: bytes
) -> None:
    check(compiled, payload)


@given(st.sampled_from(MESSAGES), json_values)
def test_arbitrary_json_is_a_message_or_a_reasoned_rejection(compiled: CompiledMessage, value: Any) -> None:
    check(compiled, json.dumps(value).encode())


@given(
    st.sampled_from(MESSAGES),
    st.dictionaries(
        st.sampled_from(["ts", "object", "confidence", "floor", "action", "lat", "lon", "speed", "load_kg"]),
        json_values,
    ),
)
def test_known_keys_with_arbitrary_values_are_handled(
    compiled: CompiledMessage, body: dict[str, Any]
) -> None:
    # Mostly the profile's own keys, so that validation goes past the first missing field.
    check(compiled, json.dumps({"ts": T, **body}).encode())


def test_hostile_payloads_each_have_their_reason() -> None:
    detection = next(c for c in MESSAGES if c.spec.name == "detection")
    good = {"ts": T, "object": "ebike", "confidence": 0.9, "floor": 1, "action": "none"}
    nested = "[" * 100_000 + "]" * 100_000
    cases = {
        b"\xff\xfe{\x00}\x00": "malformed",  # UTF-16
        json.dumps(good).encode("utf-16"): "malformed",
        nested.encode(): "malformed",  # deeply nested
        json.dumps({**good, "pad": nested}).encode(): "valid",  # an unknown key is ignored, however big
        json.dumps({**good, "confidence": float("nan")}).encode(): "not_finite",  # NaN literal
        json.dumps({**good, "confidence": float("inf")}).encode(): "not_finite",
        json.dumps({**good, "ts": 0}).encode(): "bad_time",  # 1970
        json.dumps({**good, "ts": 5_000_000_000_000}).encode(): "bad_time",  # 2128
        json.dumps({**good, "floor": 10**30}).encode(): "out_of_range",
        '{"ts": 1790000000000, "object": "eb\u00efke"}'.encode("latin-1"): "malformed",
    }
    for payload, reason in cases.items():
        try:
            detection.parse(payload)
            got = "valid"
        except PayloadError as exc:
            got = exc.reason
        assert got == reason, (payload[:60], got)


def poller(profile: Profile) -> DevicePoller:
    device = DeviceConfig(id="d", profile=profile.kind, count=2 if profile.group_tag else None)
    return DevicePoller(
        site="s", device=device, profile=profile, endpoint=Endpoint("127.0.0.1", 1, 0.1), emit=lambda _: None
    )


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.sampled_from(MODBUS), st.data())
def test_arbitrary_registers_decode_to_storable_readings_or_counted_errors(
    profile: Profile, data: Any
) -> None:
    p = poller(profile)
    blocks = [data.draw(st.lists(st.integers(0, 65535), min_size=r.count, max_size=r.count)) for r in p.reads]
    lines = p.decode(blocks, T)
    assert set(p.health.errors) <= DECODE_REASONS
    for line in lines:
        assert line.endswith(f" {T}")
        assert "nan" not in line.split(" ")[1].lower().split("=")[-1]


@settings(max_examples=100)
@given(st.sampled_from(MODBUS), st.data())
def test_short_blocks_never_crash_the_decoder(profile: Profile, data: Any) -> None:
    # A garbled response shorter than asked for is refused before decoding (short_response);
    # this checks the decoders themselves never index past what they were given.
    p = poller(profile)
    blocks = [data.draw(st.lists(st.integers(0, 65535), min_size=r.count, max_size=r.count)) for r in p.reads]
    for read, block in zip(p.reads, blocks, strict=True):
        for slot in read.slots:
            assert slot.offset + slot.decoder.registers <= len(block)


def _same(a: object, b: object) -> bool:
    """Equal values of the same type, or DecodeErrors with the same field, reason and text."""
    if isinstance(a, DecodeError) and isinstance(b, DecodeError):
        return (a.field, a.reason, str(a)) == (b.field, b.reason, str(b))
    return type(a) is type(b) and a == b  # NaN is never a value: it is a not_finite error


def _one_by_one(slots: list[tuple[int, Decoder]], block: list[int]) -> list[Value | DecodeError]:
    out: list[Value | DecodeError] = []
    for offset, decoder in slots:
        try:
            out.append(decoder(block, offset))
        except DecodeError as exc:
            out.append(exc)
    return out


# Every type and order, a bit field, scales with and without a power-of-ten divisor, offsets,
# valid ranges, and points that overlap (a 32-bit value and its own low word).
MIXED: list[tuple[int, dict[str, object]]] = [
    (0, {"type": "uint16", "scale": 0.1, "valid_min": 0, "valid_max": 6000}),
    (1, {"type": "int16", "scale": 0.01, "offset": -40}),
    (2, {"type": "uint32", "word_order": "little"}),
    (4, {"type": "int32", "valid_min": -1000, "valid_max": 1000}),
    (5, {"type": "uint16"}),  # inside the int32 before it
    (6, {"type": "float32", "scale": 2.5}),
    (8, {"type": "float32", "byte_order": "little"}),
    (10, {"type": "uint16", "bit": 3}),
    (11, {"type": "int16", "byte_order": "little", "scale": 0.5}),
    (12, {"type": "uint16", "valid_max": 50000}),
    (14, {"type": "uint32", "scale": 0.001, "offset": 1}),  # one register after the last plain one
    (16, {"type": "float32", "valid_min": -1e6, "valid_max": 1e6}),
]


def _rows(
    read: Read, block: list[int]
) -> tuple[dict[int | None, dict[str, Value]], list[tuple[int | None, str]]]:
    rows: dict[int | None, dict[str, Value]] = {}
    bad: list[tuple[int | None, str]] = []
    read.rows_into(block, rows, lambda channel, exc: bad.append((channel, exc.field)))
    return rows, bad


@settings(max_examples=300)
@given(st.data())
def test_a_block_decodes_as_its_points_do_one_by_one(data: Any) -> None:
    slots = [
        (offset, compile_decoder(ModbusPoint.model_validate(
            {"field": f"f{i}", "register": "holding", "address": offset, **spec}
        )))
        for i, (offset, spec) in enumerate(MIXED)
    ]  # fmt: skip
    count = 18
    block = data.draw(st.lists(st.integers(0, 65535), min_size=count, max_size=count))
    got = BlockDecoder(count, slots)(block)
    want = _one_by_one(slots, block)
    assert len(got) == len(want)
    assert all(_same(g, w) for g, w in zip(got, want, strict=True)), (got, want)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=100)
@given(st.sampled_from(MODBUS), st.data())
def test_every_profiles_reads_decode_as_their_points_do_one_by_one(profile: Profile, data: Any) -> None:
    for read in poller(profile).reads:
        block = data.draw(st.lists(st.integers(0, 65535), min_size=read.count, max_size=read.count))
        slots = [(s.offset, s.decoder) for s in read.slots]
        want = _one_by_one(slots, block)
        assert all(_same(g, w) for g, w in zip(read.decode(block), want, strict=True))
        rows, bad = _rows(read, block)
        expect: dict[int | None, dict[str, Value]] = {}
        for slot, value in zip(read.slots, want, strict=True):
            if not isinstance(value, DecodeError):
                expect.setdefault(slot.channel, {})[slot.decoder.field] = value
        assert rows == expect
        assert bad == [
            (s.channel, w.field) for s, w in zip(read.slots, want, strict=True) if isinstance(w, DecodeError)
        ]
