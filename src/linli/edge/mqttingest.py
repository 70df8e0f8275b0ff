"""What one MQTT message becomes: its device found by topic, its payload validated, its line.

A message that cannot be stored is counted per device and reason, logged once, and
republished with its reason to the dead-letter topic (`_reject`). Each device's health
points are written from here too: the state they report is kept as messages arrive.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from linli.catalog.confirm import Confirmer
from linli.catalog.deadletter import dead_letter_envelope
from linli.catalog.lineprotocol import series_key
from linli.catalog.payloads import CompiledMessage, PayloadError
from linli.catalog.profile import Profile, get_profile
from linli.catalog.ratelog import RateLimitedLog
from linli.edge.config import EdgeConfig, MqttConfig
from linli.edge.health import HealthReport, health_key, health_line
from linli.edge.topics import Route, TopicRouter

# The connector's one logger, whichever of its modules logs: operators filter on it.
log = logging.getLogger("linli.edge.mqtt")

# kind, tags, field values, time (ms), port: for the alert rules.
Observe = Callable[[str, Mapping[str, str], Mapping[str, Any], int, str | None], None]

# A device is offline once it missed this many heartbeats.
MISSED_HEARTBEATS = 3
# Rejected retained payloads remembered across restarts (one per topic), so a broker's
# replay of the same garbage is not counted again at every start.
MAX_RETAINED_REJECTS = 10_000
RETAINED_KEY = "retained_reject:"
# Topics resolved to a device are remembered; more than this and the memory starts afresh.
MAX_CACHED_TOPICS = 100_000


@dataclass
class MqttDevice:
    """What the agent knows about one MQTT device."""

    site: str
    device: str
    profile: Profile
    heartbeat_s: float
    tags: dict[str, str]
    online: bool = False
    status: str = ""
    last_seen_mono: float = 0.0
    last_seen_ms: int = 0
    last_reading_ms: int = 0  # when its last reading came (not a status message)
    messages: int = 0
    latency_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    confirmers: dict[str, Confirmer] = field(default_factory=dict)
    series: dict[tuple[str, ...], str] = field(default_factory=dict)
    health_series: str = ""
    # What its last health point said (online, errors), and when it was written.
    reported: HealthReport = field(default_factory=HealthReport)

    @property
    def name(self) -> str:
        return f"{self.site}/{self.device}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one topic's messages go: resolved once per topic, then looked up."""

    route: Route
    dev: MqttDevice
    extra: dict[str, str]  # topic levels that become tags, besides site and device
    compiled: CompiledMessage | None  # None for the status topic
    series: str | None  # the series key, when no payload field is a tag
    kind: str  # the device's kind, for the alert rules


