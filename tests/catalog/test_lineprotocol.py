"""Line protocol formatting and the reading model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision
from pydantic import ValidationError

from linli.catalog.lineprotocol import FieldValue, format_field_value, format_line
from linli.catalog.readings import Reading

T = 1_700_000_000_000


def test_a_charger_port_line() -> None:
    line = format_line(
        "charger", {"site": "ronghua", "port": "3", "device": "c1"}, {"power": 188, "current": 0.82}, T
    )
    # Tags sorted by key, integers with `i`, floats as shortest repr, time in ms.
    assert line == f"charger,device=c1,port=3,site=ronghua power=188i,current=0.82 {T}"


def test_escaping() -> None:
    line = format_line("a b,c", {"site": "荣华 一,村=x"}, {"note": 'he said "hi" \\ bye'}, T)
    assert line == f'a\\ b\\,c,site=荣华\\ 一\\,村\\=x note="he said \\"hi\\" \\\\ bye" {T}'


def test_field_values() -> None:
    assert format_field_value(True) == "true"
    assert format_field_value(3) == "3i"
    assert format_field_value(-0.5) == "-0.5"
    assert format_field_value(1e-7) == "1e-07"
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="cannot carry"):
            format_field_value(bad)


def test_empty_tag_values_are_left_out_and_fields_required() -> None:
    assert format_line("m", {"site": "s", "x": ""}, {"v": 1}, T) == f"m,site=s v=1i {T}"
    with pytest.raises(ValueError, match="at least one field"):
        format_line("m", {}, {}, T)


def test_reading_validates() -> None:
    ok = Reading(measurement="charger", tags={"site": "s", "device": "d"}, fields={"v": 1.5}, time_ms=T)
    assert ok.to_line() == f"charger,device=d,site=s v=1.5 {T}"
    bad: list[dict[str, object]] = [
        {"fields": {"v": math.nan}},
        {"fields": {}},
        {"fields": {"site": 1}},  # a tag name used as a field
        {"tags": {"site": "s"}},  # no device tag
        {"time_ms": 0},  # 1970: a device clock that was never set
        {"time_ms": 5_000_000_000_000},  # beyond 2100
        {"tags": {"site": "s", "device": ""}},
    ]
    base: dict[str, object] = {
        "measurement": "charger",
        "tags": {"site": "s", "device": "d"},
        "fields": {"v": 1},
        "time_ms": T,
    }
    for change in bad:
        with pytest.raises(ValidationError):
            Reading.model_validate({**base, **change})


# Names and tag values with every character line protocol escapes, among any others; no empty
# names (influxdb-client drops an empty tag key), no measurement taken for a comment ('#').
_SPECIAL = st.sampled_from([",", "=", " ", "\n", "\t", "\r", "\\", '"', "荣", "a"])
_TEXT = st.text(st.one_of(_SPECIAL, st.characters(codec="utf-8")), min_size=1, max_size=12)
# influxdb-client adds a space to a tag value ending in a backslash; linli's values never do.
_TAG_VALUE = _TEXT.filter(lambda v: not v.endswith("\\"))
_FIELD_VALUE = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), _TEXT)


@given(
    measurement=_TEXT.filter(lambda m: not m.startswith("#")),
    tags=st.dictionaries(_TEXT, _TAG_VALUE, max_size=4),
    fields=st.dictionaries(_TEXT, _FIELD_VALUE, min_size=1, max_size=4),
    time_ms=st.integers(0, 2**62 // 1_000_000),
)
@settings(max_examples=500, deadline=None)
def test_lines_are_the_bytes_influxdb_client_writes(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ms: int
) -> None:
    point = Point(measurement).time(time_ms, WritePrecision.MS)  # type: ignore[no-untyped-call]
    for tag, text in tags.items():
        point.tag(tag, text)
    for key, value in fields.items():
        point.field(key, value)
    # influxdb-client sorts the fields by key; linli keeps the profile's order.
    ours = format_line(measurement, tags, dict(sorted(fields.items())), time_ms)
    assert ours == point.to_line_protocol()
