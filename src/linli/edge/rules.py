"""Alert rules at the edge: limits with hysteresis and a for-duration, rates of change, silence.

Every rule has one state machine per device (or per port, for a port's field):

    ok -> pending -> firing -> resolved -> ok        (pending -> ok if it clears in time)

and each step is an AlertEvent with the value, the threshold and the time. A rule without
a for-duration goes from ok straight to firing. Times are the readings' own, so the engine
needs no clock but for silence, which `silent(now_ms)` checks.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from linli.catalog import alerttext
from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.i18n import LOCALES
from linli.catalog.lineprotocol import format_line
from linli.catalog.profile import Profile, Severity, Threshold

ALERT_MEASUREMENT = "alert"


class Condition(StrEnum):
    ABOVE = "above"  # value > limit; clears below limit - hysteresis
    BELOW = "below"  # value < limit; clears above limit + hysteresis
    RATE = "rate"  # |change per second| > limit; clears below limit - hysteresis
    SILENT = "silent"  # no value for more than `limit` seconds


State = AlertState


@dataclass(frozen=True)
class Rule:
    """One rule for one device kind; `site`/`device` narrow it (an override), `when` matches tags."""

    id: str
    kind: str
    field: str
    condition: Condition
    limit: float
    title: str
    severity: Severity = Severity.WARNING
    hysteresis: float = 0.0
    for_s: float = 0.0
    when: Mapping[str, str] = dataclasses.field(default_factory=dict)
    site: str | None = None
    device: str | None = None
    enabled: bool = True  # a disabled override switches its slot off for the devices it names

    def applies(self, tags: Mapping[str, str]) -> bool:
        if self.site is not None and tags.get("site") != self.site:
            return False
        if self.device is not None and tags.get("device") != self.device:
            return False
        return all(tags.get(k) == v for k, v in self.when.items())

    @property
    def slot(self) -> Slot:
        """What an override replaces: the same field, condition and tag match."""
        return slot_of(self.kind, self.field, self.condition, self.when)

    def scope(self) -> int:
        """How specific: a device's rule beats a site's, which beats the default."""
        return (self.site is not None) + 2 * (self.device is not None)


Slot = tuple[str, str, Condition, tuple[tuple[str, str], ...]]


def slot_of(kind: str, field: str, condition: Condition, when: Mapping[str, str]) -> Slot:
    return (kind, field, condition, tuple(sorted(when.items())))


def rule_id(kind: str, field: str, condition: Condition, when: Mapping[str, str]) -> str:
    """e.g. charger.temperature.above, fire_pressure.pressure.below.sprinkler"""
    return f"{kind}.{field}.{condition}" + "".join(f".{v}" for _, v in sorted(when.items()))


def profile_rules(profile: Profile) -> list[Rule]:
    """A profile's thresholds as rules."""
    return [threshold_rule(profile.kind, t) for t in profile.thresholds]


def threshold_rule(kind: str, t: Threshold) -> Rule:
    condition = Condition.ABOVE if t.above is not None else Condition.BELOW
    return Rule(
        id=rule_id(kind, t.field, condition, t.when),
        kind=kind,
        field=t.field,
        condition=condition,
        limit=t.value,
        title=t.title,
        severity=t.severity,
        hysteresis=t.hysteresis,
        for_s=t.for_s,
        when=dict(t.when),
    )


