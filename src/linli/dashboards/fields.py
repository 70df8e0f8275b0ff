"""A panel's field config read as Grafana reads it: series names, units, value mappings, colours.

The picture (render) draws with these, so that it names, counts and colours what it shows
by the screen's own rules.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from linli.dashboards.influxv1 import Series

COLOURS = {
    "green": "#73bf69",
    "red": "#f2495c",
    "orange": "#ff9830",
    "blue": "#5794f2",
    "text": "#d8d9da",
}
# Grafana's unit ids the screen uses, as written after a number; "suffix: X" writes X.
UNITS = {"kwatt": "kW", "watt": "W", "pressurempa": "MPa", "lengthm": "m", "masst": "t", "masskg": "kg"}


def colour(name: str) -> str:
    return COLOURS.get(name, name)


def renamed(panel: dict[str, Any], name: str) -> str:
    """A series' name after the panel's renameByRegex transformations, as Grafana applies them:
    the pattern anchored at both ends, `$1` in the new name for what the first group caught
    (one digit: with fewer than ten groups JavaScript reads `$107号` as `$1` then `07号`)."""
    for step in panel.get("transformations", []):
        if step["id"] != "renameByRegex":
            continue
        pattern = step["options"]["regex"]
        if re.fullmatch(pattern, name):
            replacement = re.sub(r"\$(\d)", r"\\g<\1>", step["options"]["renamePattern"])
            name = re.sub(f"^{pattern}$", replacement, name)
    return name


def _props(panel: dict[str, Any], name: str) -> dict[str, Any]:
    """A series' field config: the panel's defaults, then every override matching its name."""
    field_config = panel.get("fieldConfig", {})
    props: dict[str, Any] = dict(field_config.get("defaults", {}))
    for override in field_config.get("overrides", []):
        matcher = override["matcher"]
        hit = (
            name == matcher["options"]
            if matcher["id"] == "byName"
            else re.fullmatch(matcher["options"], name)
        )
        if hit:
            props.update({p["id"]: p["value"] for p in override["properties"]})
    return props


def _shown(panel: dict[str, Any], name: str) -> str:
    """The name Grafana shows for a series or column: its display-name override, else its own."""
    return str(_props(panel, name).get("displayName", name))


def _mapped(panel: dict[str, Any], name: str, value: object) -> str:
    """A text value as the panel shows it: through its field's value mappings (an id as its name)."""
    for mapping in _props(panel, name).get("mappings", []):
        hit = mapping.get("options", {}).get(str(value)) if mapping.get("type") == "value" else None
        if hit and "text" in hit:
            return str(hit["text"])
    return str(value)


def _unit(panel: dict[str, Any], name: str = "") -> str:
    """The unit written after a series' numbers ("" for a plain count)."""
    unit = str(_props(panel, name).get("unit", ""))
    if unit.startswith("suffix:"):
        return unit.removeprefix("suffix:").strip()
    return UNITS.get(unit, "")


def _figure(panel: dict[str, Any], name: str, value: float, decimals: int | None = None) -> str:
    """A number as the panel shows it: its decimals, then its unit."""
    props = _props(panel, name)
    if props.get("unit") == "percentunit":
        return f"{value * 100:.0f}%"
    places = decimals if decimals is not None else int(props.get("decimals", 0))
    unit = _unit(panel, name)
    return f"{value:.{places}f} {unit}".strip()


def _name(alias: str | None, series: Series) -> str:
    if not alias:
        return series.columns[-1]
    return re.sub(r"\$tag_([A-Za-z0-9_]+)", lambda m: series.tags.get(m[1], ""), alias).strip()


def _last(series: Series, calcs: list[str]) -> float | None:
    values = [row[-1] for row in series.values if isinstance(row[-1], int | float)]
    if not values:
        return None
    return float(sum(values)) if "sum" in calcs else float(values[-1])


def _threshold_colour(value: float, steps: list[dict[str, Any]]) -> str:
    chosen = steps[0]["color"] if steps else "text"
    for step in steps[1:]:
        if value >= step["value"]:
            chosen = step["color"]
    return colour(chosen)


def _field_colour(panel: dict[str, Any], name: str, value: float) -> str:
    """The colour Grafana would give this series' value: a fixed colour, or its thresholds."""
    props = _props(panel, name)
    fixed = props.get("color")
    if fixed and fixed.get("mode") == "fixed":
        return colour(fixed["fixedColor"])
    thresholds = props.get("thresholds") or {}
    return _threshold_colour(value, thresholds.get("steps", []))


def _columns(text: str) -> int:
    """How many columns a text takes: a Chinese character is as wide as two Latin ones."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(panel: dict[str, Any], column: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _mapped(panel, column, value)
    return _figure(panel, column, float(value), 1 if isinstance(value, float) else 0)
