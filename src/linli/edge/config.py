"""The edge agent's TOML config: sites, their devices, and where readings go."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from linli.catalog.alerts import ALERT_TOPIC, EDGE_STATUS_TOPIC
from linli.catalog.errors import ConfigError, read_toml, validate_model
from linli.catalog.mqttclient import MqttBroker
from linli.catalog.profile import RESERVED_TAGS, Profile, Severity, get_profile
from linli.catalog.strict import EnvCredentials, Strict
from linli.catalog.tls import anchored, tls_problems
from linli.edge.buffer import SyncMode

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
TagKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]
TagValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
# Devices one agent takes at most: the measured load is 20,000 (docs/benchmarks.md). A config of
# 100,000 took a minute and 2 GB to build, so a typo'd generator is refused before that.
MAX_DEVICES = 25_000


class WriterKind(StrEnum):
    """Which write API the target speaks."""

    INFLUXDB2 = "influxdb2"  # v2 write API: InfluxDB 2.x and 3.x, VictoriaMetrics
    INFLUXDB1 = "influxdb1"  # /write: InfluxDB 1.x


class WriterConfig(EnvCredentials):
    """Where and how readings are written."""

    kind: WriterKind
    url: Annotated[str, Field(pattern=r"^https?://")]
    org: str = ""
    bucket: str = ""
    database: str = ""
    # Secrets come from the environment, never from the file.
    token_env: str = "LINLI_INFLUX_TOKEN"  # noqa: S105 (a variable name, not a secret)
    username_env: str = "LINLI_INFLUX_USERNAME"
    password_env: str = "LINLI_INFLUX_PASSWORD"  # noqa: S105
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    flush_interval: Seconds = 1.0
    timeout: Seconds = 10.0
    # Retries of a failing store back off up to this long between attempts.
    retry_max: Seconds = 30.0

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.kind is WriterKind.INFLUXDB2 and not (self.org and self.bucket):
            raise ValueError("kind 'influxdb2' needs 'org' and 'bucket'")
        if self.kind is WriterKind.INFLUXDB1 and not self.database:
            raise ValueError("kind 'influxdb1' needs 'database'")
        return self

    @property
    def token(self) -> str:
        return os.environ.get(self.token_env, "")


class DeviceConfig(Strict):
    """One device at a site: its kind, where it answers, how often to read it."""

    id: Ident
    # What people call it ("3号楼充电棚"): alert notices name it so; the id stays the machine's.
    name: Annotated[str, Field(max_length=128)] = ""
    name_en: Annotated[str, Field(max_length=128)] = ""  # for notices in English; empty: `name`
    profile: str
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit: Annotated[int, Field(ge=0, le=255)] | None = None
    interval: Seconds = 1.0
    timeout: Seconds = 0.5
    count: Annotated[int, Field(ge=1, le=256)] | None = None
    max_registers: Annotated[int, Field(ge=1, le=125)] | None = None
    max_gap: Annotated[int, Field(ge=0, le=124)] | None = None
    # Static identity tags for dashboards, such as the building or the pipe system.
    tags: dict[TagKey, TagValue] = {}
    # MQTT devices: overrides the profile's heartbeat period (offline after three missed).
    heartbeat: Seconds | None = None
    # Modbus devices: store the points that have a deadband only when they move (and every
    # `store_every` seconds); false stores every point at every poll.
    report_by_exception: bool = True
    # Deadbands by field, in the field's unit, over the profile's (0 stores any change).
    deadband: dict[TagKey, Annotated[float, Field(ge=0)]] = {}
    # The heartbeat of values reported by exception, over the profile's.
    store_every: Seconds | None = None
    # Modbus devices reporting by exception: their health point (online, latency, errors) when
    # it goes online or offline or counts a new error, and at least this often; without
    # report by exception, every poll.
    health_every: Seconds = 60.0

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout {self.timeout}s is longer than interval {self.interval}s; "
                "a slow device would then delay its own next poll"
            )
        return self


class SiteConfig(Strict):
    """A residential compound and the devices installed there."""

    id: Ident
    name: Annotated[str, Field(max_length=128)] = ""  # what people call it; alert notices use it
    name_en: Annotated[str, Field(max_length=128)] = ""  # for notices in English; empty: `name`
    devices: list[DeviceConfig] = []


class AgentSettings(Strict):
    """How the agent itself behaves."""

    name: Ident = "linli-edge"
    log_level: Annotated[str, Field(pattern=r"^(debug|info|warning|error)$")] = "info"
    # HOST:PORT to serve /metrics (Prometheus) and /health (JSON) on; off when empty.
    metrics: Annotated[str, Field(pattern=r"^$|^[A-Za-z0-9.:\[\]-]+:\d{1,5}$")] = ""


class MqttConfig(MqttBroker):
    """The broker the MQTT devices publish to (the keys every broker table has), and how the
    agent subscribes."""

    # Fixed, so that the broker keeps the persistent session (and queued QoS 1 messages)
    # across reconnects; empty means "linli-<agent name>".
    client_id: Annotated[str, Field(max_length=64)] = ""
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    # Rejected messages are republished under {dead_letter_topic}/{agent}/{reason}.
    dead_letter_topic: Annotated[str, Field(pattern=r"^[^#+]+$")] = "linli/deadletter"
    max_payload: Annotated[int, Field(ge=64, le=16_777_216)] = 65_536
    # A device clock further ahead than this is wrong (a timestamp from next year is refused).
    max_clock_ahead: Seconds = 3600.0
    # How long messages gather before they are handled in one batch, at most: the CPU a message
    # costs against the time it waits (docs/benchmarks.md, "Batching MQTT messages").
    batch_ms: Annotated[int, Field(ge=1, le=1000)] = 100
    # How often MQTT devices' silence is checked. A device's health point is written when it
    # goes online or offline or counts a new error, and at least every `health_every`.
    health_interval: Seconds = 5.0
    health_every: Seconds = 60.0
    # Topic filters to subscribe instead of the default: each configured site's subtree of
    # each kind (`elevators/ronghua-1/#`), so that agents sharing a broker never see each
    # other's traffic. Set it where topics do not carry the site.
    subscribe: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=1000)
    ] = []


class BufferConfig(Strict):
    """The durable buffer between the connectors and the writer (see `linli.edge.buffer`)."""

    # A relative path is taken from the config file's folder. Unset: <agent name>.buffer.sqlite
    # in $LINLI_STATE_DIR, or in the current folder.
    path: Path | None = None
    max_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 1024.0
    # "full": every commit is on the disk (a power cut loses nothing acknowledged);
    # "normal": on the OS at once, on the disk at checkpoints (an agent crash loses nothing).
    sync: SyncMode = SyncMode.FULL
    # Past this share of max_mb the agent stops taking QoS 1 messages (the broker keeps them)
    # instead of dropping the oldest readings.
    backpressure_at: Annotated[float, Field(gt=0, le=1)] = 0.9


class RuleConfig(Strict):
    """An alert rule: changes a profile's default (same kind, field and side) or adds one.

    `site` and `device` narrow it; the most specific rule of a field and side wins.
    """

    kind: str
    field: TagKey
    site: Ident | None = None
    device: Ident | None = None
    above: float | None = None
    below: float | None = None
    rate_above: Annotated[float, Field(gt=0)] | None = None  # per second
    silent_for: Seconds | None = None  # no value for this long
    hysteresis: Annotated[float, Field(ge=0)] | None = None
    for_s: Annotated[float, Field(ge=0, le=86400)] | None = None
    severity: Severity | None = None
    title: str | None = None
    when: dict[TagKey, TagValue] = {}
    enabled: bool = True

    @model_validator(mode="after")
    def _one_condition(self) -> Self:
        given = [x for x in (self.above, self.below, self.rate_above, self.silent_for) if x is not None]
        if len(given) != 1 and self.enabled:
            raise ValueError("give exactly one of above, below, rate_above and silent_for")
        return self


class InterlockConfig(Strict):
    """A safety action taken at the edge: past the limit, write the command's coil.

    A per-port field stops that port; a station-wide field stops every port. It acts once
    per episode: until the value is back on the safe side, a port a technician restarted
    is left alone.
    """

    kind: str = "charger"
    field: TagKey
    above: float | None = None
    below: float | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    command: TagKey = "stop"
    site: Ident | None = None
    device: Ident | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above and below")
        return self


class AlertsConfig(MqttBroker):
    """Where alert events are published (the central broker): the keys every broker table has,
    with `host` unset meaning the [mqtt] broker, as it is named there."""

    host: str | None = None  # type: ignore[assignment]
    username_env: str = "LINLI_ALERTS_USERNAME"
    password_env: str = "LINLI_ALERTS_PASSWORD"  # noqa: S105 (a variable name, not a secret)
    # Events go to {topic}/{agent}/{site}/{device}; the agent's last will to {status_topic}/{agent}.
    topic: Annotated[str, Field(pattern=r"^[^#+]+$")] = ALERT_TOPIC
    status_topic: Annotated[str, Field(pattern=r"^[^#+]+$")] = EDGE_STATUS_TOPIC
    publish: bool = True
    # Every firing alert is announced again this often (0: never), and a resolution a few
    # times: a notifier that dies holding an event takes it with it on brokers that do not
    # hand a dead member's messages to the rest of its group (Mosquitto 2.0).
    resend_s: Annotated[float, Field(ge=0)] = 60.0


class EdgeConfig(Strict):
    """The whole file."""

    agent: AgentSettings = AgentSettings()
    writer: WriterConfig
    buffer: BufferConfig = BufferConfig()
    mqtt: MqttConfig | None = None
    alerts: AlertsConfig = AlertsConfig()
    rules: list[RuleConfig] = []
    interlocks: list[InterlockConfig] = []
    sites: list[SiteConfig]

    def buffer_path(self) -> Path:
        """Where the durable buffer lives."""
        if self.buffer.path is not None:
            return self.buffer.path
        return Path(os.environ.get("LINLI_STATE_DIR", ".")) / f"{self.agent.name}.buffer.sqlite"

    def alerts_broker(self) -> MqttBroker | None:
        """Where alert events go: [alerts]' own broker when it names a host, else [mqtt]'s."""
        a = self.alerts
        if a.host is None:
            return self.mqtt
        return MqttBroker(**{key: getattr(a, key) for key in MqttBroker.model_fields})

    @property
    def mqtt_client_id(self) -> str:
        return (self.mqtt.client_id if self.mqtt else "") or f"linli-{self.agent.name}"

    def devices(self) -> list[tuple[SiteConfig, DeviceConfig]]:
        return [(site, device) for site in self.sites for device in site.devices]


def _semantic_problems(config: EdgeConfig) -> list[str]:
    problems = []
    seen: set[tuple[str, str]] = set()
    for si, site in enumerate(config.sites):
        for di, device in enumerate(site.devices):
            key = f"sites[{si}].devices[{di}]"
            if (site.id, device.id) in seen:
                problems.append(f"key '{key}.id': device '{device.id}' appears twice in site '{site.id}'")
            seen.add((site.id, device.id))
            try:
                profile = get_profile(device.profile)
            except KeyError as exc:
                problems.append(f"key '{key}.profile': {exc.args[0]}")
                continue
            problems.extend(_device_problems(key, device, profile))
            if profile.mqtt is not None and config.mqtt is None:
                problems.append(
                    f"key '{key}.profile': '{profile.kind}' devices publish over MQTT; "
                    "add an [mqtt] table with the broker's host and port"
                )
    if not seen:
        problems.append("key 'sites': no devices configured; add [[sites.devices]] tables")
    for i, rule in enumerate(config.rules):
        problems.extend(_field_problems(f"rules[{i}]", rule.kind, rule.field))
    for i, lock in enumerate(config.interlocks):
        key = f"interlocks[{i}]"
        problems.extend(_field_problems(key, lock.kind, lock.field))
        problems.extend(_command_problems(key, lock))
    return problems


def _field_problems(key: str, kind: str, field: str) -> list[str]:
    try:
        profile = get_profile(kind)
    except KeyError as exc:
        return [f"key '{key}.kind': {exc.args[0]}"]
    stored = profile.stored_fields()
    if field not in stored:
        return [f"key '{key}.field': '{kind}' stores no field '{field}'; it has {', '.join(sorted(stored))}"]
    return []


def _command_problems(key: str, lock: InterlockConfig) -> list[str]:
    try:
        profile = get_profile(lock.kind)
    except KeyError:
        return []  # reported with the field
    mb = profile.modbus
    commands = {c.name for c in (mb.commands + (mb.group.commands if mb.group else []))} if mb else set()
    if lock.command not in commands:
        have = ", ".join(sorted(commands)) or "none"
        return [f"key '{key}.command': '{lock.kind}' has no command '{lock.command}' (commands: {have})"]
    return []


def _device_problems(key: str, device: DeviceConfig, profile: Profile) -> list[str]:
    reserved = sorted(set(device.tags) & (RESERVED_TAGS | _profile_names(profile)))
    if reserved:
        return [f"key '{key}.tags': {', '.join(reserved)} already names a tag or field of '{profile.kind}'"]
    problems = _deadband_problems(key, device, profile)
    group = profile.modbus.group if profile.modbus else None
    if device.count is not None and profile.modbus is not None:
        if group is None:
            problems.append(f"key '{key}.count': profile '{profile.kind}' has no repeated channels")
        elif device.count > group.max_count:
            problems.append(
                f"key '{key}.count': {device.count} exceeds the profile's max_count {group.max_count}"
            )
    return problems


def _deadband_problems(key: str, device: DeviceConfig, profile: Profile) -> list[str]:
    if profile.modbus is None:
        if device.deadband or device.store_every is not None:
            return [
                f"key '{key}.deadband': '{profile.kind}' devices publish over MQTT, where the device "
                "decides when to report; deadbands apply to Modbus devices"
            ]
        return []
    stored = {p.field for _, p in profile.modbus_points() if p.store}
    unknown = sorted(set(device.deadband) - stored)
    if unknown:
        return [
            f"key '{key}.deadband': '{profile.kind}' stores no field {', '.join(map(repr, unknown))}; "
            f"it has {', '.join(sorted(stored))}"
        ]
    return []


def _profile_names(profile: Profile) -> set[str]:
    names = {p.field for _, p in profile.modbus_points()}
    if profile.group_tag:
        names.add(profile.group_tag)
    if profile.mqtt is not None:
        for message in profile.mqtt.messages:
            names.update(f.name for f in message.fields)
            names.update(message.stored_fields())
    return names


def device_count(data: dict[str, Any]) -> int:
    """The `[[sites.devices]]` of a TOML document not yet validated (its shape may be wrong)."""
    sites = data.get("sites")
    if not isinstance(sites, list):
        return 0
    return sum(len(s["devices"]) for s in sites if isinstance(s, dict) and isinstance(s.get("devices"), list))


def load_config(path: Path) -> EdgeConfig:
    """Read and validate the agent's config; ConfigError lists every problem found."""
    data = read_toml(path)
    devices = device_count(data)
    if devices > MAX_DEVICES:
        # Counted before validating: building the config is what costs at this size.
        raise ConfigError(
            path,
            [
                f"sites.devices: {devices} devices, more than the {MAX_DEVICES} one agent takes; "
                "split the sites over several agents, each with its own [agent] name"
            ],
        )
    config = validate_model(path, data, EdgeConfig)
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(path, problems)
    buffer_path = config.buffer.path
    if buffer_path is not None and not buffer_path.is_absolute():
        buffer = config.buffer.model_copy(update={"path": path.parent / buffer_path})
        config = config.model_copy(update={"buffer": buffer})
    if config.mqtt is not None and config.mqtt.tls is not None:
        mqtt = config.mqtt.model_copy(update={"tls": anchored(config.mqtt.tls, path.parent)})
        config = config.model_copy(update={"mqtt": mqtt})
    if config.alerts.tls is not None:
        alerts = config.alerts.model_copy(update={"tls": anchored(config.alerts.tls, path.parent)})
        config = config.model_copy(update={"alerts": alerts})
    return config


def tls_file_problems(config: EdgeConfig) -> list[str]:
    """TLS files the config names that are missing here (checked where the agent runs)."""
    return tls_problems(config.mqtt.tls if config.mqtt else None, "mqtt.tls") + tls_problems(
        config.alerts.tls, "alerts.tls"
    )