@dataclass(frozen=True)
class AlertEvent:
    """One step of one alert."""

    rule: str
    title: str
    severity: Severity
    state: State
    kind: str
    site: str
    device: str
    port: str | None
    value: float | None
    threshold: float
    time_ms: int
    since_ms: int  # when the condition began (for resolved: when it had fired)
    edge: str
    site_name: str = ""  # what people call the site and the device, for the notices
    device_name: str = ""
    site_name_en: str = ""  # the same in English, for whoever reads English
    device_name_en: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.site, self.device, self.port)

    def to_json(self) -> dict[str, object]:
        """The published form; its schema is in docs/alert-event.schema.json."""
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "title": self.title,
            "severity": str(self.severity),
            "state": str(self.state),
            "kind": self.kind,
            "site": self.site,
            "device": self.device,
            "port": self.port,
            "value": self.value,
            "threshold": self.threshold,
            "time_ms": self.time_ms,
            "since_ms": self.since_ms,
            "edge": self.edge,
            "site_name": self.site_name,
            "device_name": self.device_name,
            "site_name_en": self.site_name_en,
            "device_name_en": self.device_name_en,
        }

    def to_line(self) -> str:
        """The stored form: one point in `alert`, for dashboard annotations."""
        tags = {"site": self.site, "device": self.device, "kind": self.kind, "rule": self.rule}
        tags["severity"] = str(self.severity)
        if self.port is not None:
            tags["port"] = self.port
        fields: dict[str, bool | int | float | str] = {
            "state": str(self.state),
            "title": self.title,
            "threshold": self.threshold,
            "since_ms": self.since_ms,
            "fingerprint": self.fingerprint,
            "edge": self.edge,
        }
        # What a person reads on the dashboards' annotations, one text per locale.
        message = AlertMessage.model_validate(self.to_json())
        for locale in LOCALES:
            fields[alerttext.LABEL_FIELDS[locale]] = alerttext.label(message, locale)
        if self.value is not None:
            fields["value"] = self.value
        return format_line(ALERT_MEASUREMENT, tags, fields, self.time_ms)


@dataclass
class _Track:
    state: State = State.OK
    since_ms: int = 0
    last_value: float | None = None
    last_ms: int = 0


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


# Tags mappings remembered by identity; more than this and the memory starts afresh (a caller
# that makes a new mapping per reading must not grow it without bound).
MAX_KNOWN_TAGS = 100_000


