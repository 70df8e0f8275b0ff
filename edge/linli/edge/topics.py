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

    def filters(self) -> dict[str, int]:
        """Subscription filters with their QoS: one wildcard per topic root.

        The agent subscribes to the whole root (`elevators/#`), not to each template, so
        that a stray topic under it reaches the dead-letter topic instead of vanishing.
        """
        out: dict[str, int] = {}
        for route in self.routes:
            root = f"{route.levels[0][1]}/#"
            out[root] = max(out.get(root, 0), route.qos)
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
