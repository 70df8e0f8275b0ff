"""Who may connect to the broker, and what each may publish and subscribe: from the configs.

One identity per device, per edge agent, and for the notifier, the waste service and an
operator (the district simulator connects each simulated device as that device). Each
identity's rules are exact topics or filters written under a `user` line of Mosquitto's
`acl_file`; nothing is granted to everyone.

Why not `pattern` rules with `%u`/`%c`: a pattern applies to every user. `pattern write
linli/alerts/%u/#` for the edges would let a camera write alerts under its own user name, which
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

NOTICES = "linli/notices/#"  # where the notifier's and waste service's MQTT channels may publish
BOOKINGS = "linli/bookings/#"  # the waste service's booking notices


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
    access: Access
    topic: str

    def line(self) -> str:
        return f"topic {self.access} {self.topic}"


@dataclass(frozen=True)
class Identity:
    """A broker user: its name, what it is, and what it may do."""

    name: str
    role: Role
    rules: tuple[Rule, ...]
    # The environment variables its program reads the user name and password from.
    env: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def device_topic(template: str, site: str, device: str) -> str:
    """A profile topic for one device; any other placeholder becomes a one-level wildcard."""
    values = {"site": site, "device": device}
    return "/".join(values.get(text, "+") if ph else text for ph, text in template_segments(template))


def device(site: str, device_id: str, profile: Profile) -> Identity | None:
    """A device that talks MQTT: its own messages and status (its last will), nothing else."""
    spec = profile.mqtt
    if spec is None:
        return None
    rules = [
        Rule(Access.READ if m.to_device else Access.WRITE, device_topic(m.topic, site, device_id))
        for m in spec.messages
    ]
    if spec.status_topic:
        rules.append(Rule(Access.WRITE, device_topic(spec.status_topic, site, device_id)))
    return Identity(f"device/{site}/{device_id}", Role.DEVICE, tuple(rules))


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
) -> Identity:
    """The notifier: reads every edge's alerts and status; publishes its MQTT channels."""
    rules = [
        Rule(Access.READ, f"{alert_topic}/#"),
        Rule(Access.READ, f"{status_topic}/+"),
        Rule(Access.WRITE, NOTICES),
        *(Rule(Access.WRITE, t) for t in sorted(set(channel_topics))),
    ]
    env = (("LINLI_CLOUD_MQTT_USERNAME", "LINLI_CLOUD_MQTT_PASSWORD"),)
    return Identity("notifier", Role.NOTIFIER, tuple(_unique(rules)), env)


def waste(
    truck_topics: Iterable[str], order_topics: Iterable[str], dead_letter_topic: str = "linli/deadletter"
) -> Identity:
    """The waste service: reads the trucks, writes orders to the renovation trucks, notices, and
    the truck messages it refused to its own dead-letter subtree."""
    rules = [Rule(Access.READ, t) for t in sorted(set(truck_topics))]
    rules += [Rule(Access.WRITE, t) for t in sorted(set(order_topics))]
    rules += [Rule(Access.WRITE, NOTICES), Rule(Access.WRITE, BOOKINGS)]
    rules.append(Rule(Access.WRITE, f"{dead_letter_topic}/waste/#"))
    env = (("LINLI_CLOUD_MQTT_USERNAME", "LINLI_CLOUD_MQTT_PASSWORD"),)
    return Identity("waste", Role.WASTE, tuple(_unique(rules)), env)


def operator() -> Identity:
    """The one identity that may read everything, `$SYS` included, for troubleshooting."""
    rules = (Rule(Access.READ, "#"), Rule(Access.READ, "$SYS/#"))
    return Identity("operator", Role.OPERATOR, rules)


def acl(identities: Iterable[Identity]) -> str:
    """Mosquitto's `acl_file`: one `user` block per identity, nothing for anyone else."""
    out = [
        "# Generated by `linli broker config`: edit the configs and run it again, not this file.",
        "# No rule before the first `user` line: a client without a user name may do nothing.",
    ]
    for ident in identities:
        out += ["", f"# {ident.role}", f"user {ident.name}", *(r.line() for r in ident.rules)]
    return "\n".join(out) + "\n"


def _unique(rules: Iterable[Rule]) -> list[Rule]:
    return list(dict.fromkeys(rules))
