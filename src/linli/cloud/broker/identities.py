"""Who may connect to the broker, and what each may publish and subscribe: from the configs.

One identity per device, per edge agent, and for the notifier, the waste service and an
operator (the district simulator connects each simulated device as that device). Each
identity's rules are exact topics or filters, its own; nothing is granted to everyone. They
become a role per identity of Mosquitto's dynamic-security plugin (`dynsec.py`) and EMQX's
`acl.conf` (`emqx.py`).

Why not `pattern` rules with `%u`/`%c`: a pattern applies to every user. A rule
`linli/alerts/%u/#` for the edges would let a camera write alerts under its own user name, which
the notifier would take as an edge's; and a device's topics carry its identity in two levels
(`elevators/{site}/{device}/...`) where `%u` may fill only one. The rules are generated from
the same configs the agents read, so writing them out per user costs nothing and grants
nothing by accident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from linli.catalog.alerts import ALERT_TOPIC, EDGE_STATUS_TOPIC
from linli.catalog.mqttspec import template_segments
from linli.catalog.profile import Profile
from linli.cloud.notifier.config import NOTIFIER_GROUP

NOTICES = "linli/notices/#"  # where the notifier's MQTT channels may publish


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


class Role(StrEnum):
    DEVICE = "device"
    EDGE = "edge"
    NOTIFIER = "notifier"
    WASTE = "waste"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Rule:
    """May read or write `topic`. A read with a `group` is subscribed only through the shared
    subscription `$share/{group}/{topic}`: the identity may join that group and no other."""

    access: Access
    topic: str
    group: str = ""

    @property
    def filter(self) -> str:
        """What the identity may subscribe to for this rule."""
        return f"$share/{self.group}/{self.topic}" if self.group else self.topic


@dataclass(frozen=True)
class Identity:
    """A broker user: its name, what it is, and what it may do."""

    name: str
    role: Role
    rules: tuple[Rule, ...]
    # The environment variables its program reads the user name and password from.
    env: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    # The one MQTT client id it may connect with, or "" for any: see `device`.
    client_id: str = ""


def device_topic(template: str, site: str, device: str) -> str:
    """A profile topic for one device; any other placeholder becomes a one-level wildcard."""
    values = {"site": site, "device": device}
    return "/".join(values.get(text, "+") if ph else text for ph, text in template_segments(template))


def device(site: str, device_id: str, profile: Profile) -> Identity | None:
    """A device that talks MQTT: its own messages and status (its last will), nothing else.

    It may connect only with its identity as its client id. A client that connects with a
    connected client's id takes over its connection and session; a device (its case can be
    opened in a lobby) so pinned cannot be anyone else on the broker, not even for a moment.
    """
    spec = profile.mqtt
    if spec is None:
        return None
    rules = [
        Rule(Access.READ if m.to_device else Access.WRITE, device_topic(m.topic, site, device_id))
        for m in spec.messages
    ]
    if spec.status_topic:
        rules.append(Rule(Access.WRITE, device_topic(spec.status_topic, site, device_id)))
    name = f"device/{site}/{device_id}"
    return Identity(name, Role.DEVICE, tuple(rules), client_id=name)


def edge(
    agent: str,
    filters: Iterable[str],
    dead_letter_topic: str,
    alert_topic: str = ALERT_TOPIC,
    status_topic: str = EDGE_STATUS_TOPIC,
) -> Identity:
    """An edge agent: reads its own sites, writes its own alerts, status and dead letters."""
    rules = [Rule(Access.READ, f) for f in sorted(filters)]
    rules += [
        Rule(Access.WRITE, f"{alert_topic}/{agent}/#"),
        Rule(Access.WRITE, f"{status_topic}/{agent}"),
        Rule(Access.WRITE, f"{dead_letter_topic}/{agent}/#"),
    ]
    env = (
        ("LINLI_MQTT_USERNAME", "LINLI_MQTT_PASSWORD"),
        ("LINLI_ALERTS_USERNAME", "LINLI_ALERTS_PASSWORD"),
    )
    return Identity(f"edge/{agent}", Role.EDGE, tuple(rules), env)


def notifier(
    channel_topics: Iterable[str] = (),
    alert_topic: str = ALERT_TOPIC,
    status_topic: str = EDGE_STATUS_TOPIC,
    group: str = NOTIFIER_GROUP,
) -> Identity:
    """The notifier: reads every edge's alerts and status through its shared group (the only
    identity that may join it); publishes its MQTT channels."""
    rules = [
        Rule(Access.READ, f"{alert_topic}/#", group),
        Rule(Access.READ, f"{status_topic}/+", group),
        Rule(Access.WRITE, NOTICES),
        *(Rule(Access.WRITE, t) for t in sorted(set(channel_topics))),
    ]
    env = (("LINLI_CLOUD_MQTT_USERNAME", "LINLI_CLOUD_MQTT_PASSWORD"),)
    return Identity("notifier", Role.NOTIFIER, tuple(_unique(rules)), env)


def waste(
    truck_topics: Iterable[str],
    order_topics: Iterable[str],
    channel_topics: Iterable[str] = (),
    dead_letter_topic: str = "linli/deadletter",
) -> Identity:
    """The waste service: reads the trucks; writes orders to the renovation trucks and to its
    contacts' MQTT channels, exactly those topics (never another truck's orders), and the truck
    messages it refused to its own dead-letter subtree."""
    rules = [Rule(Access.READ, t) for t in sorted(set(truck_topics))]
    rules += [Rule(Access.WRITE, t) for t in sorted(set(order_topics) | set(channel_topics))]
    rules.append(Rule(Access.WRITE, f"{dead_letter_topic}/waste/#"))
    env = (("LINLI_CLOUD_MQTT_USERNAME", "LINLI_CLOUD_MQTT_PASSWORD"),)
    return Identity("waste", Role.WASTE, tuple(_unique(rules)), env)


def operator() -> Identity:
    """The one identity that may read everything, `$SYS` included, for troubleshooting."""
    rules = (Rule(Access.READ, "#"), Rule(Access.READ, "$SYS/#"))
    return Identity("operator", Role.OPERATOR, rules)


def _unique(rules: Iterable[Rule]) -> list[Rule]:
    return list(dict.fromkeys(rules))
