"""What is wrong right now: one count per rule, from each device's latest values.

The limits are the profiles' own thresholds, the same ones the edge's alert rules use; a
few rules are states rather than limits (a faulted port, a pump in fault, a driver's
alarm, a device offline). Each query counts the devices breaking its rule and returns no
row when none does.
"""

from __future__ import annotations

from dataclasses import dataclass

from linli.catalog.mqttspec import FieldType
from linli.catalog.profile import Profile, Severity, Threshold, builtin_profiles
from linli.dashboards.influxql import Select
from linli.dashboards.words import t

# A latest value older than this is not "now" (the slowest heartbeat is a minute).
RECENT = "time > now() - 5m"
# An alarm sent as an event stays raised until its clearing event, however long ago.
EVENTS = "time > now() - 1d"


@dataclass(frozen=True)
class Rule:
    """One rule: its title, how bad a breach is, the query counting breaches, and its catalog key."""

    title: str
    severity: Severity
    count: Select
    key: str

    @property
    def name(self) -> str:
        """The rule as people on the screen read it, in the build's locale."""
        return t(f"rule.{self.key}")


def _identity(profile: Profile, field: str) -> tuple[str, ...]:
    """The tags naming one instance of a field: a device, or a device's port."""
    group = profile.modbus.group if profile.modbus else None
    if group is not None and any(p.field == field for p in group.points):
        return ("site", "device", group.tag)
    return ("site", "device")


def _is_bool(profile: Profile, field: str) -> bool:
    if profile.mqtt is not None:
        return any(m.stored_fields().get(field) is FieldType.BOOL for m in profile.mqtt.messages)
    return profile.modbus is not None and any(f.field == field for f in profile.modbus.faults)


def _count(
    profile: Profile, field: str, op: str, value: float | bool, when: dict[str, str], *, window: str = RECENT
) -> Select:
    latest = (
        Select(profile.measurement)
        .select(field, "last", alias="value")
        .tags_match(when)
        .during(window)
        .by(*_identity(profile, field))
    )
    return Select.over(latest).select("value", "count", alias="devices").field_is("value", op, value)


def threshold_rule(profile: Profile, threshold: Threshold) -> Rule:
    """A profile limit as a rule."""
    value: float | bool
    if _is_bool(profile, threshold.field):
        op, value = "=", True  # a flag: past any limit means set
    elif threshold.above is not None:
        op, value = ">", threshold.above
    else:
        op, value = "<", threshold.value
    select = _count(profile, threshold.field, op, value, threshold.when)
    key = ".".join([profile.measurement, threshold.field, *threshold.when.values()])
    return Rule(threshold.title, threshold.severity, select, key)


def rules() -> list[Rule]:
    """Every rule of the district, most severe first."""
    profiles = builtin_profiles()
    out = [threshold_rule(p, t) for p in profiles.values() for t in p.thresholds]
    charger, pump, truck, rescue = (profiles[k] for k in ("charger", "fire_pump", "truck", "rescue_point"))
    out += [
        Rule(
            "Charger port faulted",
            Severity.WARNING,
            _count(charger, "state", "=", 3, {}),
            "charger.port_faulted",
        ),
        Rule("Fire pump fault", Severity.CRITICAL, _count(pump, "state", "=", 2, {}), "fire_pump.state"),
        Rule(
            "Truck driver alarm",
            Severity.WARNING,
            _count(truck, "active", "=", True, {}, window=EVENTS),
            "truck.driver_alarm",
        ),
        Rule(
            "Rescue point equipment missing",
            Severity.WARNING,
            _count(rescue, "equipment_present", "=", False, {}),
            "rescue_point.equipment_missing",
        ),
    ]
    offline = (
        Select("health")
        .select("online", "last", alias="value")
        .tag_not("kind", "agent")
        .during(RECENT)
        .by("site", "device", "kind")
    )
    out.append(
        Rule(
            "Device offline",
            Severity.WARNING,
            Select.over(offline).select("value", "count", alias="devices").field_is("value", "=", 0),
            "device_offline",
        )
    )
    return sorted(out, key=lambda r: r.severity != Severity.CRITICAL)
