"""Alerts and safety interlocks at the edge.

Every reading goes through the rule engine; each alert step is stored (measurement
`alert`, for dashboard annotations) and published to the central broker at QoS 1 on
`{topic}/{agent}/{site}/{device}`, where the cloud notifier takes it. The agent's own
liveness is a retained "online" on `{status_topic}/{agent}`, and its last will "offline";
a deliberate stop says "stopped", which the notifier does not page anyone for.

The state of every firing alert is published again every `resend_s`, and each resolution
at the next `RESOLVED_RESENDS` of those (as Prometheus re-sends to Alertmanager): an
event lost between the broker and the notifiers (one that died holding it) is told late,
not never. The notifier takes an episode's events once, in whatever order they come.

Interlocks act on the device itself, in the poll that saw the breach, whether or not the
uplink is there; each action is an alert event too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import paho.mqtt.client as paho

from linli.catalog.alerts import EDGE_OFFLINE, EDGE_ONLINE, EDGE_STOPPED
from linli.catalog.mqttclient import Will, make_client
from linli.catalog.profile import Profile, Severity, get_profile
from linli.catalog.registers import Value
from linli.edge.config import EdgeConfig, InterlockConfig, RuleConfig
from linli.edge.rules import (
    AlertEvent,
    Condition,
    Rule,
    RuleEngine,
    Slot,
    State,
    profile_rules,
    rule_id,
    slot_of,
)

log = logging.getLogger(__name__)

# How often silence rules are checked.
SILENCE_CHECK_S = 1.0
# How many announcements a resolution is part of after its own event.
RESOLVED_RESENDS = 10


def configured_rules(config: EdgeConfig) -> list[Rule]:
    """The profiles' default rules for the kinds in use, then the config's own."""
    kinds = {device.profile for _, device in config.devices()}
    rules = [rule for kind in sorted(kinds) for rule in profile_rules(get_profile(kind))]
    defaults = {r.slot: r for r in rules}
    rules.extend(_rule(c, defaults) for c in config.rules)
    return rules


def _rule(c: RuleConfig, defaults: Mapping[Slot, Rule]) -> Rule:
    """A config rule; what it leaves out comes from the default it replaces, if any."""
    given = ((Condition.ABOVE, c.above), (Condition.BELOW, c.below), (Condition.RATE, c.rate_above))
    condition, limit = next(
        ((cond, v) for cond, v in given if v is not None), (Condition.SILENT, c.silent_for)
    )
    base = defaults.get(slot_of(c.kind, c.field, condition, c.when))
    return Rule(
        id=base.id if base else rule_id(c.kind, c.field, condition, c.when),
        kind=c.kind,
        field=c.field,
        condition=condition,
        limit=limit if limit is not None else (base.limit if base else 0.0),
        title=c.title or (base.title if base else f"{c.field} {condition} {limit:g}" if limit else c.field),
        severity=c.severity or (base.severity if base else Severity.WARNING),
        hysteresis=c.hysteresis if c.hysteresis is not None else (base.hysteresis if base else 0.0),
        for_s=c.for_s if c.for_s is not None else (base.for_s if base else 0.0),
        when=dict(c.when),
        site=c.site,
        device=c.device,
        enabled=c.enabled,
    )


class AlertPublisher:
    """A paho client of its own on the central broker: alert events out, the last will set."""

    def __init__(self, config: EdgeConfig) -> None:
        a, broker = config.alerts, config.alerts_broker()
        self.host = broker.host if broker else None
        self.port = broker.port if broker else a.port
        self.topic = a.topic
        self.status = f"{a.status_topic}/{config.agent.name}"
        self.agent = config.agent.name
        self.enabled = a.publish and broker is not None
        self.published = 0
        self.resend_s = a.resend_s
        self._client: paho.Client | None = None
        if not self.enabled or broker is None:
            return
        # The broker says "offline" for the agent when it goes without a goodbye.
        will = Will(self.status, EDGE_OFFLINE)
        # paho's queue is unbounded (max_queued_messages 0): while the uplink is down, events wait
        # in memory.
        client = make_client(broker, f"linli-{self.agent}-alerts", persistent=True, will=will)
        client.on_connect = self._on_connect
        self._client = client

    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        client.publish(self.status, EDGE_ONLINE, qos=1, retain=True)
        log.info("alerts: connected to %s:%s", self.host, self.port)

    def start(self) -> None:
        if self._client is not None:
            self._client.loop_start()

    def publish(self, event: AlertEvent) -> None:
        if self._client is None:
            return
        topic = f"{self.topic}/{self.agent}/{event.site}/{event.device}"
        self._client.publish(topic, json.dumps(event.to_json(), ensure_ascii=False), qos=1)
        self.published += 1

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def stop(self) -> None:
        """Say goodbye: "stopped" (a planned stop, not an outage), then disconnect (no last will)."""
        if self._client is None:
            return
        info = self._client.publish(self.status, EDGE_STOPPED, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(2.0)
        self._client.disconnect()
        self._client.loop_stop()


class Alerting:
    """The rule engine fed by the connectors; events stored through `emit` and published."""

    def __init__(self, config: EdgeConfig, emit: Callable[[list[str]], None]) -> None:
        self.engine = RuleEngine(configured_rules(config), edge=config.agent.name)
        self.publisher = AlertPublisher(config)
        self.emit = emit
        self.events: list[AlertEvent] = []  # the most recent, for the view and the tests
        # (site, device) -> what people call them, so that a notice names what they know
        self.names = {(s.id, d.id): (s, d) for s in config.sites for d in s.devices}
        self.kinds = set(self.engine.rules)
        # fingerprint -> its last firing or resolved event, and how often a resolution is still told
        self.standing: dict[str, tuple[AlertEvent, int]] = {}
        self.rounds = 0  # announcement rounds made: proof to a watcher that the timer fired

    def observe(
        self,
        kind: str,
        tags: Mapping[str, str],
        values: Mapping[str, object],
        time_ms: int,
        port: str | None = None,
    ) -> None:
        if kind in self.kinds:
            self.record(self.engine.observe(kind, tags, values, time_ms, port))

    def record(self, events: list[AlertEvent]) -> None:
        if not events:
            return
        events = [self._named(e) for e in events]
        for event in events:
            where = f"{event.site}/{event.device}" + (f" port {event.port}" if event.port else "")
            if event.state in (State.FIRING, State.RESOLVED):
                level = logging.WARNING if event.state is State.FIRING else logging.INFO
                log.log(
                    level,
                    "alert %s: %s: %s (value %s, limit %g)",
                    event.state,
                    where,
                    event.title,
                    event.value,
                    event.threshold,
                )
                self.standing[event.fingerprint] = (event, RESOLVED_RESENDS)
            self.publisher.publish(event)
        self.events = (self.events + events)[-1000:]
        self.emit([e.to_line() for e in events])

    def _named(self, event: AlertEvent) -> AlertEvent:
        named = self.names.get((event.site, event.device))
        if named is None:
            return event
        site, device = named
        return dataclasses.replace(
            event,
            site_name=site.name,
            device_name=device.name,
            site_name_en=site.name_en,
            device_name_en=device.name_en,
        )

    def announce(self) -> int:
        """Publish every firing alert's last event again, and the resolutions still due; how many."""
        self.rounds += 1
        sent = 0
        for fp, (event, left) in list(self.standing.items()):
            self.publisher.publish(event)
            sent += 1
            if event.state is State.RESOLVED:
                if left <= 1:
                    del self.standing[fp]
                else:
                    self.standing[fp] = (event, left - 1)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        self.publisher.start()
        resend_s = self.publisher.resend_s
        wait_s = min(SILENCE_CHECK_S, resend_s or SILENCE_CHECK_S)
        announced = time.monotonic()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait_s)
                self.record(self.engine.silent(int(time.time() * 1000)))
                # While the uplink is down the events wait in the client already: no copies.
                if resend_s and time.monotonic() - announced >= resend_s and self.publisher.connected:
                    announced = time.monotonic()
                    self.announce()
        finally:
            await asyncio.to_thread(self.publisher.stop)


