"""InfluxDB line protocol: the contract with storage.

The same bytes go to InfluxDB 1.x (/write), 2.x and 3.x (v2 write API), and
VictoriaMetrics. Formatting is done by hand, without a Point object per reading,
because it is on the hot path of every connector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

FieldValue = bool | int | float | str

# Whitespace escaped as InfluxDB's own client (influxdb-client's serializer) escapes it, so that
# a point becomes the same bytes whichever of the two wrote it (tests/catalog/test_lineprotocol.py).
_WHITESPACE_ESCAPES = {" ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", **_WHITESPACE_ESCAPES})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", **_WHITESPACE_ESCAPES})


def escape_measurement(name: str) -> str:
    """Escape commas and whitespace in a measurement name."""
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_KEY_ESCAPES)


def escape_string(text: str) -> str:
    """A string field value's text between its double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def format_field_value(value: FieldValue) -> str:
    """One field value in line-protocol syntax; NaN and infinity cannot be stored."""
    kind = type(value)  # exact types first: the common case, on every reading
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"line protocol cannot carry {value}")
        return repr(value)
    if kind is int:
        return f"{value}i"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"line protocol cannot carry {value}")
        return repr(value)
    return f'"{escape_string(value)}"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """Measurement and tags, escaped, tags sorted by key: the part of a line that names the series."""
    parts = [escape_measurement(measurement)]
    parts.extend(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
    return ",".join(parts)


def format_field(key: str, value: FieldValue) -> str:
    """One `key=value` of a field set."""
    return f"{escape_key(key)}={format_field_value(value)}"


# Field keys escaped once: they come from the profiles, a few hundred at most.
_FIELD_KEYS: dict[str, str] = {}
_FIELD_KEYS_MAX = 10_000


def format_fields(fields: Mapping[str, FieldValue]) -> str:
    """The field set of a line."""
    keys = _FIELD_KEYS
    out = []
    for k, v in fields.items():
        key = keys.get(k)
        if key is None:
            key = escape_key(k) + "="
            if len(keys) < _FIELD_KEYS_MAX:
                keys[k] = key
        out.append(key + format_field_value(v))
    return ",".join(out)


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    time_ms: int,
) -> str:
    """One point: tags sorted by key (InfluxDB's preferred order), time in milliseconds."""
    if not fields:
        raise ValueError(f"{measurement}: a point needs at least one field")
    return f"{series_key(measurement, tags)} {format_fields(fields)} {time_ms}"
