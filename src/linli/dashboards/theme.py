"""Colours and limits that mean the same thing on every panel of every dashboard.

green: normal or available; blue: working as it should (charging, in use); orange: needs
a look (a warning limit, a fault that is not dangerous, a pump that started); red: act
now (a critical limit, a fire alarm, a fault); grey: no data, offline or switched off.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from linli.catalog.profile import Severity, Threshold

OK = "green"
WORKING = "blue"
WARNING = "orange"
CRITICAL = "red"
OFF = "#8e8e8e"

SEVERITY_COLOUR = {Severity.WARNING: WARNING, Severity.CRITICAL: CRITICAL}

# Port states of a charger (the charger profile's enum), fire pumps and fire-alarm points.
CHARGER_STATES = {"idle": OK, "charging": WORKING, "full": WORKING, "fault": CRITICAL, "disabled": OFF}
PUMP_STATES = {"stopped": OK, "running": WARNING, "fault": CRITICAL}

# Where the district is: the screen's map opens on it.
DISTRICT_CENTRE = (31.198, 121.405)
ZONE = "Asia/Shanghai"


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute threshold steps: (None, base colour), then (from value, colour)..."""
    return (
        db.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in pairs])
    )


def limit(threshold: Threshold) -> db.ThresholdsConfig:
    """Colour a value against a profile's limit: green on the safe side, the severity past it."""
    past = SEVERITY_COLOUR[threshold.severity]
    if threshold.above is not None:
        return steps((None, OK), (threshold.above, past))
    return steps((None, past), (threshold.value, OK))


def any_is_bad(severity: Severity = Severity.CRITICAL) -> db.ThresholdsConfig:
    """For counts of things in trouble: zero is green, one or more is the severity."""
    return steps((None, OK), (1, SEVERITY_COLOUR[severity]))


def states(colours: dict[str, str], labels: dict[str, str] | None = None) -> list[model.ValueMapping]:
    """Text states shown with their colour (and a label where the stored word is terse)."""
    labels = labels or {}
    options = {
        state: model.ValueMappingResult(text=labels.get(state, state), color=colour, index=i)
        for i, (state, colour) in enumerate(colours.items())
    }
    return [model.ValueMap(options=options)]


def flags(on: tuple[str, str], off: tuple[str, str]) -> list[model.ValueMapping]:
    """A 0/1 field as words: (text, colour) for 1 and for 0."""
    return [
        model.ValueMap(
            options={
                "1": model.ValueMappingResult(text=on[0], color=on[1], index=0),
                "0": model.ValueMappingResult(text=off[0], color=off[1], index=1),
            }
        )
    ]