class RuleEngine:
    """Evaluates the rules of every device kind against each reading."""

    def __init__(self, rules: Iterable[Rule], edge: str) -> None:
        self.edge = edge
        self.rules: dict[str, list[Rule]] = {}
        for rule in rules:
            self.rules.setdefault(rule.kind, []).append(rule)
        self._tracks: dict[tuple[str, str, str, str | None], _Track] = {}
        self._applicable: dict[tuple[str, tuple[tuple[str, str], ...]], list[Rule]] = {}
        # The same, by the identity of a tags mapping a connector passes with every reading:
        # sorting a device's tags at each of its readings was a fifth of the rules' cost. The
        # mapping is kept with its rules, so its id is not reused while it is remembered.
        self._by_tags: dict[tuple[str, int], tuple[Mapping[str, str], list[Rule]]] = {}
        # Last reading time of each (rule, series) for silence rules, with its identity.
        self._seen: dict[tuple[str, str, str, str | None], tuple[Rule, int]] = {}

    def rules_for(self, kind: str, tags: Mapping[str, str]) -> list[Rule]:
        """The rules that hold for one device: the most specific one of each slot."""
        # A device's tags never change, so neither do its rules: worked out once per device.
        known = self._by_tags.get((kind, id(tags)))
        if known is not None and known[0] is tags:
            return known[1]
        key = (kind, tuple(sorted(tags.items())))
        cached = self._applicable.get(key)
        if cached is None:
            cached = self._applicable[key] = self._select(kind, tags)
        if len(self._by_tags) >= MAX_KNOWN_TAGS:
            self._by_tags.clear()
        self._by_tags[kind, id(tags)] = (tags, cached)
        return cached

    def _select(self, kind: str, tags: Mapping[str, str]) -> list[Rule]:
        best: dict[object, Rule] = {}
        for rule in self.rules.get(kind, []):
            if rule.applies(tags):
                current = best.get(rule.slot)
                # At equal scope the later rule wins: the config's own come after the profile's.
                if current is None or rule.scope() >= current.scope():
                    best[rule.slot] = rule
        return [rule for rule in best.values() if rule.enabled]

    def observe(
        self,
        kind: str,
        tags: Mapping[str, str],
        values: Mapping[str, object],
        time_ms: int,
        port: str | None = None,
    ) -> list[AlertEvent]:
        """The events one reading causes (most readings cause none)."""
        out = []
        site, device = tags.get("site", ""), tags.get("device", "")
        for rule in self.rules_for(kind, tags):
            if rule.field not in values:
                continue
            key = (rule.id, site, device, port)
            if rule.condition is Condition.SILENT:
                track = self._tracks.get(key)
                self._seen[key] = (rule, time_ms)
                if track is not None and track.state is State.FIRING:
                    out.append(self._step(rule, key, track, State.RESOLVED, value=None, time_ms=time_ms))
                continue
            value = _number(values[rule.field])
            if value is None:
                continue
            event = self._evaluate(rule, key, value, time_ms)
            if event is not None:
                out.append(event)
        return out

    def state_of(self, rule: str, site: str, device: str, port: str | None) -> State:
        """One series' state now (OK when the rule never saw it)."""
        track = self._tracks.get((rule, site, device, port))
        return State.OK if track is None else track.state

    def states(self) -> Counter[tuple[str, str]]:
        """How many series each rule has pending or firing now: (rule, state) -> count."""
        out: Counter[tuple[str, str]] = Counter()
        for key, track in list(self._tracks.items()):
            if track.state is not State.OK:
                out[key[0], str(track.state)] += 1
        return out

    def silent(self, now_ms: int) -> list[AlertEvent]:
        """Silence rules whose device said nothing for longer than their limit."""
        out = []
        for key, (rule, last_ms) in self._seen.items():
            track = self._track(key)
            if track.state is State.OK and now_ms - last_ms > rule.limit * 1000:
                track.since_ms = last_ms
                silence_s = (now_ms - last_ms) / 1000
                out.append(self._step(rule, key, track, State.FIRING, value=silence_s, time_ms=now_ms))
        return out

    def _track(self, key: tuple[str, str, str, str | None]) -> _Track:
        """The series' state, made on first use (not setdefault: that builds one at every call)."""
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track()
        return track

    def _evaluate(
        self, rule: Rule, key: tuple[str, str, str, str | None], value: float, time_ms: int
    ) -> AlertEvent | None:
        track = self._track(key)
        measured = value
        if rule.condition is Condition.RATE:
            previous, previous_ms = track.last_value, track.last_ms
            track.last_value, track.last_ms = value, time_ms
            if previous is None or time_ms <= previous_ms:
                return None
            measured = abs(value - previous) / ((time_ms - previous_ms) / 1000)
        breached, cleared = _judge(rule, measured)
        step: State | None = None
        if track.state is State.OK and breached:
            track.since_ms = time_ms
            step = State.PENDING if rule.for_s > 0 else State.FIRING
        elif track.state is State.PENDING:
            if not breached:
                step = State.OK
            elif time_ms - track.since_ms >= rule.for_s * 1000:
                step = State.FIRING
        elif track.state is State.FIRING and cleared:
            step = State.RESOLVED
        return None if step is None else self._step(rule, key, track, step, value=measured, time_ms=time_ms)

    def _step(
        self,
        rule: Rule,
        key: tuple[str, str, str, str | None],
        track: _Track,
        state: State,
        *,
        value: float | None,
        time_ms: int,
    ) -> AlertEvent:
        # A resolved alert is over: the track starts again from ok.
        track.state = State.OK if state in (State.RESOLVED, State.OK) else state
        _, site, device, port = key
        return AlertEvent(
            rule=rule.id,
            title=rule.title,
            severity=rule.severity,
            state=state,
            kind=rule.kind,
            site=site,
            device=device,
            port=port,
            value=value,
            threshold=rule.limit,
            time_ms=time_ms,
            since_ms=track.since_ms,
            edge=self.edge,
        )


def _judge(rule: Rule, value: float) -> tuple[bool, bool]:
    """(past the limit, back on the safe side by the hysteresis)."""
    if rule.condition is Condition.BELOW:
        return value < rule.limit, value > rule.limit + rule.hysteresis
    return value > rule.limit, value < rule.limit - rule.hysteresis
