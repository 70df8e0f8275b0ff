"""MQTT payloads: a profile's message description compiled into a validator of JSON bytes.

The compiled pydantic model parses and checks the raw bytes in one pass in Rust, with
no intermediate dict, because every message of every device goes through it. A payload
that does not pass comes out as a PayloadError with a short reason (the counter it is
filed under) and a detail naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from linli.catalog.lineprotocol import FieldValue, escape_key, format_field, format_field_value
from linli.catalog.mqttspec import FieldType, MqttMessage, PayloadField
from linli.catalog.readings import MAX_TIME_MS, MIN_TIME_MS

# No control characters: line protocol cannot carry a newline in a value.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_MALFORMED_ERRORS = frozenset({"json_invalid", "json_type"})


def _formatter(name: str, kind: FieldType) -> Callable[[Any], str]:
    """`name=value` for one field whose type validation has already fixed."""
    prefix = escape_key(name) + "="
    if kind is FieldType.FLOAT:
        return lambda v: prefix + repr(v)  # validated: a finite float
    if kind is FieldType.INT:
        return lambda v: f"{prefix}{v}i"
    if kind is FieldType.BOOL:
        return lambda v: prefix + ("true" if v else "false")
    return lambda v: prefix + format_field_value(v)


class PayloadError(ValueError):
    """A payload that is not a valid message: `reason` is its counter, the text says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _annotation(f: PayloadField) -> Any:
    if f.type is FieldType.FLOAT:
        return float
    if f.type is FieldType.INT:
        return int
    if f.type is FieldType.BOOL:
        return bool
    if f.choices is not None:
        return Literal[tuple(f.choices)]
    return str


def _field_info(f: PayloadField) -> Any:
    kwargs: dict[str, Any] = {"alias": f.json_key}
    if f.min is not None:
        kwargs["ge"] = f.min
    if f.max is not None:
        kwargs["le"] = f.max
    if f.type is FieldType.STRING and f.choices is None:
        kwargs["max_length"] = f.max_length
        kwargs["pattern"] = f.pattern or _PRINTABLE
    if f.type is FieldType.FLOAT:
        kwargs["allow_inf_nan"] = False
    if not f.required:
        return (_annotation(f) | None, Field(default=None, **kwargs))
    return (_annotation(f), Field(**kwargs))


class CompiledMessage:
    """Validates one message kind's payloads and splits them into tags, fields and time."""

    def __init__(self, spec: MqttMessage) -> None:
        self.spec = spec
        definitions: dict[str, Any] = {f"f_{f.name}": _field_info(f) for f in spec.fields}
        if spec.time_key is not None:
            definitions["t_time"] = (int, Field(alias=spec.time_key, ge=MIN_TIME_MS, le=MAX_TIME_MS))
        # Strict: "12" is not 12 and 1 is not true; extra keys are ignored so that a firmware
        # update that adds a key does not stop the data.
        config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
        self.model: type[BaseModel] = create_model(f"{spec.name}_payload", __config__=config, **definitions)
        # The validator itself: `model.model_validate_json` wraps it in Python that costs a
        # tenth of a message's handling.
        self._validate_json = self.model.__pydantic_validator__.validate_json
        # Attribute names and formatters are built once: they serve every message of every device.
        self._tags = tuple((f"f_{f.name}", f.name) for f in spec.fields if f.tag)
        self._fields = tuple((f"f_{f.name}", f.name) for f in spec.fields if not f.tag)
        self._formatters = {f.name: _formatter(f.name, f.type) for f in spec.fields if not f.tag}
        self._plan = tuple((f"f_{f.name}", self._formatters[f.name]) for f in spec.fields if not f.tag)
        self.has_tags = bool(self._tags)

    def validate(self, payload: bytes) -> dict[str, Any]:
        """The validated values by attribute (see `tags`, `fields`, `time_ms`); PayloadError when invalid."""
        try:
            return self._validate_json(payload).__dict__  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise self._error(exc) from None

    def parse(self, payload: bytes) -> tuple[dict[str, str], dict[str, FieldValue], int | None]:
        """(tags, fields, device time in ms or None); PayloadError when invalid."""
        values = self.validate(payload)
        return self.tags(values), self.fields(values), self.time_ms(values)

    def tags(self, values: dict[str, Any]) -> dict[str, str]:
        """The fields that are tags, by name."""
        return {name: values[attr] for attr, name in self._tags}

    def fields(self, values: dict[str, Any]) -> dict[str, FieldValue]:
        """The fields that are present and not tags, by name."""
        return {name: v for attr, name in self._fields if (v := values[attr]) is not None}

    @staticmethod
    def time_ms(values: dict[str, Any]) -> int | None:
        """The device's own timestamp, when the message has one."""
        return values.get("t_time")

    def field_set_of(self, values: dict[str, Any]) -> str:
        """The line-protocol field set straight from validated values: `field_set(fields(values))`."""
        return ",".join([fmt(v) for attr, fmt in self._plan if (v := values[attr]) is not None])

    def field_set(self, fields: Mapping[str, FieldValue]) -> str:
        """The line-protocol field set of parsed fields, plus any added since (same as format_fields)."""
        known = self._formatters
        return ",".join([known[k](v) if k in known else format_field(k, v) for k, v in fields.items()])

    def _error(self, exc: ValidationError) -> PayloadError:
        errors = exc.errors(include_url=False)
        first: ErrorDetails = errors[0]
        kind = first["type"]
        loc = first["loc"]
        key = str(loc[0]) if loc else ""  # errors name the JSON key (the alias)
        got = first.get("input")
        shown = repr(got)[:60] if loc and not isinstance(got, dict) else ""
        where = f"key '{key}': " if key else ""
        detail = f"{where}{first['msg']}" + (f" (got {shown})" if shown else "")
        if len(errors) > 1:
            detail += f"; and {len(errors) - 1} more"
        if kind in _MALFORMED_ERRORS:
            return PayloadError("malformed", f"not JSON: {first['msg']}")
        if loc and loc[0] == self.spec.time_key:
            return PayloadError("bad_time", detail)
        if kind == "finite_number":
            return PayloadError("not_finite", detail)
        if kind in _RANGE_ERRORS:
            return PayloadError("out_of_range", detail)
        return PayloadError("invalid", detail)
