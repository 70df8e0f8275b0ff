"""Topic routing: which profile message a topic is, and the tags its levels carry."""

from __future__ import annotations

from dataclasses import dataclass

from linli.catalog.mqttspec import MqttMessage, template_segments
from linli.catalog.profile import Profile


@dataclass(frozen=True)
class Route:
    """One topic template of one device kind; `message` is None for the status topic."""

    profile: Profile
    message: MqttMessage | None
    template: str
    levels: tuple[tuple[bool, str], ...]
    qos: int


class TopicRouter:
    """Matches incoming topics against the templates of the subscribed kinds."""

    def __init__(self, profiles: list[Profile]) -> None:
        # Indexed by (first level, number of levels): a topic is checked against few templates.
        self._index: dict[tuple[str, int], list[Route]] = {}
        self.routes: list[Route] = []
        for profile in profiles:
            spec = profile.mqtt
            if spec is None:
                continue
            templates: list[tuple[MqttMessage | None, str, int]] = [
                (m, m.topic, m.qos) for m in spec.messages
            ]
            if spec.status_topic:
                templates.append((None, spec.status_topic, 1))
            for message, template, qos in templates:
                levels = tuple(template_segments(template))
                route = Route(profile, message, template, levels, qos)
                self.routes.append(route)
                self._index.setdefault((levels[0][1], len(levels)), []).append(route)

    def filters(self, sites: dict[str, set[str]] | None = None) -> dict[str, int]:
        """Subscription filters with their QoS: one wildcard per topic root and owned site.

        `sites` maps a kind to the sites this agent owns devices of; the agent subscribes to
        each site's whole subtree (`elevators/ronghua-1/#`), so that a stray topic of its own
        sites reaches the dead-letter topic, while other agents' sites never reach it at all.
        Without `sites`, the whole root (`elevators/#`).
        """
        out: dict[str, int] = {}
        for route in self.routes:
            for f in _owned(route, None if sites is None else sites.get(route.profile.kind, set())):
                out[f] = max(out.get(f, 0), route.qos)
        return out

    def match(self, topic: str) -> tuple[Route, dict[str, str]] | None:
        """The route and the placeholder values of `topic`, or None."""
        parts = topic.split("/")
        for route in self._index.get((parts[0], len(parts)), ()):
            values: dict[str, str] = {}
            for (is_placeholder, text), part in zip(route.levels, parts, strict=True):
                if is_placeholder:
                    if not part:
                        break
                    values[text] = part
                elif text != part:
                    break
            else:
                return route, values
        return None


def _owned(route: Route, sites: set[str] | None) -> list[str]:
    """The filters covering a route's topics for `sites` (all sites when None)."""
    head: list[str] = []
    for is_placeholder, text in route.levels:
        if is_placeholder and text == "site":
            if sites is None:
                break
            return ["/".join([*head, site, "#"]) for site in sorted(sites)]
        if is_placeholder:
            break
        head.append(text)
    return ["/".join([*head, "#"])]