@dataclass(frozen=True)
class Stop:
    """An interlock's action: write 1 to these coils, and the event saying why."""

    coils: list[int]
    event: AlertEvent


class Interlock:
    """One configured interlock on one device: latched per port until the value is safe again."""

    def __init__(
        self, config: InterlockConfig, profile: Profile, *, site: str, device: str, ports: int, edge: str
    ) -> None:
        assert profile.modbus is not None
        self.config = config
        self.site, self.device, self.edge = site, device, edge
        group = profile.modbus.group
        per_port = group is not None and any(p.field == config.field for p in group.points)
        group_commands = {c.name: c for c in group.commands} if group else {}
        device_commands = {c.name: c for c in profile.modbus.commands}
        if config.command in group_commands:
            assert group is not None
            base = group_commands[config.command].address
            self.coils = {str(n): base + (n - 1) * group.stride for n in range(1, ports + 1)}
        else:
            self.coils = {"": device_commands[config.command].address}
        self.per_port = per_port
        self.rule = f"interlock.{profile.kind}.{config.field}"
        self._latched: set[str | None] = set()

    def release(self, port: str | None) -> None:
        """Forget an action that did not go through, so the next poll tries again."""
        self._latched.discard(port)

    def applies(self, site: str, device: str) -> bool:
        c = self.config
        return (c.site is None or c.site == site) and (c.device is None or c.device == device)

    def check(self, rows: Mapping[int | None, Mapping[str, Value]], time_ms: int) -> list[Stop]:
        """What to stop now, from one poll's rows (channel -> fields)."""
        out = []
        for channel, fields in rows.items():
            value = fields.get(self.config.field)
            if not isinstance(value, int | float):
                continue
            port = str(channel) if channel is not None else None
            breached, safe = self._judge(float(value))
            if breached and port not in self._latched:
                self._latched.add(port)
                coils = (
                    [self.coils[port]] if self.per_port and port in self.coils else list(self.coils.values())
                )
                out.append(Stop(coils, self._event(State.FIRING, port, float(value), time_ms)))
            elif safe and port in self._latched:
                self._latched.discard(port)
                out.append(Stop([], self._event(State.RESOLVED, port, float(value), time_ms)))
        return out

    def _judge(self, value: float) -> tuple[bool, bool]:
        c = self.config
        if c.above is not None:
            return value > c.above, value <= c.above - c.hysteresis
        assert c.below is not None
        return value < c.below, value >= c.below + c.hysteresis

    def _event(self, state: State, port: str | None, value: float, time_ms: int) -> AlertEvent:
        c = self.config
        limit = c.above if c.above is not None else c.below
        assert limit is not None
        what = f"port {port}" if self.per_port and port else "every port"
        title = f"Interlock: {c.command} {what} ({c.field} {value:g}, limit {limit:g})"
        return AlertEvent(
            rule=self.rule,
            title=title if state is State.FIRING else f"Interlock cleared: {c.field} back to {value:g}",
            severity=Severity.CRITICAL,
            state=state,
            kind=c.kind,
            site=self.site,
            device=self.device,
            port=port,
            value=value,
            threshold=limit,
            time_ms=time_ms,
            since_ms=time_ms,
            edge=self.edge,
        )
