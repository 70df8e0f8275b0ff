"""The MQTT side of a profile: topics, payload schemas, heartbeat and last-will.

A message is described field by field; the edge compiles the description into a
pydantic model that validates the raw JSON bytes in one pass (see `payloads`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from linli.catalog.strict import Strict

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=48)]

_PLACEHOLDER = re.compile(r"^\{([a-z][a-z0-9_]*)\}$")


class FieldType(StrEnum):
    """JSON value types a payload field may have."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


class PayloadField(Strict):
    """One key of a JSON payload; it becomes a field, or a tag when `tag` is set."""

    name: Name
    key: str | None = None  # the JSON key when it differs from `name`
    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None
    max_length: Annotated[int, Field(ge=1, le=4096)] = 64
    pattern: str | None = None
    tag: bool = False
    # A life-safety alarm (a driver's alarm button): a message with it true, or false after
    # true, is handled as it arrives, not with the agent's next batch.
    alarm: bool = False
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        numeric = self.type in (FieldType.FLOAT, FieldType.INT)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"payload field '{self.name}': min/max need type float or int")
        if (self.choices is not None or self.pattern is not None) and self.type is not FieldType.STRING:
            raise ValueError(f"payload field '{self.name}': choices and pattern need type string")
        if self.tag and (
            self.type is not FieldType.STRING or (self.choices is None and self.pattern is None)
        ):
            # Tags are identity with bounded cardinality: only a closed set of short names qualifies.
            raise ValueError(f"payload field '{self.name}': a tag is a string with choices or a pattern")
        if self.alarm and self.type is not FieldType.BOOL:
            raise ValueError(f"payload field '{self.name}': an alarm is type bool (true raises it)")
        return self

    @property
    def json_key(self) -> str:
        return self.key or self.name


class Confirm(Strict):
    """Debounces detections: when a run of scored hits counts as one confirmed event.

    A hit at or above `instant` confirms at once; otherwise `hits` hits at or above
    `confirm` within `window_s` do. A confirmed episode lasts while hits at or above
    `keep` keep coming, and ends `exit_s` after the last of them. Hits whose fields do
    not match `only_if` never confirm (an alarm only on some floors).
    """

    score: Name
    confirm: Annotated[float, Field(ge=0, le=1)]
    keep: Annotated[float, Field(ge=0, le=1)]
    instant: Annotated[float, Field(ge=0, le=1)] = 1.0
    hits: Annotated[int, Field(ge=1, le=100)] = 1
    window_s: Annotated[float, Field(gt=0)] = 5.0
    exit_s: Annotated[float, Field(gt=0)] = 7.0
    only_if: dict[str, list[int | str]] = {}
    confirmed_field: Name = "confirmed"
    count_field: Name = "interception"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.keep <= self.confirm <= self.instant:
            raise ValueError("confirm thresholds must satisfy keep <= confirm <= instant")
        return self


def template_segments(template: str) -> list[tuple[bool, str]]:
    """(is_placeholder, text) per topic level."""
    out = []
    for level in template.split("/"):
        m = _PLACEHOLDER.match(level)
        out.append((True, m.group(1)) if m else (False, level))
    return out


def template_problems(template: str) -> list[str]:
    """What is wrong with a topic template, if anything."""
    problems = []
    segments = template_segments(template)
    names = [text for is_ph, text in segments if is_ph]
    for is_ph, text in segments:
        if not is_ph and ("{" in text or "}" in text or "+" in text or "#" in text or not text):
            problems.append(f"topic '{template}': level '{text}' must be a literal or one {{name}}")
    if "site" not in names or "device" not in names:
        problems.append(f"topic '{template}' needs both {{site}} and {{device}} levels")
    if len(set(names)) != len(names):
        problems.append(f"topic '{template}' repeats a placeholder")
    if segments and segments[0][0]:
        problems.append(f"topic '{template}' must start with a literal level")
    return problems


class MqttMessage(Strict):
    """One kind of message a device publishes, or (`to_device`) is sent by the platform."""

    name: Name
    topic: str
    qos: Literal[0, 1] = 1
    # Who publishes it: the broker's ACL lets the device write its own messages, read these.
    to_device: bool = False
    # JSON key holding the device's own time in epoch milliseconds; else the receive time.
    time_key: str | None = None
    fields: list[PayloadField]
    confirm: Confirm | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = template_problems(self.topic)
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"message '{self.name}': fields repeated: {', '.join(dupes)}")
        placeholders = {text for is_ph, text in template_segments(self.topic) if is_ph}
        clash = placeholders & set(names)
        if clash:
            problems.append(
                f"message '{self.name}': {', '.join(sorted(clash))} is both topic level and field"
            )
        if not any(not f.tag for f in self.fields) and self.confirm is None:
            problems.append(f"message '{self.name}': needs at least one non-tag field")
        if self.confirm is not None:
            by_name = {f.name: f for f in self.fields}
            score = by_name.get(self.confirm.score)
            if score is None or score.type is not FieldType.FLOAT:
                problems.append(f"message '{self.name}': confirm.score must name a float field")
            for key in self.confirm.only_if:
                if key not in by_name:
                    problems.append(f"message '{self.name}': confirm.only_if names unknown field '{key}'")
            for out in (self.confirm.confirmed_field, self.confirm.count_field):
                if out in by_name:
                    problems.append(f"message '{self.name}': '{out}' is computed; do not declare it")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def stored_fields(self) -> dict[str, FieldType]:
        """Every field (not tag) this message stores, with its type."""
        out = {f.name: f.type for f in self.fields if not f.tag}
        if self.confirm is not None:
            out[self.confirm.confirmed_field] = FieldType.BOOL
            out[self.confirm.count_field] = FieldType.INT
        return out


class MqttSpec(Strict):
    """How a device kind talks MQTT."""

    # A device silent for three heartbeats is offline.
    heartbeat_s: Annotated[float, Field(gt=0, le=86400)] = 30.0
    # Retained "online" on connect and the last-will "offline" on this topic.
    status_topic: str | None = None
    online: str = "online"
    offline: str = "offline"
    messages: list[MqttMessage]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = template_problems(self.status_topic) if self.status_topic else []
        names = [m.name for m in self.messages]
        if len(set(names)) != len(names):
            problems.append("message names must be unique")
        topics = [m.topic for m in self.messages] + ([self.status_topic] if self.status_topic else [])
        if len(set(topics)) != len(topics):
            problems.append("every message needs a topic of its own")
        # InfluxDB fixes a field's type per measurement: the messages must agree.
        types: dict[str, FieldType] = {}
        for message in self.messages:
            for name, ftype in message.stored_fields().items():
                if types.setdefault(name, ftype) is not ftype:
                    problems.append(
                        f"field '{name}' has type {types[name]} in one message, {ftype} in another"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self