class MqttIngest:
    """Handles one message at a time on the asyncio side, where all device state lives."""

    def __init__(
        self,
        config: EdgeConfig,
        memory: Mapping[str, str],
        remember: Callable[[str, str], None] | None,
    ) -> None:
        """`memory` is what `remember` kept in earlier runs (here: the retained payloads already rejected)."""
        if config.mqtt is None:
            raise ValueError("the config has no [mqtt] table")
        self.settings: MqttConfig = config.mqtt
        self.agent = config.agent.name
        self._max_ahead_ms = int(self.settings.max_clock_ahead * 1000)
        self._max_payload = self.settings.max_payload
        self.devices: dict[tuple[str, str, str], MqttDevice] = {}
        kinds: dict[str, Profile] = {}
        for site, device in config.devices():
            profile = get_profile(device.profile)
            if profile.mqtt is None:
                continue
            kinds[profile.kind] = profile
            self.devices[(profile.kind, site.id, device.id)] = MqttDevice(
                site=site.id,
                device=device.id,
                profile=profile,
                heartbeat_s=device.heartbeat or profile.mqtt.heartbeat_s,
                tags={"site": site.id, "device": device.id, **device.tags},
                health_series=health_key({"site": site.id, "device": device.id, "kind": profile.kind}),
            )
        self.router = TopicRouter(list(kinds.values()))
        self._remember = remember or (lambda _k, _v: None)
        self._retained_rejects = {
            k.removeprefix(RETAINED_KEY): v for k, v in memory.items() if k.startswith(RETAINED_KEY)
        }
        self.compiled = {
            (p.kind, m.name): CompiledMessage(m)
            for p in kinds.values()
            for m in (p.mqtt.messages if p.mqtt else [])
        }
        self.received = 0
        self.stored = 0
        self.dead_letters: Counter[str] = Counter()
        self.ignored_retained = 0
        self._ratelog = RateLimitedLog(log)
        self._lines: list[str] = []
        self._targets: dict[str, Target] = {}
        self._client: paho.Client | None = None
        # The alert rules see the messages of these kinds (set by the agent).
        self.observe: Observe | None = None
        self.observed_kinds: set[str] = set()

    def handle(self, topic: str, payload: bytes, received_ms: int, *, retained: bool = False) -> str | None:
        """The line for one message, or None when it was a status update or rejected."""
        self.received += 1
        target = self._targets.get(topic)
        if target is None:
            target = self._resolve(topic, payload, received_ms, retained=retained)
            if target is None:
                return None
        dev = target.dev
        if len(payload) > self._max_payload:
            detail = f"{len(payload)} bytes, limit {self._max_payload}"
            self._reject("too_large", detail, topic, payload, dev, received_ms, retained=retained)
            return None
        compiled = target.compiled
        if compiled is None:
            self._status(dev, target.route, topic, payload, received_ms, retained=retained)
            return None
        try:
            values = compiled.validate(payload)
        except PayloadError as exc:
            self._reject(exc.reason, str(exc), topic, payload, dev, received_ms, retained=retained)
            return None
        time_ms = compiled.time_ms(values) or received_ms
        if time_ms > received_ms + self._max_ahead_ms:
            ahead, limit = (time_ms - received_ms) / 1000, self._max_ahead_ms // 1000
            detail = f"device time is {ahead:.0f}s ahead of the agent's clock (limit {limit}s)"
            self._reject("bad_time", detail, topic, payload, dev, received_ms, retained=retained)
            return None
        if self.observe is not None and target.kind in self.observed_kinds:
            self.observe(target.kind, dev.tags, compiled.fields(values), time_ms, None)
        if compiled.spec.confirm is None:
            field_set = compiled.field_set_of(values)
        else:
            field_set = self._confirmed(dev, compiled, values, time_ms)
        self._seen(dev, received_ms, time_ms)
        dev.last_reading_ms = received_ms
        key = target.series
        if key is None:
            tags = compiled.tags(values)
            key_parts = (topic, *tags.values())
            key = dev.series.get(key_parts)
            if key is None:
                tagset = {**dev.tags, **target.extra, **tags}
                key = dev.series[key_parts] = series_key(dev.profile.measurement, tagset)
        self.stored += 1
        return f"{key} {field_set} {time_ms}"

    @staticmethod
    def _confirmed(dev: MqttDevice, compiled: CompiledMessage, values: Any, time_ms: int) -> str:
        """The field set of a message whose profile confirms a state: with what its confirmer says."""
        confirm = compiled.spec.confirm
        assert confirm is not None
        fields = compiled.fields(values)
        confirmer = dev.confirmers.get(compiled.spec.name)
        if confirmer is None:
            confirmer = dev.confirmers[compiled.spec.name] = Confirmer(confirm)
        confirmed, started = confirmer.observe(time_ms / 1000, fields)
        fields[confirm.confirmed_field] = confirmed
        fields[confirm.count_field] = started
        return compiled.field_set(fields)

    def _resolve(self, topic: str, payload: bytes, received_ms: int, *, retained: bool) -> Target | None:
        """The target of a topic not seen before; None (after rejecting it) when there is none."""
        matched = self.router.match(topic)
        if matched is None:
            detail = "no device kind publishes on this topic"
            self._reject("unknown_topic", detail, topic, payload, None, received_ms, retained=retained)
            return None
        route, levels = matched
        dev = self.devices.get((route.profile.kind, levels["site"], levels["device"]))
        if dev is None and retained:
            # The broker replays retained messages (the status of devices removed from the
            # config long ago, or of another agent's devices) on every subscribe: counted, not
            # dead-lettered at each start.
            self.ignored_retained += 1
            return None
        if dev is None:
            detail = (
                f"{route.profile.kind} '{levels['site']}/{levels['device']}' is not in the agent's config"
            )
            self._reject("unknown_device", detail, topic, payload, None, received_ms)
            return None
        message = route.message
        compiled = self.compiled[(route.profile.kind, message.name)] if message is not None else None
        extra = {k: v for k, v in levels.items() if k not in ("site", "device")}
        series = None
        if compiled is not None and not compiled.has_tags:
            series = series_key(dev.profile.measurement, {**dev.tags, **extra})
        if len(self._targets) >= MAX_CACHED_TOPICS:
            self._targets.clear()
        target = self._targets[topic] = Target(route, dev, extra, compiled, series, dev.profile.kind)
        return target

    def _seen_retained(self, topic: str, payload: bytes) -> bool:
        """True if this retained payload was rejected before; else remember it was."""
        digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
        if self._retained_rejects.get(topic) == digest:
            return True
        if topic in self._retained_rejects or len(self._retained_rejects) < MAX_RETAINED_REJECTS:
            self._retained_rejects[topic] = digest
            self._remember(RETAINED_KEY + topic, digest)
        return False

    def _seen(self, dev: MqttDevice, received_ms: int, time_ms: int) -> None:
        dev.messages += 1
        dev.last_seen_mono = time.monotonic()
        dev.last_seen_ms = received_ms
        dev.latency_s = max(0, received_ms - time_ms) / 1000
        if not dev.online:
            log.info("%s: online", dev.name)
            dev.online = True
            # A state change is written at once, not at the next health tick: the screen
            # shows when it happened.
            self._lines.append(self.health_line(dev, received_ms))

    def _status(
        self, dev: MqttDevice, route: Route, topic: str, payload: bytes, received_ms: int, *, retained: bool
    ) -> None:
        spec = route.profile.mqtt
        assert spec is not None
        text = payload.decode("utf-8", errors="replace").strip()
        if not text:
            return  # an empty retained message only clears the broker's copy
        if text == spec.offline:
            if dev.online or dev.status != spec.offline:
                log.warning("%s: offline: the device's last will says '%s'", dev.name, text)
            dev.status = text
            if dev.online:
                dev.online = False
                self._lines.append(self.health_line(dev, received_ms))
        elif text == spec.online:
            dev.status = text
            self._seen(dev, received_ms, received_ms)
        else:
            detail = f"status must be '{spec.online}' or '{spec.offline}'"
            self._reject("invalid", detail, topic, payload, dev, received_ms, retained=retained)

    def _reject(  # noqa: PLR0917 (internal, called in one place per reason)
        self,
        reason: str,
        detail: str,
        topic: str,
        payload: bytes,
        dev: MqttDevice | None,
        received_ms: int,
        *,
        retained: bool = False,
    ) -> None:
        if retained and self._seen_retained(topic, payload):
            # The broker replays the same retained garbage at every start: counted once.
            self.ignored_retained += 1
            return
        self.dead_letters[reason] += 1
        if dev is not None:
            dev.errors[reason] += 1
        # The source a technician can act on: the device, or the topic down to its device level.
        who = dev.name if dev is not None else "/".join(topic.split("/")[:3])
        self._ratelog.log(
            reason, who, "mqtt: %s: message on %s rejected (%s): %s", who, topic, reason, detail
        )
        envelope = dead_letter_envelope(
            reason=reason,
            detail=detail,
            topic=topic,
            payload=payload,
            agent=self.agent,
            received_ms=received_ms,
        )
        if self._client is not None:
            self._client.publish(f"{self.settings.dead_letter_topic}/{self.agent}/{reason}", envelope, qos=1)

    def health_lines(self, time_ms: int, *, every: bool = False) -> list[str]:
        """Health points of the devices whose state changed since their last one, marking silent
        devices offline first, and of those whose last one is `health_every` old; with `every`, of all.

        A point of every device at every check would be most of what a large agent writes:
        20,000 devices checked every 5 s make 4,000 points/s, twice what they send at one
        message per 10 s.
        """
        now = time.monotonic()
        every_s = self.settings.health_every
        lines = []
        # Every device, every check: kept to a few attribute reads for the usual healthy one.
        for dev in self.devices.values():
            seen = dev.last_seen_mono
            if dev.online and (seen == 0.0 or now - seen > MISSED_HEARTBEATS * dev.heartbeat_s):
                dev.online = False
                log.warning(
                    "%s: offline: no message for %.0fs (%d heartbeats)",
                    dev.name,
                    now - dev.last_seen_mono,
                    MISSED_HEARTBEATS,
                )
            errors = dev.errors.total() if dev.errors else 0
            if every or dev.reported.due(dev.online, errors, now, every_s):
                lines.append(self.health_line(dev, time_ms))
        return lines

    def health_line(self, dev: MqttDevice, time_ms: int) -> str:
        """The device's health point now; remembered as its last."""
        dev.reported.mark(dev.online, dev.errors.total(), time.monotonic())
        return health_line(
            dev.health_series,
            time_ms,
            online=dev.online,
            errors=dev.errors,
            latency_s=dev.latency_s,
            last_seen_ms=dev.last_seen_ms,
            messages=dev.messages,
        )
