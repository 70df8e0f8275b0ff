"""The edge's alert state machine, step by step, with the readings' own times as the clock."""

from __future__ import annotations

from linli.catalog.alerts import AlertMessage
from linli.catalog.profile import Severity, get_profile
from linli.edge.rules import AlertEvent, Condition, Rule, RuleEngine, State, profile_rules

STATION = {"site": "ronghua-1", "device": "station-1"}


def steps(events: list[AlertEvent]) -> list[tuple[str, float | None]]:
    return [(str(e.state), e.value) for e in events]


def feed(
    engine: RuleEngine, field: str, values: list[float], *, every_ms: int = 1000, port: str | None = "1"
) -> list[AlertEvent]:
    out = []
    for i, v in enumerate(values):
        out += engine.observe("charger", STATION, {field: v}, 1_000_000 + i * every_ms, port=port)
    return out


def test_above_with_hysteresis_fires_once_and_resolves_once() -> None:
    engine = RuleEngine(profile_rules(get_profile("charger")), edge="e1")
    # 90 degC with 5 K hysteresis: hovering at 89-91 fires once; only below 85 resolves.
    events = feed(engine, "temperature", [80, 91, 89, 91.5, 86, 84.9, 84, 92])
    assert steps(events) == [("firing", 91), ("resolved", 84.9), ("firing", 92)]
    first = events[0]
    assert (first.rule, first.severity, first.threshold, first.port) == (
        "charger.temperature.above",
        Severity.CRITICAL,
        90,
        "1",
    )
    assert events[1].since_ms == first.time_ms  # resolved says when it had fired
    assert events[0].fingerprint == events[1].fingerprint != events[2].fingerprint.swapcase()


def test_a_for_duration_holds_the_alert_pending_and_a_short_dip_never_fires() -> None:
    rule = Rule("p.low", "charger", "voltage", Condition.BELOW, 200, "Low mains", hysteresis=5, for_s=3)
    engine = RuleEngine([rule], edge="e1")
    events = feed(engine, "voltage", [220, 190, 195, 221, 190, 190, 190, 190, 204, 206], port=None)
    assert steps(events) == [
        ("pending", 190),  # the dip starts
        ("ok", 221),  # over before 3 s: never fired
        ("pending", 190),
        ("firing", 190),  # 3 s later, still low
        ("resolved", 206),  # 204 is not yet 5 V clear
    ]
    assert events[3].since_ms == events[2].time_ms


def test_rate_of_change_per_second() -> None:
    rule = Rule("c.rise", "charger", "temperature", Condition.RATE, 0.5, "Heating fast", hysteresis=0.2)
    engine = RuleEngine([rule], edge="e1")
    # Readings 2 s apart: +0.4/s, +1.0/s (fires), +0.5/s (still past the cleared mark), +0.1/s resolves.
    events = feed(engine, "temperature", [30, 30.8, 32.8, 33.8, 34.0], every_ms=2000)
    assert [(state, round(v or 0, 6)) for state, v in steps(events)] == [("firing", 1.0), ("resolved", 0.1)]


def test_silence_fires_after_its_limit_and_resolves_when_data_returns() -> None:
    rule = Rule("c.silent", "charger", "voltage", Condition.SILENT, 60, "No data")
    engine = RuleEngine([rule], edge="e1")
    assert engine.observe("charger", STATION, {"voltage": 230}, 0) == []
    assert engine.silent(59_000) == []
    [fired] = engine.silent(61_000)
    assert (fired.state, fired.value, fired.since_ms) == (State.FIRING, 61.0, 0)
    assert engine.silent(120_000) == []  # once, not at every check
    [resolved] = engine.observe("charger", STATION, {"voltage": 229}, 125_000)
    assert resolved.state is State.RESOLVED


def test_overrides_by_site_and_device_replace_the_default_and_tags_select_rules() -> None:
    default = profile_rules(get_profile("charger"))
    site = Rule(
        "charger.temperature.above", "charger", "temperature", Condition.ABOVE, 80, "Hot", site="ronghua-1"
    )
    device = Rule(
        "charger.temperature.above", "charger", "temperature", Condition.ABOVE, 70, "Hot", device="station-9"
    )
    engine = RuleEngine([*default, site, device], edge="e1")
    limit = {r.field: r.limit for r in engine.rules_for("charger", STATION)}
    assert limit["temperature"] == 80
    assert {r.field: r.limit for r in engine.rules_for("charger", {**STATION, "device": "station-9"})}[
        "temperature"
    ] == 70
    assert {r.field: r.limit for r in engine.rules_for("charger", {"site": "x", "device": "y"})}[
        "temperature"
    ] == 90
    fire = RuleEngine(profile_rules(get_profile("fire_pressure")), edge="e1")
    sprinkler = [
        r.limit for r in fire.rules_for("fire_pressure", {"system": "sprinkler"}) if r.field == "pressure"
    ]
    assert sprinkler == [0.10]


def test_flags_are_numbers_and_the_stored_event_is_one_alert_point() -> None:
    engine = RuleEngine(profile_rules(get_profile("charger")), edge="e1")
    [event] = engine.observe("charger", STATION, {"smoke_alarm": 1, "state": "charging"}, 5000)
    assert event.rule == "charger.smoke_alarm.above"
    line = event.to_line()
    assert line.startswith(
        "alert,device=station-1,kind=charger,rule=charger.smoke_alarm.above,severity=critical,site=ronghua-1 "
    )
    assert 'state="firing"' in line
    assert line.endswith(" 5000")
    # What a person reads on the annotations: the rule's title and where, in each language.
    assert 'label="ronghua-1 充电桩 station-1：充电柜内有烟雾"' in line
    assert 'label_en="Smoke in the charging cabinet at ronghua-1, Charging station station-1"' in line
    message = AlertMessage.model_validate(event.to_json())  # the published form meets its schema
    assert (message.fingerprint, message.state, message.port) == (event.fingerprint, "firing", None)


def test_a_config_rule_for_every_device_replaces_the_profile_default() -> None:
    """A config rule without site or device has the default's scope: being later, it wins."""
    override = Rule("charger.temperature.above", "charger", "temperature", Condition.ABOVE, 5, "Warm")
    engine = RuleEngine([*profile_rules(get_profile("charger")), override], edge="e1")
    assert {r.field: r.limit for r in engine.rules_for("charger", STATION)}["temperature"] == 5
    [event] = engine.observe("charger", STATION, {"temperature": 10.0}, 1000, "1")
    assert (event.state, event.threshold) == ("firing", 5)
