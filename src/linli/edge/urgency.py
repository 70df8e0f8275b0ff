"""Which MQTT messages skip the batching: those that carry an alarm, judged from the payload.

The agent handles MQTT messages in batches (`[mqtt] batch_ms`), which is most of what an alert
waits at the edge. A message that raises or clears an alarm should not wait: the receive
thread judges each message of a watched topic as it arrives and wakes the asyncio side at once
for one that does. A topic is watched when its message has a field that the device's alert
rules hold a limit on (`above` or `below`, with their hysteresis, as the rules judge it), or
that its profile marks `alarm` (a true/false alarm: true raises it). A message is urgent when a
watched value is past its limit (an alarm on: an SOS, an AED battery below its limit), or back
on the safe side where the topic's previous message had it past (the alarm cleared). A
device's periodic healthy state is not urgent, so a fleet's routine traffic keeps its batches.

Judging costs a dictionary lookup for a topic nobody watches, and for one that is a decode of
only its watched keys (msgspec, in C; a rescue point's state 0.48 µs in all, against 0.83 µs
parsing the whole object); the asyncio side still validates every message. The receive thread
owns all of this state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache
from operator import attrgetter
from typing import Any, NamedTuple

import msgspec
from pydantic_core import from_json

from linli.catalog.mqttspec import MqttMessage
from linli.edge.rules import Condition, Rule, RuleEngine
from linli.edge.topics import TopicRouter

# Topics remembered; more than this and the memory starts afresh (as the connector's own).
MAX_TOPICS = 100_000
# An alarm field's limit: true reads as 1 and false as 0, as the rules read them.
ALARM_ON = 0.5
# The JSON values the rules read as numbers (true is 1, false 0).
NUMBERS = (int, float, bool)


class Wire(NamedTuple):
    """One watched value: its JSON key, and its limits on one scale, where past means above.

    A value is `sign * value`: past its limit above `past`, back on the safe side below
    `back` (the limit less the hysteresis), as `rules.judge` has it for above and below.
    """

    key: str
    sign: int
    past: float
    back: float

    @classmethod
    def of(cls, key: str, rule: Rule) -> Wire:
        sign = 1 if rule.condition is Condition.ABOVE else -1
        return cls(key, sign, sign * rule.limit, sign * rule.limit - rule.hysteresis)


@cache
def _watched(keys: tuple[str, ...]) -> type[msgspec.Struct]:
    """What a message's `keys` hold (attributes w0, w1, ...): decoding into it skips the other
    keys unbuilt, a third of the CPU of parsing the whole object into a dict."""
    fields = [(f"w{i}", Any, msgspec.field(name=key, default=None)) for i, key in enumerate(keys)]
    return msgspec.defstruct("Watched", fields, gc=False)


@cache
def _decoder(struct: type[msgspec.Struct]) -> Callable[[bytes], Any]:
    """One decoder per set of keys, not one per topic: a fleet's topics share a few."""
    return msgspec.json.Decoder(struct).decode


class Watch:
    """One topic's watched values, and which of them its last message had past their limit."""

    __slots__ = ("_decode", "_judged", "_keys", "_struct", "past", "wires")

    def __init__(self, wires: tuple[Wire, ...]) -> None:
        self.wires = wires
        self.past = [False] * len(wires)
        keys = tuple(dict.fromkeys(w.key for w in wires))  # a key two rules watch is read once
        self._keys = keys
        self._struct = _watched(keys)
        self._decode = _decoder(self._struct)
        # Each wire with the getter of its value in what `_decode` gives.
        self._judged = tuple((attrgetter(f"w{keys.index(w.key)}"), *w[1:]) for w in wires)

    def urgent(self, payload: bytes) -> bool:
        """Whether this message raises an alarm or clears one; what it says is remembered."""
        try:
            values = self._decode(payload)
        except (msgspec.MsgspecError, RecursionError):
            # msgspec refuses NaN and Infinity anywhere, where the validation downstream takes
            # them in a key it ignores: such a payload is judged from a whole parse, as before.
            # Nested past its depth it raises RecursionError, which must not leave this thread:
            # it would end paho's loop, and every message after with it.
            values = self._parsed(payload)
            if values is None:
                return False  # not a JSON object: the asyncio side rejects it
        urgent = False
        past = self.past
        # Written out, not through the rule engine: every message of a watched topic comes here.
        for i, (get, sign, limit, back) in enumerate(self._judged):
            value = get(values)
            if value.__class__ not in NUMBERS:
                continue
            value *= sign
            if value > limit:
                past[i] = urgent = True
            elif value < back and past[i]:
                past[i] = False
                urgent = True
        return urgent

    def _parsed(self, payload: bytes) -> Any:
        """The watched values as `_decode` gives them, from a whole parse; None if not an object."""
        try:
            values = from_json(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(values, dict):
            return None
        return self._struct(**{f"w{i}": values.get(key) for i, key in enumerate(self._keys)})


class Urgency:
    """Judges, in the receive thread, whether a message carries an alarm (see the module doc)."""

    def __init__(
        self,
        rules: Iterable[Rule],
        router: TopicRouter,
        tags: Mapping[tuple[str, str, str], Mapping[str, str]],
        max_payload: int,
    ) -> None:
        """`tags` are the devices' by (kind, site, device); `rules` the agent's alert rules."""
        # An engine of its own, for its choice of each device's rules: the receive thread's.
        self._engine = RuleEngine(rules, edge="")
        self._router = router
        self._tags = tags
        self._max_payload = max_payload
        self._watches: dict[bytes, Watch] = {}
        # Any topic to watch at all: without one, nothing is judged and the reads keep batch_ms.
        self.watching = any(
            _wires(r.message, self._engine.rules.get(r.profile.kind, [])) for r in router.routes
        )

    def urgent(self, raw_topic: bytes, topic: str, payload: bytes) -> bool:
        """Whether the message on `topic` raises or clears an alarm."""
        watch = self._watches.get(raw_topic)
        if watch is None:
            watch = self._watch(raw_topic, topic)
        return watch is not NOTHING and len(payload) <= self._max_payload and watch.urgent(payload)

    def _watch(self, raw_topic: bytes, topic: str) -> Watch:
        """What to watch on a topic not seen before (NOTHING: nothing), remembered."""
        matched = self._router.match(topic)
        watch = NOTHING
        if matched is not None:
            route, levels = matched
            tags = self._tags.get((route.profile.kind, levels.get("site", ""), levels.get("device", "")))
            if tags is not None:
                wires = _wires(route.message, self._engine.rules_for(route.profile.kind, tags))
                watch = Watch(tuple(wires)) if wires else NOTHING
        if len(self._watches) >= MAX_TOPICS:
            self._watches.clear()
        self._watches[raw_topic] = watch
        return watch


NOTHING = Watch(())


def _wires(message: MqttMessage | None, rules: Iterable[Rule]) -> list[Wire]:
    """A message's watched values: its fields a rule holds a limit on, and its alarm fields."""
    if message is None:
        return []  # the status topic
    keys = {f.name: f.json_key for f in message.fields if not f.tag}
    limits = (Condition.ABOVE, Condition.BELOW)
    wires = [Wire.of(keys[r.field], r) for r in rules if r.condition in limits and r.field in keys]
    wires += [Wire(f.json_key, 1, ALARM_ON, ALARM_ON) for f in message.fields if f.alarm]
    return wires
