"""The msgspec fast path of payload validation against the pydantic model alone (no servers).

Every payload of a varied corpus, good and bad, for every message of every built-in profile,
must come out of `CompiledMessage` exactly as out of its pydantic model: the same values of
the same types and the same line, or the same refusal with the same reason and detail.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linli.catalog.lineprotocol import format_fields
from linli.catalog.mqttspec import FieldType, MqttMessage, PayloadField
from linli.catalog.payloads import CompiledMessage, PayloadError
from linli.catalog.profile import builtin_profiles
from linli.catalog.readings import MAX_TIME_MS, MIN_TIME_MS

T = 1_790_000_000_000
SPECS = [m for p in builtin_profiles().values() if p.mqtt is not None for m in p.mqtt.messages]


def slow(spec: MqttMessage) -> CompiledMessage:
    """The same message validated by its pydantic model alone, as before the fast path."""
    compiled = CompiledMessage(spec)
    compiled._fast = None
    return compiled


def outcome(compiled: CompiledMessage, payload: bytes) -> tuple[object, ...]:
    """What a payload becomes: its values with their types and its field set, or its refusal."""
    try:
        values = compiled.validate(payload)
    except PayloadError as exc:
        return ("refused", exc.reason, str(exc))
    tags, fields, t = compiled.tags(values), compiled.fields(values), compiled.time_ms(values)
    typed = sorted((k, type(v).__name__, repr(v)) for k, v in fields.items())
    line = compiled.field_set_of(values)
    assert line == format_fields(fields)  # the generated formatter, as the per-field one
    return ("stored", tags, typed, t, line)


def good_value(f: PayloadField) -> Any:
    if f.type is FieldType.BOOL:
        return True
    if f.type is FieldType.INT:
        return int(f.min or 0) + 1 if f.max is None or f.max > (f.min or 0) + 1 else int(f.min or 0)
    if f.type is FieldType.FLOAT:
        low, high = f.min if f.min is not None else -5.0, f.max if f.max is not None else 500.0
        return round((low + high) / 3, 3)
    if f.choices is not None:
        return f.choices[-1]
    return "ronghua-1"


def good(spec: MqttMessage, *, optional: bool = True) -> dict[str, Any]:
    payload = {f.json_key: good_value(f) for f in spec.fields if optional or f.required}
    if spec.time_key is not None:
        payload[spec.time_key] = T
    return payload


def field_values(f: PayloadField) -> list[Any]:
    """Values at and past every limit a field has, and of every wrong type."""
    out: list[Any] = [None, "1", [], {}, True, False, 0, 1, -1, 1.0, 0.5, -0.0, 10**30, -(10**30), 1e308]
    for limit in (f.min, f.max):
        if limit is not None:
            out += [limit, limit - 1, limit + 1, limit - 0.5, limit + 0.5, int(limit), float(limit)]
    if f.type is FieldType.STRING:
        longest = f.max_length
        out += ["", "a", "a" * longest, "a" * (longest + 1), "é" * longest, "é" * (longest + 1)]
        out += ["a\n", "\n", "a\nb", "a\tb", "a\x7f", "tab\t", 'say "hi"', "back\\slash", "中文", "a b"]
        out += ["ronghua-1", "-bad", "UPPER", "a" * 32, "a" * 33, "a$", "a\r"]
        out += [c.upper() for c in f.choices or []] + [c + " " for c in f.choices or []]
    return out


RAW_SUFFIXES = [b"", b" ", b"\n", b"x", b"}", b",", b"\x00"]


def corpus(spec: MqttMessage) -> Iterator[bytes]:
    base = good(spec)
    yield json.dumps(base).encode()
    yield json.dumps(good(spec, optional=False)).encode()
    yield json.dumps({**base, "extra": "ignored", "nested": {"a": [1, 2]}}).encode()
    for f in spec.fields:
        for value in field_values(f):
            yield json.dumps({**base, f.json_key: value}).encode()
        yield json.dumps({k: v for k, v in base.items() if k != f.json_key}).encode()
        # Numbers as JSON writes them by hand: exponents, NaN and infinities, duplicates.
        for text in ("1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1E2", "1.0", "01", "-0", "2e-400"):
            body = json.dumps({k: v for k, v in base.items() if k != f.json_key})
            yield (body[:-1] + f', "{f.json_key}": {text}}}').encode()
        body = json.dumps(base)
        yield (body[:-1] + f', "{f.json_key}": null}}').encode()
        yield (body[:-1] + f', "{f.json_key}": {json.dumps(good_value(f))}}}').encode()
        for escaped in (r"\u0000", r"\ud800", r"\n", r"\u00e9", r"\"", "\\\\", "\xff"):
            raw = (body[:-1] + f', "{f.json_key}": "a{escaped}"}}').encode("utf-8", "surrogateescape")
            yield raw
            yield raw.replace(b"\xc3\xbf", b"\xff")  # the invalid UTF-8 byte itself
    if spec.time_key is not None:
        for ts in (
            None,
            "1",
            T + 0.5,
            float(T),
            MIN_TIME_MS,
            MIN_TIME_MS - 1,
            MAX_TIME_MS,
            MAX_TIME_MS + 1,
            0,
            -1,
        ):
            yield json.dumps({**base, spec.time_key: ts}).encode()
        yield json.dumps({k: v for k, v in base.items() if k != spec.time_key}).encode()
    raw = json.dumps(base).encode()
    for suffix in RAW_SUFFIXES:
        yield raw + suffix
    yield b" " + raw
    yield raw[:-1]
    yield b""
    yield b"null"
    yield b"[]"
    yield b"[" + raw + b"]"
    yield b"\xef\xbb\xbf" + raw  # a byte-order mark
    yield b"\xff\xfe"
    yield json.dumps(base, ensure_ascii=False).encode("utf-16")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_payload_of_the_corpus_is_stored_or_refused_as_by_the_pydantic_model(spec: MqttMessage) -> None:
    fast, reference = CompiledMessage(spec), slow(spec)
    assert fast._fast is not None  # every built-in message has the fast path, and takes a good payload
    fast._fast(json.dumps(good(spec)).encode())
    payloads = list(corpus(spec))
    outcomes = [(p, outcome(fast, p), outcome(reference, p)) for p in payloads]
    differ = [(p, a, b) for p, a, b in outcomes if a != b]
    assert not differ, differ[:5]
    # The corpus reaches both sides of the checks: stored payloads and every kind of refusal.
    kinds = {o[1] if o[0] == "refused" else "stored" for _, o, _ in outcomes}
    assert {"stored", "malformed", "invalid"} <= kinds, kinds
    if any(f.min is not None or f.max is not None for f in spec.fields):
        assert "out_of_range" in kinds


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SPECS), st.data())
def test_a_good_payload_with_any_keys_changed_is_stored_or_refused_as_by_the_pydantic_model(
    spec: MqttMessage, data: st.DataObject
) -> None:
    payload = copy.deepcopy(good(spec))
    keys = [f.json_key for f in spec.fields] + ([spec.time_key] if spec.time_key else [])
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=3)):
        payload[key] = data.draw(json_scalars)
    raw = json.dumps(payload).encode()
    assert outcome(CompiledMessage(spec), raw) == outcome(slow(spec), raw)


# Patterns that Python's `re` (msgspec's) reads unlike Rust's regex (pydantic's), each with a
# value only Python's reading takes: such a field must be checked as pydantic checks it.
UNLIKE = [
    (r"^\w+$", "½"),
    (r"(?i)^[a-z]+$", "İstanbul"),
    (r"^[a-z ]+\s?$", "ab\x1c"),
    (r"^[[:digit:]]+$", "d]"),
]


@pytest.mark.parametrize(("pattern", "value"), UNLIKE, ids=[p for p, _ in UNLIKE])
def test_a_pattern_python_reads_unlike_rust_is_checked_as_pydantic_checks_it(
    pattern: str, value: str
) -> None:
    spec = MqttMessage.model_validate(
        {
            "name": "state",
            "topic": "things/{site}/{device}/state",
            "fields": [
                {"name": "where", "type": "string", "tag": True, "pattern": pattern},
                {"name": "level", "type": "float"},
            ],
        }
    )
    raw = json.dumps({"where": value, "level": 1.0}, ensure_ascii=False).encode()
    assert outcome(slow(spec), raw)[0] == "refused"  # what makes the case: pydantic refuses it
    assert outcome(CompiledMessage(spec), raw) == outcome(slow(spec), raw)
