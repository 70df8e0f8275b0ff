"""Line protocol formatting and the reading model."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from linli.catalog.lineprotocol import format_field_value, format_line
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
