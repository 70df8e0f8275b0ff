"""From linli's configs to the broker's identities, and the mosquitto.conf that enforces them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from linli.catalog.profile import get_profile
from linli.cloud.broker import identities as ids
from linli.cloud.broker.identities import Access, Identity

# Where Debian (per architecture) and the eclipse-mosquitto image keep the plugin.
DYNSEC_PLUGINS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)

# The default max_queued_messages 1000 drops QoS 1 messages for a subscriber that falls behind
# by a few seconds at district rates: the queue is bounded by memory instead. The agent
# acknowledges a QoS 1 message once its reading is on disk, 20-40 ms later, so the in-flight
# window bounds its rate: 1000 messages in 40 ms is 25,000 messages/s.
QUEUES = """\
max_queued_messages 0
max_queued_bytes 268435456
max_inflight_messages 1000
"""


def gather(
    edge_configs: Sequence[Path],
    notifier_config: Path | None = None,
    waste_config: Path | None = None,
) -> list[Identity]:
    """Every identity the configs imply, in a stable order. Raises ConfigError."""
    from linli.catalog.channels import MqttChannel
    from linli.cloud.notifier.config import load_notifier_config
    from linli.edge.config import load_config
    from linli.edge.mqtt import subscription_filters

    devices: list[Identity] = []
    edges: list[Identity] = []
    for path in edge_configs:
        config = load_config(path)
        for site, device in config.devices():
            ident = ids.device(site.id, device.id, get_profile(device.profile))
            if ident is not None:
                devices.append(ident)
        if config.mqtt is not None or config.alerts.publish:
            dead = config.mqtt.dead_letter_topic if config.mqtt else "linli/deadletter"
            filters = subscription_filters(config) if config.mqtt is not None else {}
            edges.append(
                ids.edge(
                    config.agent.name,
                    filters,
                    dead,
                    alert_topic=config.alerts.topic,
                    status_topic=config.alerts.status_topic,
                )
            )
    out = [*devices, *edges]
    if notifier_config is not None:
        notifier = load_notifier_config(notifier_config)
        topics = [c.topic for s in notifier.subscriptions for c in s.channels if isinstance(c, MqttChannel)]
        b = notifier.broker
        out.append(ids.notifier(topics, b.alert_topic, b.status_topic, b.group))
    else:
        out.append(ids.notifier())
    if waste_config is not None:
        out.append(_waste(waste_config, out[-1]))
    out.append(ids.operator())
    return out


def _waste(path: Path, notifier: Identity) -> Identity:
    """Its truck topics, its renovation trucks' orders, and its contacts' MQTT channels, none of
    which may be one the notifier writes (a keeper's notice would pass for the notifier's)."""
    from linli.catalog.channels import MqttChannel
    from linli.catalog.errors import ConfigError
    from linli.cloud.waste.config import load_waste_config
    from linli.cloud.waste.payloads import truck_filters
    from linli.transit.gtfs import load_feed

    config = load_waste_config(path)
    feed = load_feed(config.gtfs)
    topic = config.broker.topic
    spec = feed.extras.renovation
    orders = [f"{topic}/fleet/{t.id}/order" for t in spec.trucks] if spec else []
    contacts = [c for s in feed.extras.stops.values() for c in (*s.keepers, s.property) if c is not None]
    channels = {ch.topic for c in contacts for ch in c.channels if isinstance(ch, MqttChannel)}
    notifiers = {r.topic for r in notifier.rules if r.access is Access.WRITE}
    shared = sorted(t for t in channels if any(topic_matches(n, t) for n in notifiers))
    if shared:
        problem = (
            f"stops.*.keepers/property channels: the MQTT topic {', '.join(shared)} is the "
            f"notifier's to write ({', '.join(sorted(notifiers))}); give the waste service's "
            "contacts topics of their own, e.g. linli/waste/notices/..."
        )
        raise ConfigError(config.gtfs / "linli.toml", [problem])
    return ids.waste(truck_filters(topic), orders, channels, config.broker.dead_letter_topic)


def topic_matches(filter_: str, topic: str) -> bool:
    """Whether an MQTT topic filter (`+`, `#`) matches a topic."""
    want, have = filter_.split("/"), topic.split("/")
    for i, part in enumerate(want):
        if part == "#":
            return True
        if i >= len(have) or part not in ("+", have[i]):
            return False
    return len(want) == len(have)


def mosquitto_conf(
    conf_dir: str,
    *,
    port: int = 1883,
    bind: str = "",
    certs: str | None = None,
    tls_port: int = 8883,
    persistence: str | None = None,
    plugin: str | None = None,
) -> str:
    """Authenticated clients only, each held to its rights; TLS beside plain when there are certs."""
    lines = [
        "# Generated by `linli broker config`: run it again rather than editing this file.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {conf_dir}/passwd",
        # The rights, subscriptions included: the acl_file never checks a subscription (dynsec.py).
        f"plugin {plugin or dynsec_plugin()}",
        f"plugin_opt_config_file {conf_dir}/dynsec.json",
        "",
        f"listener {port} {bind}".rstrip(),
    ]
    if certs is not None:
        lines += [
            f"listener {tls_port} {bind}".rstrip(),
            f"cafile {certs}/ca.crt",
            f"certfile {certs}/server.crt",
            f"keyfile {certs}/server.key",
            "tls_version tlsv1.2",
            # A client certificate is checked against the CA when one is sent; the user name
            # and password are still what identify the client.
            "require_certificate false",
        ]
    lines.append("")
    if persistence:
        lines += [
            "persistence true",
            f"persistence_location {persistence.rstrip('/')}/",
            "autosave_interval 60",
        ]
    else:
        lines.append("persistence false")
    lines += [
        "",
        QUEUES.rstrip("\n"),
        "",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    return "\n".join(lines) + "\n"


def dynsec_plugin() -> str:
    """The dynamic-security plugin of this host's Mosquitto, or Debian's amd64 path."""
    return next((p for p in DYNSEC_PLUGINS if Path(p).exists()), DYNSEC_PLUGINS[0])
